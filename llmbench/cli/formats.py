"""`llmbench precision` and `llmbench schedule`: tables computed in a moment."""

from __future__ import annotations

from typing import Annotated

import typer

from llmbench.cli.common import (
    FailOnOption,
    FormatOption,
    JsonOption,
    QuietOption,
    build_config,
    run_and_emit,
    split_list,
)
from llmbench.core.units import parse_int_list


def precision(
    formats: Annotated[list[str] | None, typer.Option(
        help="fp64, fp32, fp16, bf16 and the float8 types torch has. [default: all]")] = None,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Floating-point formats: bits, range, smallest normal and subnormal, epsilon, digits.

    Read from torch (torch.finfo, and casts that check it), not typed in.
    """
    from llmbench.benches.precision import PrecisionConfig

    cfg = build_config(PrecisionConfig, formats=split_list(formats))
    run_and_emit("precision", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=None,
                 fail_on=fail_on, timeout=60, isolate=False)


def schedule(
    kinds: Annotated[list[str] | None, typer.Option(
        help="cosine (warmup, min-lr floor), linear, constant. [default: cosine]")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    total: Annotated[int, typer.Option(help="Training steps.")] = 1000,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    min_lr_ratio: Annotated[float, typer.Option(help="Cosine floor as a share of lr.")] = 0.1,
    num_cycles: Annotated[float, typer.Option(help="Cosine half-waves / 2 (0.5: to the floor "
                                                   "once).")] = 0.5,
    at: Annotated[list[str] | None, typer.Option(
        help="Steps to tabulate, e.g. 0,100,500. [default: 11 spread out, and the warmup's "
        "end]")] = None,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Learning-rate schedules: lr at chosen steps, a terminal chart, the whole curve in JSON.

    The same formulas as Hugging Face transformers' get_cosine_with_min_lr_schedule_with_warmup,
    get_linear_schedule_with_warmup and get_constant_schedule_with_warmup.
    """
    from llmbench.benches.schedule import ScheduleConfig

    cfg = build_config(ScheduleConfig, kinds=split_list(kinds) or ["cosine"], lr=lr,
                       total=total, warmup=warmup, min_lr_ratio=min_lr_ratio,
                       num_cycles=num_cycles, at=parse_int_list(at, what="--at") if at else None)
    run_and_emit("schedule", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=None,
                 fail_on=fail_on, timeout=60, isolate=False)
