"""`llmbench env`: what llmbench sees on this machine."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from llmbench.cli.common import FormatOption, JsonOption, ProfileOption, QuietOption, stdout


def env(
    head_dim: Annotated[int, typer.Option(
        help="Check the implementations at this head dim (tiles are shown for 64, 128, 256 "
             "and it).")] = 64,
    device: Annotated[Literal["cpu", "cuda"] | None, typer.Option(
        help="[default: cuda when a usable GPU is present, else cpu]")] = None,
    dtype: Annotated[Literal["fp32", "fp16", "bf16"] | None, typer.Option(
        help="[default: bf16 on GPUs of compute capability >= 8.0, fp16 on older ones, fp32 "
             "on a CPU]")] = None,
    profile: ProfileOption = None,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,  # noqa: ARG001 - env writes nothing on stderr; accepted alike
) -> None:
    """What llmbench sees here: device, versions, profile, peak, tiles, attention implementations.

    Shows the chosen profile and why, the default dtype, the peak figures and their source, the
    forward and backward tiles the profile gives by head dim, and which attention
    implementations can run (and why each missing one is missing).
    """
    from llmbench.benches.environment import describe
    from llmbench.core.results import write_atomic
    from llmbench.report.env import render

    report = describe(profile=profile, device=device, head_dim=head_dim, dtype=dtype)
    text = report.model_dump_json(indent=2) + "\n"
    if json_path is not None:
        write_atomic(text, json_path)
    if fmt == "json":
        sys.stdout.write(text)
    else:
        render(report, stdout())
