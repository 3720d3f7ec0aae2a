"""`llmbench kvcache`: KV-cache size of MHA / GQA / MQA, computed and measured.

Analytic (summary): bytes per token = 2 * layers * kv_heads * head_dim * bytes per element, for
the architecture as published and re-headed with every key/value head count that divides the
query heads; with a memory budget, the longest context and the largest batch whose cache fits.

Measured (cases): a scaled-down copy of the architecture built with llmbench's own transformer
(same query heads, fewer layers, narrower heads) is run as MHA, GQA and MQA: the cache is
filled (prefill, then decoding), its bytes are counted from the real tensors and compared with
the formula, and a decode step at the full context is timed.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmbench import kernels
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError, first_problem
from llmbench.core.hardware import HardwareInfo, dtype_unsupported, usable_device
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy
from llmbench.core.units import DTYPE_BYTES
from llmbench.models.presets import Architecture, from_hf_config, preset

CacheDtype = Literal["fp32", "fp16", "bf16", "fp8", "int8"]
DEFAULT_MODEL = "llama-3-8b"


class KVCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="preset name; None with no other source: "
                              f"{DEFAULT_MODEL}")
    config_path: str | None = Field(None, description="a Hugging Face config.json")
    layers: int | None = Field(None, gt=0)
    heads: int | None = Field(None, gt=0)
    kv_heads: int | None = Field(None, gt=0)
    head_dim: int | None = Field(None, gt=0)
    context: int | None = Field(None, gt=0)
    arch: Architecture | None = Field(None, description="resolved from the fields above")
    seq: int | None = Field(None, gt=0, description="None: the model's context")
    batch: int = Field(1, gt=0)
    dtype: CacheDtype = "bf16"
    memory_bytes: int | None = Field(None, gt=0, description="budget for the inverse question")
    measure: bool = True
    measure_seq: int = Field(2048, gt=1, description="context of the measured decode")
    measure_layers: int = Field(4, gt=0)
    measure_head_dim: int | None = Field(None, gt=0, description="None: about 512 / heads")
    impl: str = Field("sdpa", description="attention implementation of the scaled copy")
    device: Literal["cpu", "cuda"] | None = None
    seed: int = 0
    timing: TimingPolicy = Field(default_factory=TimingPolicy)


def resolve_architecture(cfg: KVCacheConfig) -> Architecture:
    """The preset, or the config file, or explicit numbers; explicit numbers override either."""
    if cfg.model and cfg.config_path:
        raise UsageError("give --model or --config, not both")
    explicit = {k: v for k, v in {"layers": cfg.layers, "heads": cfg.heads,
                                  "kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
                                  "context": cfg.context}.items() if v is not None}
    if cfg.config_path:
        base = from_hf_config(cfg.config_path).model_dump()
    elif cfg.model or not explicit:
        base = preset(cfg.model or DEFAULT_MODEL).model_dump()
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
    if explicit and base.get("source") != "flags":
        merged["name"] = f"{base['name']} (modified)"
    try:
        return Architecture(**merged)
    except ValueError as exc:
        raise UsageError(f"--kv-heads: {first_problem(exc)[1]}") from None


def kv_variants(heads: int) -> list[int]:
    """Every key/value head count that divides `heads`, MHA first, MQA last."""
    return [kv for kv in range(heads, 0, -1) if heads % kv == 0]


def variant_name(heads: int, kv: int) -> str:
    return "MHA" if kv == heads else "MQA" if kv == 1 else f"GQA-{kv}"


def measured_variants(arch: Architecture) -> list[int]:
    """MHA, the published layout, one GQA between (the largest divisor <= heads/4), MQA."""
    divisors = kv_variants(arch.heads)
    gqa = [d for d in divisors if 1 < d <= arch.heads // 4]
    picks = {arch.heads, arch.kv_heads, 1, *(gqa[:1])}
    return sorted(picks, reverse=True)


def scaled_copy(arch: Architecture, cfg: KVCacheConfig, kv_heads: int) -> dict[str, Any]:
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
            "attention": cfg.impl}


def analytic_table(arch: Architecture, *, dtype: str, seq: int, batch: int,
                   memory_bytes: int | None) -> list[dict[str, Any]]:
    e = DTYPE_BYTES[dtype]
    mha = arch.kv_bytes_per_token(e, arch.heads)
    rows = []
    for kv in kv_variants(arch.heads):
        per_token = arch.kv_bytes_per_token(e, kv)
        row = {"variant": variant_name(arch.heads, kv), "kv_heads": kv,
               "published": kv == arch.kv_heads, "bytes_per_token": per_token,
               "total_bytes": per_token * seq * batch,
               "saving_vs_mha_pct": 100.0 * (mha - per_token) / mha}
        if memory_bytes is not None:
            row["max_context"] = memory_bytes // (per_token * batch)
            row["max_batch"] = memory_bytes // (per_token * seq)
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
    config_type = KVCacheConfig
    case_target = "llmbench.benches.kvcache:run_case"

    def resolve(self, config: KVCacheConfig, hw: HardwareInfo) -> KVCacheConfig:
        arch = resolve_architecture(config)
        device = usable_device(config.device, hw)
        if config.impl not in kernels.IMPLS:
            raise UsageError(f"--impl: unknown impl {config.impl!r} "
                             f"(choose from {', '.join(kernels.names())})")
        return config.model_copy(update={"arch": arch, "device": device,
                                         "seq": config.seq or arch.context or 4096})

    def plan(self, config: KVCacheConfig, ctx: PlanContext) -> list[CasePlan]:
        if not config.measure:
            return []
        arch = config.arch
        dtype = measured_dtype(config.dtype, config.device or ctx.device, ctx.hw)
        plans = []
        for kv in measured_variants(arch):
            model = scaled_copy(arch, config, kv)
            params = {"variant": variant_name(arch.heads, kv), "kv_heads": kv,
                      "published": kv == arch.kv_heads, "context": config.measure_seq,
                      "batch": config.batch, "dtype": dtype, "device": config.device,
                      "layers": model["n_layers"], "heads": model["n_heads"],
                      "head_dim": model["head_dim"], "dim": model["dim"], "impl": config.impl}
            cache_bytes = 2 * model["n_layers"] * kv * model["head_dim"] * config.measure_seq \
                * config.batch * DTYPE_BYTES[dtype]
            plans.append(CasePlan(
                name=f"{params['variant'].lower()}/ctx={config.measure_seq}",
                params=params,
                run_args={"model": model, "seed": config.seed,
                          "timing": config.timing.model_dump()},
                predicted_memory_bytes=cache_bytes,
                required_memory_bytes=cache_bytes * 2,
                unavailable=kernels.get(config.impl).device_reason(_problem(params)),
            ))
        return plans

    def summarize(self, config: KVCacheConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        arch = config.arch
        mha = next((c for c in cases if c.ok and c.params["variant"] == "MHA"), None)
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            if case.ok and mha is not None and mha.time() and case.time():
                metrics["speedup_vs_mha_x"] = mha.time().median / case.time().median
            out.append(case.model_copy(update={"metrics": metrics}))
        copy = scaled_copy(arch, config, arch.kv_heads)
        summary = {
            "architecture": arch.model_dump(),
            "analytic": analytic_table(arch, dtype=config.dtype, seq=config.seq,
                                       batch=config.batch, memory_bytes=config.memory_bytes),
            "scaled_copy": {"layers": copy["n_layers"], "heads": copy["n_heads"],
                            "head_dim": copy["head_dim"], "dim": copy["dim"],
                            "of_layers": arch.layers, "of_head_dim": arch.head_dim},
        }
        return out, summary


def _problem(params: dict[str, Any]):  # noqa: ANN202
    from llmbench.kernels.problem import AttentionProblem

    return AttentionProblem(batch=params["batch"], heads=params["heads"],
                            kv_heads=params["kv_heads"], seq=params["context"],
                            head_dim=params["head_dim"], dtype=params["dtype"], causal=True,
                            mode="fwd", device=params["device"])


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import measure
    from llmbench.models import KVCache, ModelConfig, Transformer

    p = payload["params"]
    device = torch.device("cuda:0" if p["device"] == "cuda" else "cpu")
    dtype = torch_dtype(p["dtype"])
    torch.manual_seed(payload["seed"])
    model = Transformer(ModelConfig(**payload["model"])).to(device=device, dtype=dtype).eval()
    ctx, batch = p["context"], p["batch"]
    gen = torch.Generator().manual_seed(payload["seed"])
    tokens = torch.randint(0, 256, (batch, ctx), generator=gen).to(device)
    decode_steps = min(32, ctx - 1)
    prefill = ctx - decode_steps

    def fill() -> tuple[KVCache, float]:
        cache = model.new_cache(batch, ctx, dtype=dtype)
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(tokens[:, :prefill], cache=cache, start=0)
            for t in range(prefill, ctx):  # then decode token by token up to the full context
                model(tokens[:, t:t + 1], cache=cache, start=t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return cache, time.perf_counter() - t0

    with torch.inference_mode():  # warm-up at a short context: kernels, allocator
        model(tokens[:, :8], cache=model.new_cache(batch, ctx, dtype=dtype), start=0)
    (cache, fill_s), peak = measure_peak(fill, device=p["device"])
    analytic = KVCache.analytic_bytes(layers=p["layers"], kv_heads=p["kv_heads"],
                                      head_dim=p["head_dim"], seq=ctx, batch=batch,
                                      bytes_per_element=cache.k[0].element_size())
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
    }
