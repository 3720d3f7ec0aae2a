"""`llmbench kvcache`: flags -> KVCacheConfig -> the runner -> tables / JSON."""

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
)
from llmbench.core.units import parse_bytes
from llmbench.models.presets import PRESETS

_ARCH = "Architecture"
_MEASURE = "Measured part"


def kvcache(
    model: Annotated[str | None, typer.Option(
        help=f"Preset: {', '.join(PRESETS)}. [default: llama-3-8b when no --config or "
        "explicit numbers]", rich_help_panel=_ARCH)] = None,
    config: Annotated[str | None, typer.Option(
        "--config", help="A Hugging Face config.json (read without transformers).",
        rich_help_panel=_ARCH)] = None,
    layers: Annotated[int | None, typer.Option(help="Layers (overrides the preset).",
                                               rich_help_panel=_ARCH)] = None,
    heads: Annotated[int | None, typer.Option(help="Query heads.", rich_help_panel=_ARCH)] = None,
    kv_heads: Annotated[int | None, typer.Option(
        help="Key/value heads (1: MQA).", rich_help_panel=_ARCH)] = None,
    head_dim: Annotated[int | None, typer.Option(help="Head dimension.",
                                                 rich_help_panel=_ARCH)] = None,
    context: Annotated[int | None, typer.Option(help="Trained context length.",
                                                rich_help_panel=_ARCH)] = None,
    seq: Annotated[int | None, typer.Option(
        help="Tokens in the cache. [default: the model's context]")] = None,
    batch: Annotated[int, typer.Option(help="Sequences in the batch.")] = 1,
    dtype: Annotated[Literal["fp32", "fp16", "bf16", "fp8", "int8"], typer.Option(
        help="Cache element type (fp8/int8: 1 byte).")] = "bf16",
    memory: Annotated[str | None, typer.Option(
        help="A memory budget such as 80GiB: the longest context and largest batch whose "
        "cache fits.")] = None,
    measure: Annotated[bool, typer.Option(
        "--measure/--no-measure", help="Also measure MHA vs GQA vs MQA on a scaled-down copy.",
        rich_help_panel=_MEASURE)] = True,
    measure_seq: Annotated[int, typer.Option(
        help="Context of the measured decode.", rich_help_panel=_MEASURE)] = 2048,
    measure_layers: Annotated[int, typer.Option(
        help="Layers of the scaled copy.", rich_help_panel=_MEASURE)] = 4,
    impl: Annotated[str, typer.Option(
        help="Attention implementation of the scaled copy.", rich_help_panel=_MEASURE)] = "sdpa",
    device: Annotated[Literal["cpu", "cuda"] | None, typer.Option(
        help="[default: cuda when a usable GPU is present, else cpu]",
        rich_help_panel=_MEASURE)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the weights and tokens.",
                                      rich_help_panel=_MEASURE)] = 0,
    max_time: MaxTimeOption = 10.0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """KV-cache size for MHA / GQA / MQA, and decode speed measured on a scaled-down copy.

    The analytic table re-heads the architecture with every KV head count that divides its
    query heads. The measured part builds a small copy with llmbench's transformer, fills its
    cache by prefill and decoding, checks the cache's real bytes against the formula, and
    times a decode step at the full context.
    """
    from llmbench.benches.kvcache import KVCacheConfig
    from llmbench.core.timing import TimingPolicy

    cfg = build_config(
        KVCacheConfig, model=model, config_path=config, layers=layers, heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, context=context, seq=seq, batch=batch,
        dtype=dtype, memory_bytes=parse_bytes(memory) if memory else None, measure=measure,
        measure_seq=measure_seq, measure_layers=measure_layers, impl=impl, device=device,
        seed=seed, timing=TimingPolicy(max_time_s=max_time, min_time_s=min(1.0, max_time)))
    run_and_emit("kvcache", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                 fail_on=fail_on, timeout=timeout, isolate=isolate)
