"""`llmbench attention`: flags -> AttentionConfig -> the runner -> a table / JSON."""

from __future__ import annotations

from typing import Annotated, Literal

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
from llmbench.kernels import names as impl_names

_SHAPE = "Shape"
_TILE = "Tiles (tiled, triton)"


def attention(
    seq: Annotated[list[str] | None, typer.Option(
        "--seq", help="Sequence length(s): 8192 | 1024,4096 | 1024:16384 (doubling). "
        "Repeatable. [default: 4096]", rich_help_panel=_SHAPE)] = None,
    kv_seq: Annotated[int | None, typer.Option(
        "--kv-seq", help="Key/value length, when it differs from --seq: --seq 1 --kv-seq 8192 "
        "is one decoding step against a KV cache. Causal masks are bottom-right aligned (query "
        "i sees keys up to i + kv_seq - seq), as in flash-attn. [default: --seq]",
        rich_help_panel=_SHAPE)] = None,
    impl: Annotated[list[str] | None, typer.Option(
        "--impl", help=f"Implementation(s), comma-separated or repeated: "
        f"{', '.join(impl_names())}. [default: all but sdpa (torch's own pick); those that "
        "cannot run here are listed as unavailable]")] = None,
    batch: Annotated[int, typer.Option(help="Batch size.", rich_help_panel=_SHAPE)] = 1,
    heads: Annotated[int, typer.Option(help="Query heads.", rich_help_panel=_SHAPE)] = 8,
    kv_heads: Annotated[int | None, typer.Option(
        help="Key/value heads: 1 is MQA, fewer than --heads is GQA. [default: --heads]",
        rich_help_panel=_SHAPE)] = None,
    head_dim: Annotated[int, typer.Option(help="Head dimension.", rich_help_panel=_SHAPE)] = 64,
    dtype: Annotated[Literal["fp32", "fp16", "bf16"] | None, typer.Option(
        help="[default: bf16 on a GPU, fp32 on a CPU]", rich_help_panel=_SHAPE)] = None,
    causal: Annotated[bool, typer.Option(
        "--causal/--no-causal", help="Causal (decoder) mask.", rich_help_panel=_SHAPE)] = True,
    mode: Annotated[Literal["fwd", "fwd+bwd"], typer.Option(
        help="Time the forward pass, or forward + backward.")] = "fwd",
    device: Annotated[Literal["cpu", "cuda"] | None, typer.Option(
        help="[default: cuda when a usable GPU is present, else cpu]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    window: Annotated[int | None, typer.Option(
        help="A left sliding window of this many keys: every impl runs with it and fully "
        "causal, and the time ratio is set against the expected FLOP ratio.",
        rich_help_panel=_SHAPE)] = None,
    varlen: Annotated[str | None, typer.Option(
        help="Packed sequences of these lengths (128,512,2048 or random:COUNT:MIN:MAX) "
        "against padding to the longest.", rich_help_panel=_SHAPE)] = None,
    block_m: Annotated[int | None, typer.Option(
        help="Override the profile's tile: query rows per tile.", rich_help_panel=_TILE)] = None,
    block_n: Annotated[int | None, typer.Option(
        help="Override the profile's tile: key rows per tile.", rich_help_panel=_TILE)] = None,
    warps: Annotated[int | None, typer.Option(
        help="Override the profile's tile: warps per program.", rich_help_panel=_TILE)] = None,
    stages: Annotated[int | None, typer.Option(
        help="Override the profile's tile: pipeline stages.", rich_help_panel=_TILE)] = None,
    interpret: Annotated[bool, typer.Option(
        "--interpret", help="Run the Triton kernel on the CPU through Triton's interpreter "
        "(fp32, slow; small shapes).", rich_help_panel=_TILE)] = False,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Standard vs Flash attention: time, TFLOP/s, peak memory and error per implementation.

    Each case runs in its own process: warm-up, one call measured for peak memory and checked
    against an fp64 reference, then timed until the median is steady. With a sweep, the
    exponents of memory and time in seq are fitted.
    """
    from llmbench.benches.attention import AttentionConfig
    from llmbench.benches.attention_varlen import parse_lengths
    from llmbench.core.timing import TimingPolicy

    seqs = [v for text in (seq or ["4096"]) for v in parse_int_sweep(text, what="--seq")]
    config = build_config(
        AttentionConfig, impls=split_list(impl), seqs=seqs, kv_seq=kv_seq, batch=batch,
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype, causal=causal,
        mode=mode, device=device, seed=seed, window=window,
        varlen=parse_lengths(varlen, seed=seed) if varlen else None, block_m=block_m,
        block_n=block_n, num_warps=warps, num_stages=stages, interpret=interpret,
        timing=TimingPolicy(max_time_s=max_time, min_time_s=min(1.0, max_time)))
    run_and_emit("attention", config, json_path=json_path, fmt=fmt, quiet=quiet, fail_on=fail_on,
                 profile=profile, timeout=timeout, isolate=isolate)
