"""`llmbench amp | checkpoint | optim | accum`: real training steps of the built-in model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from llmbench.cli.common import (
    FailOnOption,
    FormatOption,
    IsolateOption,
    JsonOption,
    MaxTimeOption,
    ProfileOption,
    QuietOption,
    TimeoutOption,
    build_config,
    run_and_emit,
    split_list,
)
from llmbench.core.units import parse_int_sweep
from llmbench.models.sizes import SIZES

_MODEL = "Model and data"
DeviceOption = Annotated[Literal["cpu", "cuda"] | None, typer.Option(
    help="[default: cuda when a usable GPU is present, else cpu]", rich_help_panel=_MODEL)]
SeedOption = Annotated[int, typer.Option(help="Seed of the weights and the data.",
                                         rich_help_panel=_MODEL)]
LrOption = Annotated[float, typer.Option(help="Learning rate.", rich_help_panel=_MODEL)]


def _model_option() -> Any:
    return typer.Option(help=f"Built-in model size: {', '.join(SIZES)}.", rich_help_panel=_MODEL)


def _run(name: str, config_type: type, *, max_time: float, profile: str | None, timeout: float,
         isolate: bool, json_path: Any, fmt: str, quiet: bool, fail_on: str,
         **fields: Any) -> None:
    from llmbench.core.timing import TimingPolicy

    cfg = build_config(config_type, timing=TimingPolicy(max_time_s=max_time,
                                                        min_time_s=min(1.0, max_time)),
                       **fields)
    run_and_emit(name, cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                 fail_on=fail_on, timeout=timeout, isolate=isolate)


def amp(
    variants: Annotated[list[str] | None, typer.Option(
        help="fp32, fp16 (autocast + GradScaler), bf16 (autocast). [default: all the device "
        "has]")] = None,
    steps: Annotated[int, typer.Option(help="Training steps per variant.")] = 50,
    loss_tolerance: Annotated[float, typer.Option(
        help="Allowed |final loss - fp32's| in nats.")] = 0.05,
    demo: Annotated[Literal["underflow"] | None, typer.Option(
        help="underflow: fp16 gradient underflow without and with loss scaling.")] = None,
    model: Annotated[str, _model_option()] = "tiny",
    batch: Annotated[int, typer.Option(help="Sequences per step.", rich_help_panel=_MODEL)] = 8,
    seq: Annotated[int, typer.Option(help="Tokens per sequence.", rich_help_panel=_MODEL)] = 128,
    lr: LrOption = 1e-3,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """AMP vs FP32: step time, tokens/s, peak and activation memory, loss parity, loss scaling.

    Every variant trains the same model from the same seed on the same batches with AdamW.
    fp16 uses dynamic loss scaling (torch.amp.GradScaler), whose scale trace and skipped steps
    are reported; bf16 needs no scaler.
    """
    from llmbench.benches.amp import AmpConfig

    _run("amp", AmpConfig, variants=split_list(variants), steps=steps,
         loss_tolerance=loss_tolerance, demo=demo, model=model, batch=batch, seq=seq, lr=lr,
         device=device, seed=seed, max_time=max_time, profile=profile, timeout=timeout,
         isolate=isolate, json_path=json_path, fmt=fmt, quiet=quiet, fail_on=fail_on)


def checkpoint(
    layers: Annotated[list[str] | None, typer.Option(
        help="Depth(s): 16 | 4,8,16 | 4:32 (doubling). A sweep of 3+ depths fits the exponent "
        "of memory in depth. [default: 16]")] = None,
    policies: Annotated[list[str] | None, typer.Option(
        help="none, every, every-k, sqrt. [default: all]")] = None,
    every: Annotated[int, typer.Option(help="k of the every-k policy.")] = 2,
    model: Annotated[str, _model_option()] = "mini",
    batch: Annotated[int, typer.Option(help="Sequences per step.", rich_help_panel=_MODEL)] = 4,
    seq: Annotated[int, typer.Option(help="Tokens per sequence.", rich_help_panel=_MODEL)] = 256,
    lr: LrOption = 1e-3,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Activation checkpointing: memory saved and time it costs, per policy and depth.

    The built-in model at --model's width with --layers layers; each policy recomputes the
    activations of its checkpointed segments during the backward pass (torch.utils.checkpoint,
    use_reentrant=False).
    """
    from llmbench.benches.checkpoint import CheckpointConfig

    depths = [v for text in (layers or ["16"]) for v in parse_int_sweep(text, what="--layers")]
    _run("checkpoint", CheckpointConfig, layers=depths, policies=split_list(policies),
         every=every, model=model, batch=batch, seq=seq, lr=lr, device=device, seed=seed,
         max_time=max_time, profile=profile, timeout=timeout, isolate=isolate,
         json_path=json_path, fmt=fmt, quiet=quiet, fail_on=fail_on)


def optim(
    optimizers: Annotated[list[str] | None, typer.Option(
        help="sgd, sgd-momentum, adam, adamw, lion, adafactor, adam8bit. [default: all]")] = None,
    precision: Annotated[Literal["fp32", "bf16-mixed", "fp16-mixed", "bf16"], typer.Option(
        help="fp32; autocast with fp32 weights (-mixed); or pure bf16 weights and states.")
    ] = "fp32",
    compare_decay: Annotated[bool, typer.Option(
        "--compare-decay", help="Also train Adam + L2 vs AdamW and show how their weight decay "
        "differs.")] = False,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.1,
    decay_steps: Annotated[int, typer.Option(help="Steps of --compare-decay's runs.")] = 100,
    model: Annotated[str, typer.Option(
        help=f"Built-in size ({', '.join(SIZES)}): measured; or a preset (llama-3-8b, ...) or a "
        "size such as 7b: the analytic table only.", rich_help_panel=_MODEL)] = "tiny",
    batch: Annotated[int, typer.Option(help="Sequences per step.", rich_help_panel=_MODEL)] = 8,
    seq: Annotated[int, typer.Option(help="Tokens per sequence.", rich_help_panel=_MODEL)] = 128,
    lr: LrOption = 1e-3,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Optimizer state memory (measured from the state tensors) and step time.

    Also the whole training-memory breakdown (weights, gradients, states, activations) and an
    analytic table for any parameter count, next to the bytes-per-parameter rule users know.
    """
    from llmbench.benches.optim import OptimConfig

    _run("optim", OptimConfig, optimizers=split_list(optimizers), precision=precision,
         compare_decay=compare_decay, weight_decay=weight_decay, decay_steps=decay_steps,
         model=model, batch=batch, seq=seq, lr=lr, device=device, seed=seed, max_time=max_time,
         profile=profile, timeout=timeout, isolate=isolate, json_path=json_path, fmt=fmt,
         quiet=quiet, fail_on=fail_on)


def accum(
    batch: Annotated[int, typer.Option(help="The effective batch.")] = 32,
    micro: Annotated[list[str] | None, typer.Option(
        help="Micro-batch sizes, e.g. 16,8,4. [default: batch, batch/2, batch/4, batch/8]")
    ] = None,
    model: Annotated[str, _model_option()] = "tiny",
    seq: Annotated[int, typer.Option(help="Tokens per sequence.", rich_help_panel=_MODEL)] = 128,
    lr: LrOption = 1e-3,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Gradient accumulation: one effective batch as micro-batch x steps.

    The accumulated gradient against the whole batch's, and each split's peak memory and
    throughput.
    """
    from llmbench.benches.accum import AccumConfig

    sizes = [v for text in (micro or []) for v in parse_int_sweep(text, what="--micro")]
    _run("accum", AccumConfig, batch=batch, micro=sizes or None, model=model, seq=seq, lr=lr,
         device=device, seed=seed, max_time=max_time, profile=profile, timeout=timeout,
         isolate=isolate, json_path=json_path, fmt=fmt, quiet=quiet, fail_on=fail_on)
