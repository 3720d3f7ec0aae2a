"""`llmbench kvcache`: KV-cache size of MHA / GQA / MQA, computed and measured.

Analytic (summary): bytes per token = 2 * layers * kv_heads * head_dim * bytes per element, for
the architecture as published and re-headed with every key/value head count that divides the
query heads; with a memory budget, the longest context and the largest batch whose cache fits.

Sliding window (Mistral-7B v0.1: 4096 tokens on every layer; a config's `sliding_window`, with
Qwen2's use_sliding_window / max_window_layers and Gemma-2's every-other-layer rule, see
`models.presets.window_numbers`; or `--window`): a windowed layer attends to its last W tokens,
itself included, so a rolling-buffer cache keeps only those. Both figures are given:

    full     = bytes per token * seq * batch
    windowed = 2 * kv_heads * head_dim * bytes * batch
               * (full layers * seq + windowed layers * min(seq, W))

(Mistral-7B at 32k tokens in bf16: 4 GiB full, 512 MiB windowed.) Which one a server holds is
its choice. transformers (checked on 5.24): `generate()` and a forward without a cache build a
DynamicCache from the model's config, whose windowed layers keep the last W - 1 tokens (the
step's own token is appended while it attends); a DynamicCache() made without the config keeps
every token. vLLM's v1 engine (its source): a windowed layer's blocks outside the window are
freed, so it holds about W - 1 tokens plus the step's in whole blocks; with its hybrid KV-cache
manager disabled, a model mixing full and windowed layers is allocated as full. Anything else
we assume holds the full cache unless it documents a rolling buffer.

Measured (cases): a scaled-down copy of the architecture built with llmbench's own transformer
(same query heads, fewer layers, narrower heads; the same window on the same layers among those
it keeps) is run as MHA, GQA and MQA: the cache is filled (prefill, then decoding), its bytes
are counted from the real tensors and compared with the formula (the windowed one when a window
applies: `RollingKVCache`), and a decode step at the full context is timed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench import kernels
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError, first_problem
from llmbench.core.flags import (
    BATCH,
    DEVICE,
    DTYPE,
    HEAD_DIM,
    HEADS,
    IMPLS,
    KV_HEADS,
    MODEL,
    SEED,
    SEQ,
    flag_like,
)
from llmbench.core.hardware import HardwareInfo, dtype_unsupported, usable_device
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy
from llmbench.core.units import DTYPE_BYTES
from llmbench.models.presets import PRESETS, Architecture, from_hf_config, layout_name, preset
from llmbench.models.sizes import SIZES

CacheDtype = Literal["fp32", "fp16", "bf16", "fp8", "int8"]
DEFAULT_MODEL = "llama-3-8b"


_ARCH = "Architecture"
_MEASURE = "Measured part"


class KVCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Annotated[str | None, flag_like(
        MODEL, help=f"Presets: {', '.join(PRESETS)}; built-in sizes: {', '.join(SIZES)}.",
        default_text=f"{DEFAULT_MODEL} when no --config or explicit numbers",
        panel=_ARCH)] = None
    config_path: Annotated[str | None, Opt(
        "A Hugging Face config.json (read without transformers).", flag="--config",
        panel=_ARCH)] = None
    layers: Annotated[int | None, Field(gt=0), Opt("Layers (overrides the preset).",
                                                   panel=_ARCH)] = None
    heads: Annotated[int | None, Field(gt=0), flag_like(HEADS, panel=_ARCH)] = None
    kv_heads: Annotated[int | None, Field(gt=0), flag_like(KV_HEADS, panel=_ARCH)] = None
    head_dim: Annotated[int | None, Field(gt=0), flag_like(HEAD_DIM, panel=_ARCH)] = None
    context: Annotated[int | None, Field(gt=0), Opt("Trained context length.",
                                                    panel=_ARCH)] = None
    window: Annotated[int | None, Opt(
        "Sliding window in tokens, counted as config.json's sliding_window (the token itself "
        "included; attention's --window W is W + 1 of these): replaces the model's, on its "
        "windowed layers, or sets one on every layer. The table then also gives the "
        "rolling-buffer cache.", panel=_ARCH, default_text="the config's sliding_window")] = None
    arch: Architecture | None = Field(None, description="resolved from the fields above")
    seq: Annotated[int | None, Field(gt=0), flag_like(
        SEQ, help="In the cache.", default_text="the model's context")] = None
    batch: Annotated[int, Field(gt=0), BATCH] = 1
    dtype: Annotated[CacheDtype, flag_like(DTYPE, help="Of the cache (fp8/int8: 1 byte).")
                     ] = "bf16"
    memory_bytes: Annotated[int | None, Field(gt=0), Opt(
        "A memory budget such as 80GiB: the longest context and largest batch whose cache "
        "fits.", flag="--memory", parse="bytes")] = None
    measure: Annotated[bool, Opt("Also measure MHA vs GQA vs MQA on a scaled-down copy.",
                                 panel=_MEASURE)] = True
    measure_seq: Annotated[int, Field(gt=1), Opt("Context of the measured decode.",
                                                 panel=_MEASURE)] = 2048
    measure_layers: Annotated[int, Field(gt=0), Opt("Layers of the scaled copy.",
                                                    panel=_MEASURE)] = 4
    measure_head_dim: int | None = Field(None, gt=0, description="None: about 512 / heads")
    impls: Annotated[list[str], Field(min_length=1), flag_like(
        IMPLS, help="Of the scaled copy: one set of cases per implementation.",
        panel=_MEASURE)] = ["sdpa"]
    device: Annotated[Literal["cpu", "cuda"] | None, flag_like(DEVICE, panel=_MEASURE)] = None
    seed: Annotated[int, flag_like(SEED, panel=_MEASURE)] = 0
    timing: TimingPolicy = Field(default_factory=TimingPolicy)

    @field_validator("window")
    @classmethod
    def _positive_window(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"must be a positive number of tokens, got {v}")
        return v

    @field_validator("impls")
    @classmethod
    def _known_impls(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in kernels.IMPLS]
        if unknown:
            raise ValueError(f"unknown impl {unknown[0]!r} (choose from "
                             f"{', '.join(kernels.names())})")
        return list(dict.fromkeys(v))


class KVCacheCase(BaseModel):
    """A measured case's params: one KV layout of the scaled copy, one implementation."""

    model_config = RECORD

    variant: str
    kv_heads: int
    published: bool
    context: int
    batch: int
    dtype: str
    device: Literal["cpu", "cuda"] | None = None
    layers: int
    heads: int
    head_dim: int
    dim: int
    impl: str
    window: int | None = None  # the sliding window of the copy's windowed layers
    windowed_layers: int = 0


class KVAnalyticRow(BaseModel):
    """One KV head count of the analytic table (`analytic_table`); the max_* with a budget, the
    windowed_* with a sliding window (the rolling-buffer cache)."""

    model_config = RECORD

    variant: str
    kv_heads: int
    published: bool
    bytes_per_token: int
    total_bytes: int
    saving_vs_mha_pct: float
    max_context: int | None = None
    max_batch: int | None = None
    windowed_total_bytes: int | None = None
    windowed_max_context: int | None = Field(
        None, description="with a budget: None when the windowed cache fits at any context (it "
        "stops growing at the window)")
    windowed_max_batch: int | None = None


class KVWindow(BaseModel):
    """The sliding window of the architecture (its config, or --window)."""

    model_config = RECORD

    tokens: int
    windowed_layers: int
    layers: int
    source: Literal["config", "--window"]
    binds: bool = Field(description="seq is longer than the window: the rolling buffer is "
                        "smaller than the full cache")


class ScaledCopy(BaseModel):
    """The measured copy's shape, and the architecture's it was scaled from."""

    model_config = RECORD

    layers: int
    heads: int
    head_dim: int
    dim: int
    of_layers: int
    of_head_dim: int
    window: int | None = None
    windowed_layers: int = 0


class KVCacheSummary(BaseModel):
    model_config = RECORD

    architecture: Architecture
    analytic: list[KVAnalyticRow] = Field(default_factory=list)
    scaled_copy: ScaledCopy
    window: KVWindow | None = None


def built_in_architecture(name: str) -> Architecture:
    """A built-in model size as an architecture (MHA; no trained context)."""
    size = SIZES[name]
    return Architecture(name=name, layers=size["n_layers"], heads=size["n_heads"],
                        kv_heads=size["n_heads"], head_dim=size["dim"] // size["n_heads"],
                        hidden_size=size["dim"], source="llmbench's built-in size")


def resolve_architecture(cfg: KVCacheConfig) -> Architecture:
    """The preset, or the config file, or explicit numbers; explicit numbers override either
    (--layers keeps the document's rule for which layers are windowed; --window replaces the
    window on the windowed layers, or sets it on every layer)."""
    if cfg.model and cfg.config_path:
        raise UsageError("give --model or --config, not both")
    explicit = {k: v for k, v in {"layers": cfg.layers, "heads": cfg.heads,
                                  "kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
                                  "context": cfg.context}.items() if v is not None}
    if cfg.config_path:
        base = from_hf_config(cfg.config_path, layers=cfg.layers).model_dump()
    elif cfg.model in SIZES:
        base = built_in_architecture(cfg.model).model_dump()
    elif cfg.model or not explicit:
        base = preset(cfg.model or DEFAULT_MODEL, layers=cfg.layers).model_dump()
    else:
        missing = [f"--{k.replace('_', '-')}" for k in ("layers", "heads", "head_dim")
                   if k not in explicit]
        if missing:
            raise UsageError(f"without --model or --config, give {', '.join(missing)}")
        base = {"name": "custom", "kv_heads": explicit["heads"], "source": "flags"}
    if "heads" in explicit and "kv_heads" not in explicit and base.get("heads") != \
            explicit["heads"]:
        base["kv_heads"] = explicit["heads"]  # new head count, no KV count: MHA
    merged = {**base, **explicit}
    if cfg.window is not None:
        if merged.get("sliding_window") is None:
            merged["window_layers"] = None  # no window of its own: every layer
        merged["sliding_window"] = cfg.window
    if (explicit or cfg.window is not None) and base.get("source") != "flags":
        merged["name"] = f"{base['name']} (modified)"
    try:
        return Architecture(**merged)
    except ValueError as exc:
        raise UsageError(f"--kv-heads: {first_problem(exc)[1]}") from None


def kv_variants(heads: int) -> list[int]:
    """Every key/value head count that divides `heads`, MHA first, MQA last."""
    return [kv for kv in range(heads, 0, -1) if heads % kv == 0]


def measured_variants(arch: Architecture) -> list[int]:
    """MHA, the published layout, one GQA between (the largest divisor <= heads/4), MQA."""
    divisors = kv_variants(arch.heads)
    gqa = [d for d in divisors if 1 < d <= arch.heads // 4]
    picks = {arch.heads, arch.kv_heads, 1, *(gqa[:1])}
    return sorted(picks, reverse=True)


def scaled_copy(arch: Architecture, cfg: KVCacheConfig, kv_heads: int,
                impl: str | None = None) -> dict[str, Any]:
    """The built-in model's config for a small copy: same query heads, fewer layers, narrower
    heads (head dim a power of two near 512 / heads, at least 8)."""
    head_dim = cfg.measure_head_dim
    if head_dim is None:
        head_dim = 8
        while head_dim * 2 * arch.heads <= 512 and head_dim * 2 <= arch.head_dim:
            head_dim *= 2
    return {"vocab_size": 256, "dim": arch.heads * head_dim,
            "n_layers": min(arch.layers, cfg.measure_layers), "n_heads": arch.heads,
            "n_kv_heads": kv_heads, "head_dim": head_dim, "max_seq_len": cfg.measure_seq,
            "attention": impl or cfg.impls[0]}


def copy_window(arch: Architecture, layers: int) -> tuple[int | None, list[int]]:
    """The window of a copy keeping the first `layers` layers, and its windowed layers."""
    if arch.sliding_window is None:
        return None, []
    kept = range(layers) if arch.window_layers is None else [
        i for i in arch.window_layers if i < layers]
    return (arch.sliding_window, list(kept)) if kept else (None, [])


def cache_bytes(*, layers: int, kv_heads: int, head_dim: int, seq: int, batch: int,
                bytes_per_element: int, window: int | None = None,
                windowed_layers: int = 0) -> int:
    """2 * kv_heads * head_dim * bytes * batch * (full layers * seq + windowed layers *
    min(seq, window)): the cache with a rolling buffer on the windowed layers (without a window,
    2 * layers * kv_heads * head_dim * seq * batch * bytes)."""
    win = windowed_layers if window is not None else 0
    held = (layers - win) * seq + win * min(seq, window or seq)
    return 2 * kv_heads * head_dim * bytes_per_element * batch * held


def windowed_max_context(arch: Architecture, bytes_per_element: int, kv_heads: int,
                         batch: int, memory_bytes: int) -> int | None:
    """The longest context whose windowed cache fits in `memory_bytes`; None when it fits at
    any context (every layer windowed, and the window's worth fits)."""
    per = 2 * kv_heads * arch.head_dim * bytes_per_element * batch  # one token, one layer
    tokens = memory_bytes // per  # layer-tokens that fit
    total, windowed, w = arch.layers, arch.windowed_layers, arch.sliding_window or 0
    if tokens < total * w:  # the budget runs out before the buffers are full
        return tokens // total
    if windowed == total:
        return None
    return (tokens - windowed * w) // (total - windowed)


def analytic_table(arch: Architecture, *, dtype: str, seq: int, batch: int,
                   memory_bytes: int | None) -> list[dict[str, Any]]:
    e = DTYPE_BYTES[dtype]
    mha = arch.kv_bytes_per_token(e, arch.heads)
    windowed = arch.sliding_window is not None
    rows = []
    for kv in kv_variants(arch.heads):
        per_token = arch.kv_bytes_per_token(e, kv)
        row = {"variant": layout_name(arch.heads, kv), "kv_heads": kv,
               "published": kv == arch.kv_heads, "bytes_per_token": per_token,
               "total_bytes": per_token * seq * batch,
               "saving_vs_mha_pct": 100.0 * (mha - per_token) / mha}
        if windowed:
            row["windowed_total_bytes"] = arch.kv_cache_bytes(e, seq=seq, batch=batch,
                                                              kv_heads=kv, windowed=True)
        if memory_bytes is not None:
            row["max_context"] = memory_bytes // (per_token * batch)
            row["max_batch"] = memory_bytes // (per_token * seq)
            if windowed:
                row["windowed_max_context"] = windowed_max_context(arch, e, kv, batch,
                                                                   memory_bytes)
                row["windowed_max_batch"] = memory_bytes // arch.kv_cache_bytes(
                    e, seq=seq, kv_heads=kv, windowed=True)
        rows.append(row)
    return rows


def measured_dtype(cache_dtype: str, device: str, hw: HardwareInfo) -> str:
    """What the scaled copy computes in: the cache dtype; 1-byte caches in bf16; bf16 as fp16
    (the same two bytes per element) on GPUs without bf16 (T4, V100)."""
    dtype = cache_dtype if cache_dtype in ("fp32", "fp16", "bf16") else "bf16"
    if dtype == "bf16" and device == "cuda" and dtype_unsupported(device, dtype, hw):
        return "fp16"
    return dtype


class KVCacheBenchmark(Benchmark[KVCacheConfig]):
    name = "kvcache"
    help = """KV-cache size for MHA / GQA / MQA, and decode speed measured on a scaled-down copy.

    The analytic table re-heads the architecture with every KV head count that divides its
    query heads. The measured part builds a small copy with llmbench's transformer, fills its
    cache by prefill and decoding, checks the cache's real bytes against the formula, and
    times a decode step at the full context.
    """
    renderer = "llmbench.report.kvcache:render"
    plot = "llmbench.report.plots:kvcache"
    config_type = KVCacheConfig
    params_type = KVCacheCase
    summary_type = KVCacheSummary
    metrics = (
        Metric("decode_tokens_per_s", "tok/s", "higher",
               "tokens decoded per second at the full context", derived=True),
        Metric("speedup_vs_mha_x", "x", "higher", "MHA's decode time / this variant's",
               derived=True),
        Metric("cache_bytes", "B", "lower", "the filled cache's bytes, from its tensors"),
        Metric("analytic_cache_bytes", "B", "info",
               "the cache's bytes by the formula (windowed when a window applies)"),
        Metric("full_cache_bytes", "B", "info",
               "with a window: the cache's bytes if every layer held every token"),
        Metric("cache_matches_formula", "1", "info", "the cache's bytes equal the formula's",
               derived=True),
        Metric("predicted_memory_bytes", "B", "info", "the cache's predicted bytes"),
        Metric("peak_memory_bytes", "B", "lower", "peak memory of filling the cache"),
        # One wall-clock sample of the first fill (not a timed repeat): runs vary ~4x on a
        # shared CPU; time_ms (the decode step, many samples) gates the case.
        Metric("fill_s", "s", "info", "time to fill the cache: prefill, then decoding"),
        Metric("cache_tokens", "1", "info", "tokens in the filled cache"),
        Metric("prefill_tokens", "1", "info", "tokens filled by the prefill"),
        Metric("decoded_tokens", "1", "info", "tokens filled by decoding one at a time"),
    )
    case_target = "llmbench.benches.kvcache:run_case"

    def resolve(self, config: KVCacheConfig, hw: HardwareInfo) -> KVCacheConfig:
        arch = resolve_architecture(config)
        device = usable_device(config.device, hw)
        return config.model_copy(update={"arch": arch, "device": device,
                                         "seq": config.seq or arch.context or 4096})

    def plan(self, config: KVCacheConfig, ctx: PlanContext) -> list[CasePlan]:
        if not config.measure:
            return []
        dtype = measured_dtype(config.dtype, config.device or ctx.device, ctx.hw)
        return [self._plan_one(config, dtype, kv, impl)
                for impl in config.impls for kv in measured_variants(config.arch)]

    def _plan_one(self, config: KVCacheConfig, dtype: str, kv: int, impl: str) -> CasePlan:
        arch = config.arch
        model = scaled_copy(arch, config, kv, impl)
        window, window_layers = copy_window(arch, model["n_layers"])
        params = {"variant": layout_name(arch.heads, kv), "kv_heads": kv,
                  "published": kv == arch.kv_heads, "context": config.measure_seq,
                  "batch": config.batch, "dtype": dtype, "device": config.device,
                  "layers": model["n_layers"], "heads": model["n_heads"],
                  "head_dim": model["head_dim"], "dim": model["dim"], "impl": impl,
                  "window": window, "windowed_layers": len(window_layers)}
        predicted = cache_bytes(layers=model["n_layers"], kv_heads=kv,
                                head_dim=model["head_dim"], seq=config.measure_seq,
                                batch=config.batch, bytes_per_element=DTYPE_BYTES[dtype],
                                window=window, windowed_layers=len(window_layers))
        # One implementation keeps the names baselines know; several add the impl to each.
        named_impl = f"/{impl}" if len(config.impls) > 1 else ""
        return CasePlan(
            name=f"{params['variant'].lower()}{named_impl}/ctx={config.measure_seq}",
            params=params,
            run_args={"model": model, "seed": config.seed, "timing": config.timing.model_dump(),
                      "window_layers": window_layers},
            predicted_memory_bytes=predicted,
            required_memory_bytes=predicted * 2,
            unavailable=kernels.get(impl).device_reason(_problem(params)),
        )

    def summarize(self, config: KVCacheConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        arch = config.arch
        mha_of = {c.params["impl"]: c for c in cases if c.ok and c.params["variant"] == "MHA"}
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            mha = mha_of.get(case.params["impl"])
            if case.ok and mha is not None and mha.time() and case.time():
                metrics["speedup_vs_mha_x"] = mha.time().median / case.time().median
            out.append(case.model_copy(update={"metrics": metrics}))
        copy = scaled_copy(arch, config, arch.kv_heads)
        window, window_layers = copy_window(arch, copy["n_layers"])
        summary = {
            "architecture": arch.model_dump(),
            "analytic": analytic_table(arch, dtype=config.dtype, seq=config.seq,
                                       batch=config.batch, memory_bytes=config.memory_bytes),
            "scaled_copy": {"layers": copy["n_layers"], "heads": copy["n_heads"],
                            "head_dim": copy["head_dim"], "dim": copy["dim"],
                            "of_layers": arch.layers, "of_head_dim": arch.head_dim,
                            "window": window, "windowed_layers": len(window_layers)},
            "window": None if arch.sliding_window is None else {
                "tokens": arch.sliding_window, "windowed_layers": arch.windowed_layers,
                "layers": arch.layers,
                "source": "--window" if config.window is not None else "config",
                "binds": config.seq > arch.sliding_window},
        }
        return out, summary


def _problem(params: dict[str, Any]):  # noqa: ANN202
    from llmbench.kernels.problem import AttentionProblem

    return AttentionProblem(batch=params["batch"], heads=params["heads"],
                            kv_heads=params["kv_heads"], seq=params["context"],
                            head_dim=params["head_dim"], dtype=params["dtype"], causal=True,
                            mode="fwd", device=params["device"])


# ------------------------------------------------------------------ one case, in the child


class RollingKVCache:
    """The built-in model's KV cache (`models.KVCache`'s interface) with a rolling buffer on the
    windowed layers, as Mistral's reference implementation keeps it: a windowed layer holds
    min(max_seq, window) positions, position p in slot p % window; the others hold max_seq.

    Up to the buffer's size it fills like the plain cache (prefill included). Once full it
    takes one token at a time, which attends to the whole buffer: the slots then hold exactly
    the last `window` positions, the token's own included, which is its window (the keys carry
    their rotary positions, and one query's attention does not depend on the keys' order)."""

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_seq: int, head_dim: int,
                 dtype: Any, device: Any, *, window: int, windowed: list[int]) -> None:
        import torch

        self.sizes = [min(max_seq, window) if i in set(windowed) else max_seq
                      for i in range(n_layers)]
        self.k = [torch.zeros((batch, kv_heads, n, head_dim), dtype=dtype, device=device)
                  for n in self.sizes]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.max_seq = max_seq
        self.length = 0  # positions written so far

    def update(self, layer: int, k: Any, v: Any, start: int) -> tuple[Any, Any]:
        n = k.shape[2]
        end, size = start + n, self.sizes[layer]
        if end > self.max_seq:
            raise ValueError(f"KV cache holds {self.max_seq} positions, asked for {end}")
        if end <= size:
            self.k[layer][:, :, start:end] = k
            self.v[layer][:, :, start:end] = v
            keys, values = self.k[layer][:, :, :end], self.v[layer][:, :, :end]
        elif n == 1:
            slot = start % size
            self.k[layer][:, :, slot:slot + 1] = k
            self.v[layer][:, :, slot:slot + 1] = v
            keys, values = self.k[layer], self.v[layer]
        else:
            raise ValueError(f"a full rolling buffer ({size} positions) takes one token at a "
                             f"time, got {n} at position {start}")
        if layer == len(self.k) - 1:
            self.length = max(self.length, end)
        return keys, values

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors, counted from the tensors themselves."""
        return sum(t.untyped_storage().nbytes() for t in self.k + self.v)


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import measure
    from llmbench.models import ModelConfig, Transformer

    p = payload["params"]
    device = torch.device("cuda:0" if p["device"] == "cuda" else "cpu")
    dtype = torch_dtype(p["dtype"])
    torch.manual_seed(payload["seed"])
    model = Transformer(ModelConfig(**payload["model"])).to(device=device, dtype=dtype).eval()
    ctx, batch = p["context"], p["batch"]
    window, window_layers = p.get("window"), payload.get("window_layers") or []
    gen = torch.Generator().manual_seed(payload["seed"])
    tokens = torch.randint(0, 256, (batch, ctx), generator=gen).to(device)
    decode_steps = min(32, ctx - 1)
    prefill = ctx - decode_steps
    if window is not None:  # a full rolling buffer takes one token at a time
        prefill = min(prefill, window)
        decode_steps = ctx - prefill

    def new_cache() -> Any:
        if window is None:
            return model.new_cache(batch, ctx, dtype=dtype)
        mc = model.cfg
        return RollingKVCache(mc.n_layers, batch, mc.kv_heads, ctx, mc.head_size, dtype,
                              device, window=window, windowed=window_layers)

    def fill() -> tuple[Any, float]:
        cache = new_cache()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(tokens[:, :prefill], cache=cache, start=0)
            for t in range(prefill, ctx):  # then decode token by token up to the full context
                model(tokens[:, t:t + 1], cache=cache, start=t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return cache, time.perf_counter() - t0

    with torch.inference_mode():  # warm-up at a short context: kernels, allocator
        model(tokens[:, :min(8, prefill)], cache=new_cache(), start=0)
    (cache, fill_s), peak = measure_peak(fill, device=p["device"])
    sizes = {"layers": p["layers"], "kv_heads": p["kv_heads"], "head_dim": p["head_dim"],
             "seq": ctx, "batch": batch, "bytes_per_element": cache.k[0].element_size()}
    analytic = cache_bytes(**sizes, window=window, windowed_layers=len(window_layers))
    last = tokens[:, ctx - 1:ctx]

    def decode_step() -> torch.Tensor:
        # Rewrites the last position: the same work as decoding it, with all `ctx` keys.
        with torch.inference_mode():
            return model(last, cache=cache, start=ctx - 1)

    stats = measure(decode_step, device=p["device"],
                    policy=TimingPolicy(**payload["timing"]))
    return {
        "time_ms": stats.model_dump(),
        "decode_tokens_per_s": batch / (stats.median / 1e3),
        "cache_bytes": cache.nbytes,
        "analytic_cache_bytes": analytic,
        "cache_matches_formula": cache.nbytes == analytic,
        "cache_tokens": cache.length,
        "peak_memory_bytes": peak.peak_bytes,
        "fill_s": fill_s,
        "prefill_tokens": prefill,
        "decoded_tokens": decode_steps,
        **({"full_cache_bytes": cache_bytes(**sizes)} if window is not None else {}),
    }
