"""`llmbench peak`: what this device really attains, beside what its profile says it could.

GEMM: C = A @ B (A is M x K, B is K x N) per dtype over square and LLM-shaped sizes (the MLP's
up-projection tokens x 4h x h and down-projection tokens x h x 4h, as M x N x K); one call is
2·M·N·K FLOPs, TFLOP/s from the median time. fp32 is true fp32 (TF32 off), tf32 is fp32 inputs
with torch.backends.cuda.matmul.allow_tf32 set for that case alone, fp8 is e4m3 inputs through
torch._scaled_mm (per-tensor scales, bf16 out, B column-major as it requires, default
accumulation). The output is preallocated (`out=`), so a call times the product, not an
allocation.

Memory bandwidth by STREAM's conventions: copy `a.copy_(b)` moves 2 x the array's bytes per
call (one read, one write), triad `torch.add(b, c, alpha=s, out=a)` 3 x (two reads, one
write); arrays far larger than the last-level cache; the best of the sweep. On a GPU also
pinned host <-> device copies (non_blocking, timed by CUDA events), the transfer's bytes once.

`--save` keeps the best figures as this device's calibration (`core.calibration`), which the
other benchmarks read to show "% of attainable" beside "% of peak".
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.errors import UsageError
from llmbench.core.flags import DTYPE, Device, flag_like
from llmbench.core.hardware import HardwareInfo, dtype_unsupported, usable_device
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy
from llmbench.core.units import format_bytes, size_label

PeakDtype = Literal["fp32", "tf32", "fp16", "bf16", "fp8"]
GPU_DTYPES: tuple[PeakDtype, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8")
Kind = Literal["gemm", "copy", "triad", "h2d", "d2h"]
MEMORY_KINDS: tuple[Kind, ...] = ("copy", "triad", "h2d", "d2h")

# Defaults by device. CPU: every call well under a second on 2 cores (2048^3 fp32 is ~60 ms on
# a 2-core AVX-512 Xeon); the STREAM arrays follow STREAM's rule, each at least 4 x the
# last-level cache (`cpu_stream_sizes`). GPU: up to 8192 and a 4096-hidden MLP at 8192 tokens,
# arrays of 1 and 2 GiB (an H100's L2 is 50 MB, a B200's 126 MB).
DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"square": [1024, 2048], "hidden": [1024], "tokens": 2048,
            "stream_sizes": None, "transfer_sizes": None},
    "cuda": {"square": [1024, 2048, 4096, 8192], "hidden": [4096], "tokens": 8192,
             "stream_sizes": [2**30, 2 * 2**30], "transfer_sizes": [256 * 2**20, 2**30]},
}
_ELEMENT_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
_STREAM_ELEMENT = 4  # the copy and triad arrays are fp32


# ---------------------------------------------------------------------------- conventions


def gemm_flops(m: int, n: int, k: int) -> int:
    """FLOPs of C[M,N] = A[M,K] @ B[K,N]: one multiply and one add per (m, n, k)."""
    return 2 * m * n * k


def moved_bytes(kind: str, array_bytes: int) -> int:
    """Bytes one call moves, by STREAM's counting: copy reads one array and writes one (2x),
    triad reads two and writes one (3x); a host <-> device copy moves its bytes once."""
    return {"copy": 2, "triad": 3, "h2d": 1, "d2h": 1}[kind] * array_bytes


def tflops_of(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


def gbps_of(nbytes: float, ms: float) -> float:
    """GB/s in decimal gigabytes (1e9 B), as STREAM and the datasheets count."""
    return nbytes / (ms * 1e-3) / 1e9


def shape_text(m: int, n: int, k: int) -> str:
    return f"{m} x {n} x {k}"


def cpu_last_level_cache_bytes() -> int | None:
    """The largest cache of CPU 0 as Linux reports it (sysfs), or None where it does not."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        if text[:-1].isdigit() and text[-1] in units:
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes) if sizes else None


def cpu_stream_sizes(llc_bytes: int | None) -> list[int]:
    """STREAM's rule on a CPU: each array at least 4 x the last-level cache (32 MiB assumed
    where it is unknown), a power of two, at least 64 MiB; then twice that while it stays
    within 1 GiB (a triad holds three arrays)."""
    need = 4 * (llc_bytes or 32 * 2**20)
    size = 64 * 2**20
    while size < need:
        size *= 2
    return [size, 2 * size] if 2 * size <= 2**30 else [size]


# ---------------------------------------------------------------------------- declaration


def _positive(v: list[int] | None) -> list[int] | None:
    if v is not None and min(v) < 1:
        raise ValueError("must be positive")
    return v


class PeakConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Annotated[PeakDtype | None, flag_like(
        DTYPE, help="Of the GEMMs: fp32 (TF32 off), tf32 (fp32 inputs on TF32 tensor cores), "
        "fp16, bf16, fp8 (e4m3 through torch._scaled_mm).",
        default_text="every dtype this device computes: fp32 on a CPU; on a GPU fp32, tf32, "
        "fp16, bf16 and fp8 as its compute capability allows")] = None
    square: Annotated[list[int] | None, Field(min_length=1), Opt(
        "Square GEMMs N x N x N: 2048 | 1024,4096 | 1024:8192 (doubling).", parse="sweep",
        default_text="1024,2048 on a CPU, 1024:8192 on a GPU")] = None
    hidden: Annotated[list[int] | None, Field(min_length=1), Opt(
        "Hidden sizes h of the LLM-shaped GEMMs: tokens x 4h x h (an MLP's up-projection) and "
        "tokens x h x 4h (its down-projection), as M x N x K.", parse="sweep",
        default_text="1024 on a CPU, 4096 on a GPU")] = None
    tokens: Annotated[int | None, Field(gt=0), Opt(
        "Tokens (M) of the LLM-shaped GEMMs.", default_text="2048 on a CPU, 8192 on a GPU")] = None
    stream_sizes: Annotated[list[int] | None, Field(min_length=1), Opt(
        "Bytes per array of the STREAM copy and triad: 256MiB | 64MiB,256MiB.",
        flag="--stream-size", parse="sizes",
        default_text="on a CPU 4 x the last-level cache or more (STREAM's rule, at least "
        "64MiB), 1GiB,2GiB on a GPU")] = None
    transfer_sizes: Annotated[list[int] | None, Field(min_length=1), Opt(
        "Bytes per pinned host <-> device copy (GPU only).", flag="--transfer-size",
        parse="sizes", default_text="256MiB,1GiB on a GPU")] = None
    save: Annotated[bool, Opt(
        "Keep the best figures as this device's calibration (in $LLMBENCH_CACHE/calibration, "
        "keyed by device name, driver and torch version): other benchmarks then show "
        "\"% of attainable\".", negatable=False)] = False
    device: Device = None
    dtypes: list[PeakDtype] = []  # resolved: the GEMMs' dtypes
    timing: TimingPolicy = Field(default_factory=lambda: TimingPolicy(max_time_s=2.0))

    _sizes_positive = field_validator("square", "hidden")(_positive)


class PeakCase(BaseModel):
    """A case's params: one GEMM shape in one dtype, or one memory sweep point."""

    model_config = RECORD

    kind: Kind
    device: Literal["cpu", "cuda"]
    dtype: PeakDtype | None = None  # gemm, from here to label
    m: int | None = None
    n: int | None = None
    k: int | None = None
    shape: str | None = None  # "M x N x K"
    label: str | None = None  # square, mlp-up, mlp-down
    array_bytes: int | None = None  # copy, triad: bytes per array; h2d, d2h: per copy


class PeakGemm(BaseModel):
    """The best GEMM of one dtype, beside the profile's figure."""

    model_config = RECORD

    tflops: float
    shape: str  # "M x N x K"
    theoretical_tflops: float | None = None
    efficiency_pct: float | None = None


class PeakBandwidth(BaseModel):
    """The best of one memory kind's sweep, beside the profile's figure where it gives one."""

    model_config = RECORD

    gbps: float
    array_bytes: int
    theoretical_gbps: float | None = None
    efficiency_pct: float | None = None


class PeakSummary(BaseModel):
    model_config = RECORD

    device: Literal["cpu", "cuda"]
    gemm: dict[str, PeakGemm] = {}  # by dtype
    bandwidth: dict[str, PeakBandwidth] = {}  # copy, triad, h2d, d2h
    theoretical_memory_gbps: float | None = None
    memory_note: str | None = None  # why no memory efficiency is given
    last_level_cache_bytes: int | None = None  # the CPU's last-level cache, the GPU's L2
    cache_note: str | None = None  # STREAM arrays under 4 x that cache: they may measure it
    source: str  # where the theoretical figures come from (the profile's source line)
    calibration: str | None = None  # where --save keeps the calibration


def _gpu_reason(dtype: str, hw: HardwareInfo) -> str | None:
    cc = hw.gpu.compute_capability if hw.gpu else (0, 0)
    here = f"this GPU is {cc[0]}.{cc[1]}"
    if dtype == "tf32" and cc < (8, 0):
        return f"TF32 tensor cores need compute capability >= 8.0 (Ampere), {here}"
    if dtype == "fp8" and cc < (8, 9):
        return (f"fp8 GEMMs (torch._scaled_mm) need compute capability >= 8.9 (Ada, Hopper), "
                f"{here}")
    return dtype_unsupported("cuda", dtype, hw)


def dtype_reason(device: str, dtype: str, hw: HardwareInfo) -> str | None:
    """Why the GEMM of `dtype` cannot run on `device` here, or None."""
    if device == "cuda":
        return _gpu_reason(dtype, hw)
    if dtype == "tf32":
        return "TF32 is a mode of NVIDIA tensor cores; on a CPU fp32 is computed in fp32"
    if dtype == "fp8":
        return ("fp8 GEMMs (torch._scaled_mm) are measured on NVIDIA GPUs of compute "
                "capability 8.9 or newer")
    return dtype_unsupported(device, dtype, hw)


class PeakBenchmark(Benchmark[PeakConfig]):
    name = "peak"
    help = """What this device attains: GEMM TFLOP/s per dtype, memory and host copy GB/s.

    GEMMs C = A @ B over square and LLM-shaped sizes (2·M·N·K FLOPs a call), STREAM copy
    (2 x the array's bytes a call) and triad (3 x), and on a GPU pinned host <-> device
    copies. The table gives the sweep, then the best per dtype and kind beside the profile's
    theoretical figure and the efficiency. --save keeps the best figures as this device's
    calibration: other benchmarks then show "% of attainable".
    """
    config_type = PeakConfig
    params_type = PeakCase
    summary_type = PeakSummary
    renderer = "llmbench.report.peak:render"
    no_plot = "a few shapes per dtype and sizes per kind: the table lists each and the best"
    case_target = "llmbench.benches.peak:run_case"
    # Each case is one matmul or one copy, timed for a second or two: a process of its own
    # would cost about as much as the case (importing torch takes ~1.3 s on a 2-core VM, and on
    # a GPU each process adds a CUDA context, for each of ~38 cases), and the required-memory
    # check keeps a case from running out of memory. Cases run in the llmbench process, one
    # after the other; one that fails is still recorded as such and the run goes on.
    isolated = False
    run_options = ("max_time", "profile")
    metrics = (
        Metric("tflops", "TFLOP/s", "higher", "2·M·N·K / median time", derived=True),
        Metric("gbps", "GB/s", "higher", "bytes moved / median time (STREAM's counting)",
               derived=True),
        Metric("of_peak_pct", "%", "higher", "as a share of the profile's theoretical figure",
               derived=True),
        Metric("flops_per_call", "FLOP", "info", "2·M·N·K"),
        Metric("bytes_per_call", "B", "info", "copy: 2 x the array, triad: 3 x, host <-> "
               "device: the transfer"),
    )

    def resolve(self, config: PeakConfig, hw: HardwareInfo) -> PeakConfig:
        device = usable_device(config.device, hw)
        if config.dtype is not None:
            reason = dtype_reason(device, config.dtype, hw)
            if reason:
                raise UsageError(f"--dtype {config.dtype}: {reason}")
            dtypes = [config.dtype]
        elif device == "cuda":
            dtypes = [d for d in GPU_DTYPES if dtype_reason(device, d, hw) is None]
        else:
            dtypes = ["fp32"]
        if device == "cpu" and config.transfer_sizes:
            raise UsageError("--transfer-size: host <-> device copies need a GPU; this run is "
                             "on the CPU")
        defaults = {**DEFAULTS[device]}
        if device == "cpu":
            defaults["stream_sizes"] = cpu_stream_sizes(cpu_last_level_cache_bytes())
        update: dict[str, Any] = {"device": device, "dtypes": dtypes}
        for field in ("square", "hidden", "tokens", "stream_sizes", "transfer_sizes"):
            value = getattr(config, field)
            update[field] = defaults[field] if value is None else value
        resolved = config.model_copy(update=update)
        if "fp8" in dtypes:
            odd = [d for m, n, k in _shapes(resolved) for d in (m, n, k) if d % 16]
            if odd:
                flag = "--square" if odd[0] in resolved.square else "--hidden or --tokens"
                raise UsageError(f"{flag}: fp8 GEMMs (torch._scaled_mm) need every dimension "
                                 f"a multiple of 16, got {odd[0]}")
        return resolved

    def plan(self, config: PeakConfig, ctx: PlanContext) -> list[CasePlan]:
        device = config.device or ctx.device
        run_args = {"timing": config.timing.model_dump()}
        plans = []
        for dtype in config.dtypes:
            for (m, n, k), label in zip(_shapes(config), _labels(config), strict=True):
                e = _ELEMENT_BYTES[dtype]
                out = 2 if dtype == "fp8" else e  # fp8's product is bf16
                need = (m * k + k * n) * e + m * n * out
                plans.append(CasePlan(
                    name=f"gemm {dtype} {m}x{n}x{k}",
                    params={"kind": "gemm", "device": device, "dtype": dtype, "m": m, "n": n,
                            "k": k, "shape": shape_text(m, n, k), "label": label},
                    run_args=run_args, required_memory_bytes=need))
        for kind in ("copy", "triad"):
            for size in config.stream_sizes:
                plans.append(CasePlan(
                    name=f"{kind} {size_label(size)}",
                    params={"kind": kind, "device": device, "array_bytes": size},
                    run_args=run_args, required_memory_bytes=(2 if kind == "copy" else 3) * size))
        if device == "cuda":
            for kind in ("h2d", "d2h"):
                for size in config.transfer_sizes or []:
                    plans.append(CasePlan(
                        name=f"{kind} {size_label(size)}",
                        params={"kind": kind, "device": device, "array_bytes": size},
                        run_args=run_args, required_memory_bytes=size))
        return plans

    def summarize(self, config: PeakConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        figures = ctx.profile.peak_figures(ctx.hw)
        memory_peak = figures.memory_gbps
        out: list[CaseResult] = []
        for c in cases:
            theory = (figures.tflops.get(c.params.get("dtype") or "")
                      if c.params["kind"] == "gemm" else
                      memory_peak if c.params["kind"] in ("copy", "triad") else None)
            value = c.metrics.get("tflops") or c.metrics.get("gbps")
            if c.ok and theory and isinstance(value, (int, float)):
                c = c.model_copy(update={"metrics": {**c.metrics,
                                                     "of_peak_pct": 100 * value / theory}})
            out.append(c)
        ok = [c for c in out if c.ok]
        gemm: dict[str, PeakGemm] = {}
        for dtype in config.dtypes:
            runs = [c for c in ok if c.params["kind"] == "gemm" and c.params["dtype"] == dtype
                    and isinstance(c.metrics.get("tflops"), (int, float))]
            if runs:
                best = max(runs, key=lambda c: c.metrics["tflops"])
                theory = figures.tflops.get(dtype)
                gemm[dtype] = PeakGemm(
                    tflops=best.metrics["tflops"], shape=best.params["shape"],
                    theoretical_tflops=theory,
                    efficiency_pct=100 * best.metrics["tflops"] / theory if theory else None)
        bandwidth: dict[str, PeakBandwidth] = {}
        for kind in MEMORY_KINDS:
            runs = [c for c in ok if c.params["kind"] == kind
                    and isinstance(c.metrics.get("gbps"), (int, float))]
            if runs:
                best = max(runs, key=lambda c: c.metrics["gbps"])
                theory = memory_peak if kind in ("copy", "triad") else None
                bandwidth[kind] = PeakBandwidth(
                    gbps=best.metrics["gbps"], array_bytes=best.params["array_bytes"],
                    theoretical_gbps=theory,
                    efficiency_pct=100 * best.metrics["gbps"] / theory if theory else None)
        note = None
        if memory_peak is None:
            note = (f"profile {ctx.profile.name} gives no memory bandwidth: no efficiency for "
                    "copy and triad" if ctx.profile.kind == "cpu" else
                    f"no theoretical memory bandwidth ({figures.source})")
        cache = _last_level_cache(ctx.device)
        small = [s for s in config.stream_sizes or [] if cache and s < 4 * cache]
        cache_note = (f"arrays of {', '.join(format_bytes(s) for s in small)} are under 4 x "
                      f"the last-level cache ({format_bytes(cache)}): copy and triad may "
                      "measure the cache, not memory" if small else None)
        calibration = None
        if config.save and gemm:
            from llmbench.core.calibration import calibration_path

            calibration = str(calibration_path(ctx.hw, ctx.device))
        summary = PeakSummary(device=ctx.device, gemm=gemm, bandwidth=bandwidth,
                              theoretical_memory_gbps=memory_peak, memory_note=note,
                              last_level_cache_bytes=cache, cache_note=cache_note,
                              source=figures.source, calibration=calibration)
        return out, summary.model_dump(mode="json")

    def finish(self, config: PeakConfig, document: Any) -> str | None:
        if not config.save:
            return None
        from llmbench.core import hardware
        from llmbench.core.calibration import save_calibration

        summary = PeakSummary.model_validate(document.summary)
        if not summary.gemm:
            return "no calibration saved: no GEMM case ran ok"
        hw = hardware.detect()
        path = save_calibration(calibration_of(summary, hw), hw, summary.device)
        return f"calibration saved to {path}: other benchmarks now show % of attainable"


def calibration_of(summary: PeakSummary, hw: HardwareInfo) -> Any:
    """The calibration `--save` keeps: the summary's best figures, keyed for this machine."""
    from llmbench import __version__
    from llmbench.core.calibration import Calibration, calibration_key

    def bw(kind: str) -> float | None:
        best = summary.bandwidth.get(kind)
        return best.gbps if best else None

    return Calibration(
        **calibration_key(hw, summary.device), llmbench=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        gemm_tflops={d: g.tflops for d, g in summary.gemm.items()},
        gemm_shape={d: g.shape for d, g in summary.gemm.items()},
        copy_gbps=bw("copy"), triad_gbps=bw("triad"), h2d_gbps=bw("h2d"), d2h_gbps=bw("d2h"))


def _last_level_cache(device: str) -> int | None:
    if device != "cuda":
        return cpu_last_level_cache_bytes()
    try:
        import torch

        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or None
    except Exception:  # an older torch or a device that does not say
        return None


def _shapes(config: PeakConfig) -> list[tuple[int, int, int]]:
    """(M, N, K) of every GEMM: the squares, then per hidden size the MLP's up and down."""
    t = config.tokens or 0
    shapes = [(s, s, s) for s in config.square or []]
    for h in config.hidden or []:
        shapes += [(t, 4 * h, h), (t, h, 4 * h)]
    return shapes


def _labels(config: PeakConfig) -> list[str]:
    return ["square"] * len(config.square or []) + ["mlp-up", "mlp-down"] * len(
        config.hidden or [])


# ---------------------------------------------------------------------------- the cases


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    p = payload["params"]
    policy = TimingPolicy(**payload["timing"])
    try:
        if p["kind"] == "gemm":
            return _gemm(torch, p, policy)
        if p["kind"] in ("copy", "triad"):
            return _stream(torch, p, policy)
        return _transfer(torch, p, policy)
    finally:
        if p["device"] == "cuda":
            torch.cuda.empty_cache()  # the next case's free-memory check sees this one's gone


def _gemm(torch: Any, p: dict[str, Any], policy: TimingPolicy) -> dict[str, Any]:
    from llmbench.core.timing import measure

    device, dtype, m, n, k = p["device"], p["dtype"], p["m"], p["n"], p["k"]
    gen = torch.Generator(device=device).manual_seed(0)
    if dtype == "fp8":
        e4m3 = torch.float8_e4m3fn
        a = torch.randn(m, k, device=device, generator=gen).to(e4m3)
        b = torch.randn(n, k, device=device, generator=gen).to(e4m3).t()  # K x N, column-major
        one = torch.tensor(1.0, device=device)
        c = torch.empty(m, n, device=device, dtype=torch.bfloat16)

        def call() -> object:
            return torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                    out=c)
    else:
        t = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
             "bf16": torch.bfloat16}[dtype]
        a = torch.randn(m, k, device=device, dtype=t, generator=gen)
        b = torch.randn(k, n, device=device, dtype=t, generator=gen)
        c = torch.empty(m, n, device=device, dtype=t)

        def call() -> object:
            return torch.mm(a, b, out=c)

    matmul = torch.backends.cuda.matmul
    tf32_before = matmul.allow_tf32
    if device == "cuda":  # fp32 is fp32: TF32 only in the tf32 case, and back afterwards
        matmul.allow_tf32 = dtype == "tf32"
    try:
        stats = measure(call, device=device, policy=policy)
    finally:
        matmul.allow_tf32 = tf32_before
    flops = gemm_flops(m, n, k)
    return {"time_ms": stats, "tflops": tflops_of(flops, stats.median), "flops_per_call": flops}


def _stream(torch: Any, p: dict[str, Any], policy: TimingPolicy) -> dict[str, Any]:
    from llmbench.core.timing import measure

    device, kind, size = p["device"], p["kind"], p["array_bytes"]
    count = size // _STREAM_ELEMENT
    a = torch.empty(count, device=device, dtype=torch.float32)
    b = torch.full((count,), 1.0, device=device, dtype=torch.float32)
    if kind == "copy":
        def call() -> object:
            return a.copy_(b)
    else:
        c = torch.full((count,), 2.0, device=device, dtype=torch.float32)

        def call() -> object:
            return torch.add(b, c, alpha=3.0, out=a)

    stats = measure(call, device=device, policy=policy)
    expected = 1.0 if kind == "copy" else 7.0
    if float(a[-1]) != expected:  # the call did its work
        raise RuntimeError(f"{kind}: a[-1] is {float(a[-1])}, expected {expected}")
    nbytes = moved_bytes(kind, count * _STREAM_ELEMENT)
    return {"time_ms": stats, "gbps": gbps_of(nbytes, stats.median), "bytes_per_call": nbytes}


def _transfer(torch: Any, p: dict[str, Any], policy: TimingPolicy) -> dict[str, Any]:
    from llmbench.core.timing import measure

    kind, size = p["kind"], p["array_bytes"]
    host = torch.full((size,), 1, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(size, dtype=torch.uint8, device="cuda")
    if kind == "h2d":
        def call() -> object:
            return dev.copy_(host, non_blocking=True)
    else:
        dev.fill_(2)

        def call() -> object:
            return host.copy_(dev, non_blocking=True)

    stats = measure(call, device="cuda", policy=policy)
    nbytes = moved_bytes(kind, size)
    return {"time_ms": stats, "gbps": gbps_of(nbytes, stats.median), "bytes_per_call": nbytes}
