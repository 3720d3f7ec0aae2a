"""`llmbench comm | ddp`: torch.distributed collectives and data-parallel training steps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from llmbench.cli.common import (
    FailOnOption,
    FormatOption,
    JsonOption,
    ProfileOption,
    QuietOption,
    build_config,
    run_and_emit,
    split_list,
)
from llmbench.core.units import parse_int_list, parse_size_sweep
from llmbench.models.presets import PRESETS
from llmbench.models.sizes import SIZES

_GROUP = "Process group"
NprocOption = Annotated[int | None, typer.Option(
    help="Ranks to start on this machine (torchrun). Under torchrun or srun, leave it out: "
    "the launch's ranks are used and only rank 0 writes. [default: one per GPU on cuda, 2 on "
    "cpu]", rich_help_panel=_GROUP)]
BackendOption = Annotated[Literal["nccl", "gloo"] | None, typer.Option(
    help="[default: nccl on cuda, gloo on cpu]", rich_help_panel=_GROUP)]
DeviceOption = Annotated[Literal["cpu", "cuda"] | None, typer.Option(
    help="[default: cuda when a usable GPU is present, else cpu]", rich_help_panel=_GROUP)]
DistTimeoutOption = Annotated[float, typer.Option(
    "--timeout", help="Seconds a case may go without any rank making progress; then the "
    "ranks' stacks are read, the hung rank is named and every process is stopped.",
    rich_help_panel=_GROUP, min=0.1)]


def _iters_option(what: str) -> Any:
    return typer.Option(help=f"Timed {what}; every rank makes exactly as many.",
                        rich_help_panel=_GROUP)


def _emit(name: str, config_type: type, *, profile: str | None, timeout: float, json_path: Any,
          fmt: str, quiet: bool, fail_on: str,
         **fields: Any) -> None:
    cfg = build_config(config_type, **fields)
    run_and_emit(name, cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                 fail_on=fail_on, timeout=timeout, isolate=False, distributed=True)


def comm(
    collectives: Annotated[list[str] | None, typer.Option(
        help="all_reduce, all_gather, reduce_scatter, broadcast, all_to_all. [default: all]"
    )] = None,
    sizes: Annotated[str | None, typer.Option(
        help="Message sizes: 1KiB:1GiB (doubling) or 4KiB,1MiB,64MiB (small to large). The "
        "size of the largest buffer, as in nccl-tests. [default: 1KiB:1GiB on cuda, "
        "1KiB:64MiB on cpu]")] = None,
    dtype: Annotated[Literal["fp32", "fp16", "bf16", "fp64"], typer.Option(
        help="Element type.")] = "fp32",
    iters: Annotated[int, typer.Option(
        help="Back-to-back calls per timed window (nccl-tests' -n); every rank makes exactly "
        "as many.", rich_help_panel=_GROUP)] = 20,
    windows: Annotated[int, typer.Option(
        help="Timed windows per case: each is a barrier, then --iters calls; a sample is a "
        "window's time per call.", rich_help_panel=_GROUP, min=1)] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed calls first.",
                                        rich_help_panel=_GROUP)] = 5,
    nproc: NprocOption = None,
    backend: BackendOption = None,
    device: DeviceOption = None,
    timeout: DistTimeoutOption = 600.0,
    profile: ProfileOption = None,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Collectives over torch.distributed: time, algbw and busbw per size, and the ring model.

    Bus bandwidth uses nccl-tests' factors (all_reduce 2(n-1)/n; all_gather, reduce_scatter,
    all_to_all (n-1)/n; broadcast 1); the ring model's latency and bandwidth are fitted to the
    all_reduce sweep and predict every other case. Each result is checked after one call.
    Timed as nccl-tests does: after a barrier, --iters back-to-back calls per window.
    """
    from llmbench.benches.comm import CommConfig

    _emit("comm", CommConfig, collectives=split_list(collectives),
          sizes=parse_size_sweep(sizes, what="--sizes") if sizes is not None else None,
          dtype=dtype, iters=iters, windows=windows, warmup=warmup, nproc=nproc,
          backend=backend, device=device,
          profile=profile, timeout=timeout, json_path=json_path, fmt=fmt, quiet=quiet,
          fail_on=fail_on)

def ddp(
    strategies: Annotated[list[str] | None, typer.Option(
        help="ddp (DistributedDataParallel), fsdp (FSDP2 fully_shard). [default: both]")] = None,
    model: Annotated[str, typer.Option(help=f"Built-in model size: {', '.join(SIZES)}.")] = "tiny",
    batch: Annotated[int, typer.Option(help="Sequences per rank per step.")] = 8,
    seq: Annotated[int, typer.Option(help="Tokens per sequence.")] = 128,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of the weights and the data.")] = 0,
    zero_models: Annotated[list[str] | None, typer.Option(
        help=f"Also show ZeRO's per-rank memory for these presets ({', '.join(PRESETS)}). "
        "[default: llama-3-8b]")] = None,
    zero_scheme: Annotated[Literal["mixed", "fp32", "bf16"], typer.Option(
        help="Bytes per parameter of the presets' rows: mixed (2+2+12, the ZeRO paper's), "
        "fp32 (4+4+8), bf16 (2+2+4).")] = "mixed",
    zero_ranks: Annotated[list[str] | None, typer.Option(
        help="Rank counts of the ZeRO table, e.g. 8,64. [default: this run's]")] = None,
    iters: Annotated[int, _iters_option("steps per strategy")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.",
                                        rich_help_panel=_GROUP)] = 3,
    nproc: NprocOption = None,
    backend: BackendOption = None,
    device: DeviceOption = None,
    timeout: DistTimeoutOption = 600.0,
    profile: ProfileOption = None,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Data-parallel training steps of the built-in model: time, communication, memory, ZeRO.

    Per strategy: step time, the step without gradient sync (DDP's no_sync) and the share of
    the step that communication adds, an all_reduce of the gradients alone, peak memory per
    rank, the model-state bytes each rank holds next to ZeRO's formula (DDP = stage 0, FSDP =
    stage 3), and the gradients checked against one process training on the global batch.
    """
    from llmbench.benches.ddp import DDPConfig

    _emit("ddp", DDPConfig, strategies=split_list(strategies), model=model, batch=batch,
          seq=seq, lr=lr, seed=seed, zero_models=split_list(zero_models),
          zero_scheme=zero_scheme,
          zero_ranks=parse_int_list(zero_ranks, what="--zero-ranks") if zero_ranks else None,
          iters=iters, warmup=warmup, nproc=nproc, backend=backend, device=device,
          profile=profile, timeout=timeout, json_path=json_path, fmt=fmt, quiet=quiet,
          fail_on=fail_on)
