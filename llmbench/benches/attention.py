"""`llmbench attention`: standard vs Flash attention, time and peak memory per implementation.

Cases: every requested implementation at every sequence length. Each case times the forward (or
forward + backward) call, measures its peak memory above the inputs, and checks its output (and
gradients) against an fp64 reference. Across cases: speed-up and memory reduction vs `standard`,
and, for sweeps, the exponent of memory and time in seq.

With `window`, every implementation runs twice, full causal and with the left sliding window,
and the summary sets the measured time ratio next to the expected FLOP ratio. With `kv_seq`,
keys and values have that length instead of each seq (decode-shaped attention, a chunk of a
prefill), the causal mask bottom-right aligned as in flash-attn: query row i sits at position
i + kv_seq - seq. With `varlen`, the cases are packed variable-length batches against padding to
the longest (llmbench.benches.attention_varlen).

FLOPs (TFLOP/s, the roofline, the window's expected ratio, varlen's needed and padded FLOPs)
follow one rule, `kernels.problem.attended_pairs`: 4 * heads * head_dim per attended (query,
key) pair forward, 3.5x that for forward + backward, a causal mask counting half the full
matrix (each row's diagonal key counted half, in every shape), as flash-attn's benchmarks do.
Peak memory on a CPU is read with the resident set following the live tensors
(`warm_then_peak_live`), the figure each implementation's prediction is checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from llmbench import kernels
from llmbench.core import hardware, roofline
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import ERROR_FLOOR, RECORD, Metric, Opt, flag_of
from llmbench.core.dtypes import torch_dtype
from llmbench.core.errors import UsageError, first_problem
from llmbench.core.fit import power_law_exponent
from llmbench.core.flags import (
    BATCH,
    DTYPE,
    HEAD_DIM,
    HEADS,
    IMPLS,
    KV_HEADS,
    SEQS,
    Device,
    Seed,
    flag_like,
)
from llmbench.core.hardware import HardwareInfo, dtype_unsupported, usable_device
from llmbench.core.memory import PeakMemory
from llmbench.core.profiles import AttentionTile, KernelTile, Profile
from llmbench.core.results import CaseResult
from llmbench.core.roofline import RooflineCeilings
from llmbench.core.timing import TimingPolicy
from llmbench.kernels.problem import (
    AttentionProblem,
    attended_pairs,
    attention_bytes,
    attention_flops,
)

# Tile fields a user may override (their flags: the config's Opt declarations).
TILE_KEYS = ("block_m", "block_n", "num_warps", "num_stages")

Dtype = Literal["fp32", "fp16", "bf16"]


_SHAPE = "Shape"
_TILE = "Tiles (tiled, triton)"


class AttentionConfig(BaseModel):
    """What `llmbench attention` measures. `None` fields are filled from the detected device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seqs: Annotated[list[int], Field(min_length=1), flag_like(SEQS, panel=_SHAPE)] = [4096]
    kv_seq: Annotated[int | None, Field(gt=0), Opt(
        "Key/value length, when it differs from --seq: --seq 1 --kv-seq 8192 is one decoding "
        "step against a KV cache. Causal masks are bottom-right aligned (query i sees keys up "
        "to i + kv_seq - seq), as in flash-attn.", default_text="--seq", panel=_SHAPE)] = None
    impls: Annotated[list[str] | None, flag_like(
        IMPLS, help=f"Here: {', '.join(kernels.names())}.",
        default_text="all but sdpa (torch's own pick) and the compiled ones (compiled, flex: "
        "each case compiles first); those that cannot run here are listed as unavailable")
    ] = None
    batch: Annotated[int, Field(gt=0), flag_like(BATCH, panel=_SHAPE)] = 1
    heads: Annotated[int, Field(gt=0), flag_like(HEADS, panel=_SHAPE)] = 8
    kv_heads: Annotated[int | None, Field(gt=0), flag_like(KV_HEADS, panel=_SHAPE)] = None
    head_dim: Annotated[int, Field(gt=0), flag_like(HEAD_DIM, panel=_SHAPE)] = 64
    dtype: Annotated[Dtype | None, flag_like(DTYPE, default_text="bf16 on a GPU, fp32 on a CPU",
                                             panel=_SHAPE)] = None
    causal: Annotated[bool, Opt("Causal (decoder) mask.", panel=_SHAPE)] = True
    mode: Annotated[Literal["fwd", "fwd+bwd"], Opt(
        "Time the forward pass, or forward + backward.")] = "fwd"
    device: Device = None
    seed: Seed = 0
    check_rows: int = Field(256, gt=0, description="query rows checked against fp64 at full size")
    check_seq: int = Field(512, gt=0, description="seq of the gradient check (fwd+bwd)")
    window: Annotated[int | None, Field(ge=0), Opt(
        "A left sliding window: every query sees its own key and the W before it (flash-attn's "
        "window (W, 0)); every impl runs with it and fully causal, "
        "and the time ratio is set against the expected FLOP ratio.", panel=_SHAPE)] = None
    varlen: Annotated[list[int] | None, Opt(
        "Packed sequences of these lengths (128,512,2048 or random:COUNT:MIN:MAX) against "
        "padding to the longest.", parse="text", panel=_SHAPE)] = None
    block_m: Annotated[int | None, Opt("Override the profile's tile: query rows per tile.",
                                       panel=_TILE)] = None
    block_n: Annotated[int | None, Opt("Override the profile's tile: key rows per tile.",
                                       panel=_TILE)] = None
    num_warps: Annotated[int | None, Opt("Override the profile's tile: warps per program.",
                                         flag="--warps", panel=_TILE)] = None
    num_stages: Annotated[int | None, Opt("Override the profile's tile: pipeline stages.",
                                          flag="--stages", panel=_TILE)] = None
    interpret: Annotated[bool, Opt(
        "Run the Triton kernel on the CPU through Triton's interpreter (fp32, slow; small "
        "shapes).", panel=_TILE, negatable=False)] = False
    timing: TimingPolicy = Field(default_factory=TimingPolicy)

    @field_validator("varlen", mode="before")
    @classmethod
    def _parse_lengths(cls, v: Any, info: ValidationInfo) -> Any:
        if isinstance(v, (list, tuple)) and any(isinstance(x, str) for x in v):
            from llmbench.benches.attention_varlen import parse_lengths

            try:
                return parse_lengths(",".join(str(x) for x in v),
                                     seed=info.data.get("seed", 0))
            except UsageError as exc:
                raise ValueError(str(exc).removeprefix("--varlen ")) from None
        return v

    @field_validator("varlen")
    @classmethod
    def _lengths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError("sequence lengths must be positive")
        return v

    @field_validator("seqs")
    @classmethod
    def _positive_seqs(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if s <= 0]
        if bad:
            raise ValueError(f"seq must be positive, got {bad[0]}")
        return sorted(set(v))

    @field_validator("impls")
    @classmethod
    def _known_impls(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        for name in v:
            if name not in kernels.IMPLS:
                raise ValueError(
                    f"unknown impl {name!r} (choose from {', '.join(kernels.names())})")
        if not v:
            raise ValueError("no implementation given")
        return list(dict.fromkeys(v))

    @field_validator("kv_heads")
    @classmethod
    def _heads_divisible(cls, v: int | None, info: ValidationInfo) -> int | None:
        heads = info.data.get("heads")
        if v is not None and heads and heads % v:
            raise ValueError(f"kv_heads {v} does not divide heads {heads} "
                             "(each key/value head serves a whole group of query heads)")
        return v


class AttentionCase(BaseModel):
    """A case's params: a dense case (kv_seq and window only when asked; the tile only for an
    implementation that takes one) or a --varlen case (varlen instead of seq and batch)."""

    model_config = RECORD

    impl: str  # a kernels name, or a --varlen case label (llmbench.benches.attention_varlen)
    seq: int | None = None  # dense only
    batch: int | None = None  # dense only
    varlen: list[int] | None = None  # --varlen only: the packed sequences' lengths
    heads: int
    kv_heads: int
    head_dim: int
    dtype: Dtype
    causal: bool
    mode: Literal["fwd", "fwd+bwd"]
    device: Literal["cpu", "cuda"]
    kv_seq: int | None = None  # with --kv-seq
    window: int | None = None  # with --window (None: the full causal run) and in --varlen
    block_m: int | None = None
    block_n: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    dkdv: KernelTile | None = None
    dq: KernelTile | None = None


class AttentionScaling(BaseModel):
    """One impl's fitted exponents k in value ~ seq^k."""

    model_config = RECORD

    seqs: list[int]
    memory_exponent: float | None
    time_exponent: float | None


class AttentionStandardLimit(BaseModel):
    """The longest seq standard attention fits in the memory free now; where it failed."""

    model_config = RECORD

    free_memory_bytes: int | None
    first_failed_seq: int | None = None
    predicted_max_seq: int | None = None


class AttentionWindowRow(BaseModel):
    """A windowed case against the full causal one at its impl and seq."""

    model_config = RECORD

    window: int
    expected_flop_ratio: float
    time_ratio: float
    memory_ratio: float


class AttentionSummary(BaseModel):
    """Dense runs: peak, scaling, standard's limit (and window ratios with --window); --varlen
    runs: the batch's lengths and FLOPs, padded and needed."""

    model_config = RECORD

    lengths: list[int] | None = None  # --varlen from here to padded_flops_wasted_pct
    total_tokens: int | None = None
    longest: int | None = None
    useful_flops: float | None = None
    padded_flops: float | None = None
    padded_flops_wasted_pct: float | None = None
    peak_tflops: float | None = None
    peak_source: str | None = None
    roofline: RooflineCeilings | None = None  # the ceilings of the roofline figures
    # dense from here on
    scaling: dict[str, AttentionScaling] = {}
    standard_limit: AttentionStandardLimit | None = None
    window: dict[str, AttentionWindowRow] | None = None  # "impl/seq=N" -> its row


class AttentionBenchmark(Benchmark[AttentionConfig]):
    name = "attention"
    help = """Standard vs Flash attention: time, TFLOP/s, peak memory and error per implementation.

    Each case runs in its own process: warm-up, one call measured for peak memory and checked
    against an fp64 reference, then timed until the median is steady. With a sweep, the
    exponents of memory and time in seq are fitted. FLOPs: 4 x heads x head dim per attended
    (query, key) pair forward, 3.5x with the backward; causal counts half the full matrix
    (the diagonal half), as flash-attn's benchmarks do.
    """
    config_type = AttentionConfig
    params_type = AttentionCase
    summary_type = AttentionSummary
    metrics = (
        Metric("peak_memory_bytes", "B", "lower", "peak memory of one call above its inputs"),
        Metric("predicted_memory_bytes", "B", "info",
               "the memory the call was predicted to add above its inputs"),
        Metric("input_memory_bytes", "B", "info", "bytes of q, k, v and the output gradient"),
        Metric("max_abs_error", "abs", "lower", "max |output - fp64 reference| on the rows "
               "checked", family="error", floor=ERROR_FLOOR),
        Metric("grad_max_abs_error", "abs", "lower",
               "max |dq, dk, dv - fp64 reference's| at the check size", family="error",
               floor=ERROR_FLOOR),
        Metric("compile_ms", "ms", "lower", "a compiled implementation's first call, caches "
               "cold: TorchDynamo's trace, Inductor's code generation and build, one run"),
        Metric("mask_ms", "ms", "lower", "building the mask the implementation takes "
               "(FlexAttention's BlockMask; median), outside time_ms"),
        Metric("error_rows_checked", "1", "info", "query rows checked against fp64"),
        Metric("grad_check_seq", "1", "info", "query length of the gradient check"),
        Metric("grad_check_kv_seq", "1", "info", "key length of the gradient check"),
        Metric("flops_per_call", "FLOP", "info",
               "the FLOPs one call needs (causal: half the full matrix)"),
        *roofline.METRICS,
        Metric("launched_tile", "", "info", "the Triton tile the last launch used"),
        Metric("speedup_vs_standard_x", "x", "higher",
               "standard's time / this one's, same seq and mode", derived=True),
        Metric("memory_reduction_vs_standard_x", "x", "higher",
               "standard's peak memory / this one's", derived=True),
        # --varlen
        Metric("flops_needed", "FLOP", "info", "the FLOPs the packed batch needs"),
        Metric("flops_computed", "FLOP", "info", "the FLOPs this implementation computes"),
        Metric("wasted_flops_pct", "%", "info", "share of the computed FLOPs spent on padding",
               derived=True),
    )
    renderer = "llmbench.report.attention:render"
    plot = "llmbench.report.plots:attention"
    case_target = "llmbench.benches.attention:run_case"

    def resolve(self, config: AttentionConfig, hw: HardwareInfo) -> AttentionConfig:
        if config.window is not None and not config.causal:
            raise UsageError("--window is a left sliding window over a causal mask: drop "
                             "--no-causal")
        if config.kv_seq is not None and config.varlen is not None:
            raise UsageError("--kv-seq sets the key length of a dense batch; --varlen packs "
                             "sequences that attend to themselves: drop one of them")
        device = usable_device(config.device, hw)
        from llmbench.core.hardware import default_dtype

        dtype = config.dtype or default_dtype(device, hw)
        reason = dtype_unsupported(device, dtype, hw)
        if reason:
            raise UsageError(f"--dtype {dtype}: {reason}")
        resolved = config.model_copy(update={
            "device": device, "dtype": dtype, "kv_heads": config.kv_heads or config.heads})
        for name in config.impls or []:
            why = kernels.get(name).shape_reason(self._problem(resolved, resolved.seqs[0], hw))
            if why:
                raise UsageError(f"--impl {name}: {why}")
        overrides = {k: getattr(config, k) for k in TILE_KEYS if getattr(config, k) is not None}
        if overrides:
            tile_with(None, config.head_dim, overrides)  # a bad override is bad input now
        return resolved

    @staticmethod
    def _problem(config: AttentionConfig, seq: int, hw: HardwareInfo,
                 window: int | None = None) -> AttentionProblem:
        cc = hw.gpu.compute_capability if (config.device == "cuda" and hw.gpu) else None
        return AttentionProblem(
            batch=config.batch, heads=config.heads, kv_heads=config.kv_heads or config.heads,
            seq=seq, head_dim=config.head_dim, dtype=config.dtype or "fp32",
            causal=config.causal, mode=config.mode, device=config.device or "cpu",
            compute_capability=cc, window=window, seq_k=config.kv_seq,
            interpret=config.interpret)

    def plan(self, config: AttentionConfig, ctx: PlanContext) -> list[CasePlan]:
        tile = tile_with(ctx.profile, config.head_dim,
                         {k: getattr(config, k) for k in TILE_KEYS})
        if config.varlen is not None:
            from llmbench.benches.attention_varlen import plan_varlen

            return plan_varlen(config, ctx, tile)
        windows: list[int | None] = [None] if config.window is None else [None, config.window]
        plans = []
        for seq in config.seqs:
            for name in config.impls or kernels.default_names():
                for window in windows:
                    plans.append(self._case(config, ctx, tile, name, seq, window))
        return plans

    def _case(self, config: AttentionConfig, ctx: PlanContext, tile: AttentionTile, name: str,
              seq: int, window: int | None) -> CasePlan:
        impl = kernels.get(name)
        problem = self._problem(config, seq, ctx.hw, window)
        params: dict[str, Any] = {
            "impl": name, "seq": seq, "batch": config.batch, "heads": config.heads,
            "kv_heads": problem.kv_heads, "head_dim": config.head_dim, "dtype": problem.dtype,
            "causal": config.causal, "mode": config.mode, "device": problem.device,
        }
        label = f"{name}/seq={seq}/{config.mode}"
        if config.kv_seq is not None:
            params["kv_seq"] = config.kv_seq
            label = f"{name}/seq={seq}/kv={config.kv_seq}/{config.mode}"
        if config.window is not None:
            params["window"] = window
            label += "/causal" if window is None else f"/window={window}"
        if impl.uses_tile:
            params.update(tile.model_dump(exclude={"head_dim"}))
        unavailable = impl.unavailable(problem)
        if window is not None and not impl.window and not unavailable:
            unavailable = f"{name} has no sliding window (it takes no attention mask)"
        extra = impl.predicted_extra_bytes(problem, tile)
        return CasePlan(
            name=label, params=params,
            run_args={"seed": config.seed, "check_rows": config.check_rows,
                      "check_seq": config.check_seq, "timing": config.timing.model_dump(),
                      "compute_capability": problem.compute_capability,
                      "interpret": config.interpret},
            predicted_memory_bytes=extra, required_memory_bytes=problem.input_bytes + extra,
            unavailable=unavailable)

    def summarize(self, config: AttentionConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        dtype = config.dtype or "fp32"
        figures = ctx.profile.peak_figures(ctx.hw)
        peak = figures.tflops.get(dtype)
        ceil = roofline.ceilings(ctx.profile, ctx.hw, ctx.device, dtype)
        if config.varlen is not None:
            from llmbench.benches.attention_varlen import summarize_varlen

            return summarize_varlen(config, cases, ceil)
        standard = {(c.params["seq"], c.params["mode"], c.params.get("window")): c
                    for c in cases if c.params["impl"] == "standard" and c.ok}
        out = []
        for case in cases:
            metrics = dict(case.metrics)
            if case.ok:
                metrics.update(roofline.case_figures(
                    metrics.get("flops_per_call"), metrics.get("bytes_moved"), case, ceil))
                base = standard.get((case.params["seq"], case.params["mode"],
                                     case.params.get("window")))
                if base is not None and base.time() and case.time():
                    metrics["speedup_vs_standard_x"] = base.time().median / case.time().median
                    base_mem = base.metrics.get("peak_memory_bytes")
                    mem = metrics.get("peak_memory_bytes")
                    if isinstance(base_mem, int) and isinstance(mem, int) and mem > 0:
                        metrics["memory_reduction_vs_standard_x"] = base_mem / mem
            out.append(case.model_copy(update={"metrics": metrics}))
        summary: dict[str, Any] = {
            "peak_tflops": peak,
            "peak_source": f"profile {ctx.profile.name}: {figures.source}",
            "roofline": ceil.record(),
            "scaling": _scaling([c for c in out if c.params.get("window") is None]),
            "standard_limit": _standard_limit(config, out, ctx, self._problem),
        }
        if config.window is not None:
            summary["window"] = _window_summary(config, out)
        return out, summary


def tile_with(profile: Profile | None, head_dim: int,
              overrides: dict[str, int | None]) -> AttentionTile:
    """The profile's tile for `head_dim` with the user's overrides, validated; a bad value is a
    one-line error naming its flag."""
    base = profile.tile_for(head_dim).model_dump() if profile else {
        "head_dim": (1, 1024), "block_m": 64, "block_n": 64, "num_warps": 4, "num_stages": 2}
    try:
        return AttentionTile(**{**base, **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as exc:
        loc, msg = first_problem(exc)
        flag = flag_of(AttentionConfig, str(loc[0])) if loc else "tile"
        raise UsageError(f"{flag}: {msg}") from None


def _window_summary(config: AttentionConfig, cases: list[CaseResult]) -> dict[str, Any]:
    """Per impl and seq: the FLOP ratio a window should give next to the time and memory
    ratios it gave. Both counts follow `kernels.problem.attended_pairs`' one rule (the band's
    keys with each row's diagonal key counted half, against the causal triangle counted the
    same way), so a window as long as the keys gives exactly 1."""
    out: dict[str, Any] = {}
    by = {(c.params["impl"], c.params["seq"], c.params.get("window")): c for c in cases if c.ok}
    for (impl, seq, window), case in by.items():
        full = by.get((impl, seq, None))
        if window is None or full is None:
            continue
        kv = config.kv_seq or seq
        expected = (attended_pairs(seq, causal=True, window=window, seq_k=kv)
                    / attended_pairs(seq, causal=True, seq_k=kv))
        out[f"{impl}/seq={seq}"] = {
            "window": window, "expected_flop_ratio": expected,
            "time_ratio": case.time().median / full.time().median,
            "memory_ratio": (case.metrics["peak_memory_bytes"]
                             / max(1, full.metrics["peak_memory_bytes"]))}
    return out


def _scaling(cases: list[CaseResult]) -> dict[str, dict[str, Any]]:
    """Per impl, the exponent k of memory ~ seq^k and time ~ seq^k over the ok cases."""
    by_impl: dict[str, list[CaseResult]] = {}
    for c in cases:
        if c.ok:
            by_impl.setdefault(c.params["impl"], []).append(c)
    out = {}
    for impl, cs in by_impl.items():
        if len({c.params["seq"] for c in cs}) < 2:
            continue
        seqs = [float(c.params["seq"]) for c in cs]
        mems = [float(c.metrics.get("peak_memory_bytes") or 0) for c in cs]
        times = [c.time().median if c.time() else 0.0 for c in cs]
        out[impl] = {
            "seqs": [int(s) for s in seqs],
            "memory_exponent": power_law_exponent(seqs, mems),
            "time_exponent": power_law_exponent(seqs, times),
        }
    return out


def _standard_limit(config: AttentionConfig, cases: list[CaseResult], ctx: PlanContext,
                    problem_at) -> dict[str, Any]:  # noqa: ANN001
    """The longest seq whose standard attention fits in the memory free now, and the first seq
    at which it failed in this run."""
    impl = kernels.get("standard")
    free = hardware.available_memory_bytes(ctx.device)
    failed = sorted(c.params["seq"] for c in cases
                    if c.params["impl"] == "standard" and c.status in ("oom", "skipped"))
    limit: dict[str, Any] = {"free_memory_bytes": free, "first_failed_seq": failed[0] if failed
                             else None, "predicted_max_seq": None}
    if free:
        def need(seq: int) -> int:
            p = problem_at(config, seq, ctx.hw)
            return p.input_bytes + impl.predicted_extra_bytes(p)

        lo, hi = 0, 1
        while need(hi) <= free and hi < 2**31:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
        limit["predicted_max_seq"] = lo
    return limit


# ------------------------------------------------------------------ one case, in the child


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    """One case in its (isolated) process: warm-up, one call measured for peak memory and
    checked against fp64, then timed until the median is steady; with fwd+bwd, the gradients
    checked too. A compiled implementation's first call is timed apart, from cold caches
    (`compile_ms`). Packed variable-length cases: attention_varlen."""
    from llmbench.kernels import use_interpreter

    use_interpreter(payload.get("interpret", False))
    with compile_scope(payload["params"]["impl"]):
        if "varlen" in payload["params"]:
            from llmbench.benches.attention_varlen import run_varlen_case

            return run_varlen_case(payload)
        return _run_dense(payload)


def compile_scope(name: str) -> Any:
    """Cold caches for an implementation that compiles (`kernels.compiled.cold_compile`),
    nothing for the others; `name` an implementation or a --varlen case label."""
    from contextlib import nullcontext

    from llmbench.benches.attention_varlen import VARLEN_CASES

    impl = kernels.IMPLS.get(VARLEN_CASES.get(name) or name)
    if impl is None or not impl.compiles:
        return nullcontext()
    from llmbench.kernels.compiled import cold_compile

    return cold_compile()


def first_call_ms(step: Callable[[], Any], device: str) -> float:
    """The wall time of one call (a compiled implementation's first: its compilation)."""
    from llmbench.core.timing import stopwatch

    clock = stopwatch(device)
    clock.start()
    step()
    return clock.stop_ms()


def mask_ms(build: Callable[[], Any] | None, device: str, policy: dict[str, Any]
            ) -> float | None:
    """The median time to build a mask (`kernels.AttentionImpl.mask_builder`), timed as the
    calls are (warm-up, then until steady or --max-time)."""
    if build is None:
        return None
    from llmbench.core.timing import TimingPolicy, measure

    return measure(build, device=device, policy=TimingPolicy(**policy)).median


def _run_dense(payload: dict[str, Any]) -> dict[str, Any]:
    from llmbench.core.timing import measure_warmed

    p = payload["params"]
    impl = kernels.get(p["impl"])
    case = _DenseCase.of(payload)
    q, k, v, dout = case.inputs(p["seq"], case.problem.kv_seq, payload["seed"])
    step = lambda: case.call(q, k, v, dout)  # noqa: E731
    compile_ms = first_call_ms(step, p["device"]) if impl.compiles else None
    out, peak, prior = warm_then_peak_live(step, device=p["device"],
                                           before=lambda: _clear_grads(q, k, v))
    max_err, rows_checked = case.output_error(out, q, k, v, payload["check_rows"])
    del out
    stats = measure_warmed(step, device=p["device"], policy=payload["timing"],
                           prior_samples_ms=prior)
    flops = attention_flops(case.problem)
    metrics: dict[str, Any] = {
        "time_ms": stats.model_dump(),
        "throughput_tflops": flops / (stats.median / 1e3) / 1e12,
        "peak_memory_bytes": peak.peak_bytes,
        "input_memory_bytes": case.problem.input_bytes,
        "max_abs_error": max_err,
        "error_rows_checked": rows_checked,
        "flops_per_call": flops,
        "bytes_moved": attention_bytes(case.problem, materializes=impl.materializes),
    }
    if compile_ms is not None:
        metrics["compile_ms"] = compile_ms
    builders = impl.mask_builders()
    if builders is not None:
        built = mask_ms(builders.dense_mask_builder(case.problem, q.device), p["device"],
                        payload["timing"])
        if built is not None:
            metrics["mask_ms"] = built
    if p["impl"] == "triton":
        from llmbench.kernels.triton_flash import last_launch

        metrics["launched_tile"] = " ".join(f"{k}={v}" for k, v in sorted(last_launch.items()))
    if case.backward:
        metrics.update(case.gradient_check(payload))
    return metrics


def _clear_grads(*tensors: Any) -> None:
    for t in tensors:
        t.grad = None


# glibc's ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): where
# a warm process's threshold ends up once it has freed a block that large.
GLIBC_MMAP_THRESHOLD_MAX = 32 << 20
# While the peak is measured on a CPU, every allocation from this size on gets its own mapping
# (a page rounds it up by at most 6 %); smaller ones come from glibc's heap.
LIVE_MMAP_THRESHOLD = 64 << 10


def warm_then_peak_live(step: Callable[[], Any], *, device: str,
                        before: Callable[[], None] | None = None
                        ) -> tuple[Any, PeakMemory, list[float] | None]:
    """`core.memory.warm_then_peak`, with the CPU's resident set following the live tensors
    during the measured call (`core.memory.rss_follows_tensors`: every allocation of
    LIVE_MMAP_THRESHOLD or more its own mapping, given back when freed), so that a CPU peak
    counts torch's live tensors as a GPU's allocator does and the predictions
    (`kernels.*.predicted_*`) can be checked against it: with glibc's heap keeping freed blocks
    the same calls read 4-28 % higher, by amounts that changed from run to run. What remains
    is the kernel's page accounting (a thread's page faults reach VmHWM in batches, a few
    hundred KiB at most) and pages a kernel allocates but never touches, so below a few MiB a
    CPU peak is only approximate; and in a process that has run other cases (--no-isolate),
    the blocks they left free in glibc's heap are reused and stay resident when freed, so
    inline peaks read higher. The timing then runs with glibc's threshold at its ceiling
    (GLIBC_MMAP_THRESHOLD_MAX), as in a warm process, without the measured call as a sample:
    its page faults belong to the measurement (mapping every block anew made sdpa-flash's
    forward + backward ~1.5x slower here)."""
    from llmbench.core.memory import rss_follows_tensors, warm_then_peak

    live = device == "cpu" and rss_follows_tensors(LIVE_MMAP_THRESHOLD)
    out, peak, prior = warm_then_peak(step, device=device, before=before)
    if live:
        rss_follows_tensors(GLIBC_MMAP_THRESHOLD_MAX)
        prior = None
    return out, peak, prior


@dataclass
class _DenseCase:
    """A dense attention case as its process runs it: the problem, the implementation's
    function and tile, and its tensor layout."""

    p: dict[str, Any]
    problem: AttentionProblem
    fn: Any
    tile: dict[str, Any]
    scale: float
    bshd: bool  # the implementation takes (batch, seq, heads, dim)

    @classmethod
    def of(cls, payload: dict[str, Any]) -> _DenseCase:
        p = payload["params"]
        impl = kernels.get(p["impl"])
        problem = AttentionProblem(
            batch=p["batch"], heads=p["heads"], kv_heads=p["kv_heads"], seq=p["seq"],
            head_dim=p["head_dim"], dtype=p["dtype"], causal=p["causal"], mode=p["mode"],
            device=p["device"], compute_capability=payload.get("compute_capability"),
            window=p.get("window"), seq_k=p.get("kv_seq"))
        tile: dict[str, Any] = {k: p[k] for k in TILE_KEYS if k in p}
        for key in ("dkdv", "dq"):  # Triton's backward tiles, when the case carries them
            if p.get(key) is not None:
                tile[key] = p[key]
        if p.get("window") is not None:
            tile["window"] = p["window"]
        return cls(p, problem, impl.load(), tile, 1.0 / math.sqrt(p["head_dim"]),
                   impl.layout == "bshd")

    @property
    def backward(self) -> bool:
        return self.p["mode"] == "fwd+bwd"

    def inputs(self, seq: int, kv: int, seed: int) -> tuple[Any, ...]:
        """q, k, v and the output gradient, drawn from `seed` on the CPU, in the impl's layout."""
        import torch

        p = self.p
        gen = torch.Generator(device="cpu").manual_seed(seed)
        shapes = [(p["batch"], p["heads"], seq, p["head_dim"]),
                  (p["batch"], p["kv_heads"], kv, p["head_dim"]),
                  (p["batch"], p["kv_heads"], kv, p["head_dim"]),
                  (p["batch"], p["heads"], seq, p["head_dim"])]
        device = torch.device("cuda:0" if p["device"] == "cuda" else "cpu")
        ts = [torch.randn(s, generator=gen).to(device=device, dtype=torch_dtype(p["dtype"]))
              for s in shapes]
        if self.bshd:
            ts = [t.transpose(1, 2).contiguous() for t in ts]
        return tuple(t.requires_grad_(self.backward and i < 3) for i, t in enumerate(ts))

    def as_bhsd(self, t: Any) -> Any:
        return t.transpose(1, 2) if self.bshd else t

    def call(self, q: Any, k: Any, v: Any, dout: Any) -> Any:
        """The timed call: the forward under no_grad, or forward and backward."""
        import torch

        if not self.backward:
            with torch.no_grad():
                return self.fn(q, k, v, causal=self.p["causal"], scale=self.scale, **self.tile)
        _clear_grads(q, k, v)
        out = self.fn(q, k, v, causal=self.p["causal"], scale=self.scale, **self.tile)
        out.backward(dout)
        return out.detach()

    def output_error(self, out: Any, q: Any, k: Any, v: Any, limit: int) -> tuple[float, int]:
        """(max abs error against the fp64 reference, rows checked) over spread query rows."""
        from llmbench.kernels.reference import check_rows, reference_attention

        device = out.device
        rows = check_rows(self.p["seq"], limit)
        ref = reference_attention(*(self.as_bhsd(t).detach() for t in (q, k, v)),
                                  causal=self.p["causal"], scale=self.scale,
                                  rows=rows.to(device), window=self.p.get("window"))
        err = (self.as_bhsd(out)[:, :, rows.to(device)].double() - ref).abs().max().item()
        return err, int(rows.numel())

    def gradient_check(self, payload: dict[str, Any]) -> dict[str, Any]:
        """dq, dk, dv against fp64 at the check size (`check_seq`)."""
        p = self.p
        check_q, check_kv = check_lengths(p["seq"], self.problem.kv_seq, payload["check_seq"])
        out = {"grad_max_abs_error": _grad_error(
            self.fn, self.inputs(check_q, check_kv, payload["seed"] + 1), p["causal"],
            self.scale, self.tile, self.as_bhsd), "grad_check_seq": check_q}
        if "kv_seq" in p:
            out["grad_check_kv_seq"] = check_kv
        return out


def check_lengths(seq: int, kv_seq: int, limit: int) -> tuple[int, int]:
    """Query and key lengths of the gradient check: the case's own when both fit in `limit`,
    else both scaled down by the same factor (each at least 1), so that the check keeps the
    case's shape (one query row against many keys, rows before the first key)."""
    longest = max(seq, kv_seq)
    if longest <= limit:
        return seq, kv_seq
    return max(1, seq * limit // longest), max(1, kv_seq * limit // longest)


def _grad_error(fn, inputs, causal, scale, tile, as_bhsd) -> float:  # noqa: ANN001
    """Max abs difference of dq, dk, dv from the fp64 reference's, at the check size."""
    import torch

    from llmbench.kernels.reference import reference_attention

    q, k, v, dout = inputs
    out = fn(q, k, v, causal=causal, scale=scale, **tile)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (as_bhsd(t).detach().double().requires_grad_() for t in (q, k, v))
    ref = reference_attention(q64, k64, v64, causal=causal, scale=scale,
                              window=tile.get("window"))
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), as_bhsd(dout).double())
    return max((as_bhsd(g).double() - r).abs().max().item()
               for g, r in zip(grads, ref_grads, strict=True))
