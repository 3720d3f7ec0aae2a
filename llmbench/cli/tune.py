"""`llmbench tune attention`: search the Triton kernel's tile configs on this GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from llmbench.cli.common import (
    FormatOption,
    JsonOption,
    ProfileOption,
    QuietOption,
    TimeoutOption,
    build_config,
    run_and_emit,
    stderr,
)
from llmbench.core.units import parse_int_list

tune_app = typer.Typer(help="Tune kernels for this device and write a profile.",
                       no_args_is_help=True)
_SPACE = "Search space"


@tune_app.command("attention")
def tune_attention(
    head_dims: Annotated[str, typer.Option(help="Head dims to tune, e.g. 64,128.")] = "64,128",
    seq: Annotated[int, typer.Option(help="Sequence length of the timed shape.")] = 4096,
    batch: Annotated[int, typer.Option(help="Batch of the timed shape.")] = 4,
    heads: Annotated[int, typer.Option(help="Heads of the timed shape.")] = 16,
    dtype: Annotated[Literal["fp32", "fp16", "bf16"], typer.Option()] = "bf16",
    mode: Annotated[Literal["fwd", "fwd+bwd"], typer.Option(
        help="Tune the forward pass, or forward + backward.")] = "fwd",
    block_m: Annotated[str, typer.Option(help="Values of block_m to try.",
                                         rich_help_panel=_SPACE)] = "32,64,128",
    block_n: Annotated[str, typer.Option(help="Values of block_n to try.",
                                         rich_help_panel=_SPACE)] = "32,64,128",
    warps: Annotated[str, typer.Option(help="Values of num_warps to try.",
                                       rich_help_panel=_SPACE)] = "4,8",
    stages: Annotated[str, typer.Option(help="Values of num_stages to try.",
                                        rich_help_panel=_SPACE)] = "1,2,3,4",
    interpret: Annotated[bool, typer.Option(
        "--interpret", help="No GPU: a functional dry run of two configs at a tiny shape "
        "through Triton's interpreter on the CPU.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the winners as a profile TOML that --profile accepts.",
        dir_okay=False)] = None,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
) -> None:
    """Time llmbench's Triton attention over block sizes, warps and stages; keep the best.

    Configs that would need more shared memory than the device gives a block are pruned. The
    table shows each config's TFLOP/s and share of the best; --out writes the winners per head
    dim into a profile TOML (the selected profile with its tiles replaced).
    """
    from llmbench.benches.tune import TuneConfig

    cfg = build_config(
        TuneConfig, head_dims=parse_int_list([head_dims], what="--head-dims"), seq=seq,
        batch=batch, heads=heads, dtype=dtype, mode=mode,
        block_m=parse_int_list([block_m], what="--block-m"),
        block_n=parse_int_list([block_n], what="--block-n"),
        num_warps=parse_int_list([warps], what="--warps"),
        num_stages=parse_int_list([stages], what="--stages"), interpret=interpret)
    doc = run_and_emit("tune", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                       timeout=timeout, isolate=True, return_doc=True)
    if out is not None and doc is not None:
        from llmbench.benches.tune import tuned_profile_toml, write_tuned_profile
        from llmbench.core.profiles import load_profile, shipped_profiles

        base_name = doc.summary["base_profile"]
        source = doc.env.profile_source
        base = load_profile(source) if source else shipped_profiles()[base_name]
        write_tuned_profile(tuned_profile_toml(base, doc.summary["winners"]), str(out))
        stderr().print(f"wrote {out}: use it with --profile {out}", highlight=False)
