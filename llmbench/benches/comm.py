"""`llmbench comm`: how fast this machine's collectives are, per operation and message size.

Each case is one collective at one size, timed on every rank in lock step as nccl-tests
times it: `warmup` untimed calls, then `windows` times a barrier, the start mark, `iters`
back-to-back calls and the end mark (`core.timing.measure_windows`). A sample is a window's
time per call, averaged over the ranks (nccl-tests' default `-a 1`). Single calls are never
timed alone: for small messages that would time Python's dispatch and the ranks' skew.
Reported with nccl-tests' conventions (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md),
with S the size of the largest buffer and t the median time:

    algbw = S / t
    busbw = algbw * factor:  all_reduce 2(n-1)/n; all_gather, reduce_scatter, all_to_all
                             (n-1)/n; broadcast 1 at any n (one rank too: busbw = algbw)

busbw is comparable across operations and rank counts: it approaches the slowest link's
bandwidth. Next to each measurement, the ring model's time

    t = steps * alpha + factor * S / B     (steps: all_reduce 2(n-1), the others n-1)

with the latency alpha and bandwidth B fitted to the all_reduce sweep (relative least squares);
the other operations are predicted from those two numbers, not fitted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from llmbench.benches.distributed import GROUP_PANEL, Backend, DistConfig, DistributedBenchmark
from llmbench.benches.training import resolve_device
from llmbench.core.benchmark import CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.errors import UsageError
from llmbench.core.fit import two_term_fit
from llmbench.core.flags import DTYPE
from llmbench.core.hardware import HardwareInfo
from llmbench.core.results import CaseResult
from llmbench.core.units import DTYPE_BYTES, format_bytes, size_label

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all")
CommDtype = Literal["fp32", "fp16", "bf16", "fp64"]
DEFAULT_SIZES = {"cuda": (2**10, 2**30), "cpu": (2**10, 2**26)}  # 1 KiB..1 GiB, 1 KiB..64 MiB


def bus_factor(collective: str, n: int) -> float:
    """busbw / algbw (nccl-tests): all_reduce 2(n-1)/n; broadcast 1 at any n, one rank included
    (nccl-tests' BroadcastGetBw sets busbw = algbw); the others (n-1)/n."""
    if collective == "all_reduce":
        return 2 * (n - 1) / n
    if collective == "broadcast":
        return 1.0
    return (n - 1) / n


def ring_steps(collective: str, n: int) -> int:
    """Latency terms of the ring algorithm: all_reduce is a reduce-scatter then an all-gather."""
    return 2 * (n - 1) if collective == "all_reduce" else n - 1


class CommConfig(DistConfig):
    collectives: Annotated[list[str], Opt(f"{', '.join(COLLECTIVES)}.", default_text="all")
                           ] = list(COLLECTIVES)
    sizes: Annotated[list[int] | None, Opt(
        "Message sizes: 1KiB:1GiB (doubling) or 4KiB,1MiB,64MiB (small to large). The size of "
        "the largest buffer, as in nccl-tests.", parse="sizes",
        default_text="1KiB:1GiB on cuda, 1KiB:64MiB on cpu")] = None
    dtype: Annotated[CommDtype, DTYPE] = "fp32"
    windows: Annotated[int, Field(ge=1), Opt(
        "Timed windows per case: each is a barrier, then --iters calls; a sample is a "
        "window's time per call.", panel=GROUP_PANEL)] = 5

    @field_validator("collectives")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in COLLECTIVES:
                raise ValueError(f"unknown collective {name!r} (choose from "
                                 f"{', '.join(COLLECTIVES)})")
        if not v:
            raise ValueError("no collectives given")
        return list(dict.fromkeys(v))

    @field_validator("sizes")
    @classmethod
    def _ordered(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if any(s <= 0 for s in v):
                raise ValueError("sizes must be positive")
            if any(b <= a for a, b in zip(v, v[1:], strict=False)):
                raise ValueError("sizes out of order: list them from small to large")
        return v


def rounded_sizes(sizes: list[int], nproc: int, elem: int) -> list[int]:
    """Each size down to a whole number of elements per rank: what nccl-tests does for the
    operations that split the buffer among the ranks, applied to every operation so that one
    size means the same bytes in all of them."""
    unit = nproc * elem
    if sizes[0] < unit:
        raise UsageError(f"--sizes {format_bytes(sizes[0])}: below one {elem}-byte element per "
                         f"rank for {nproc} ranks ({unit} B)")
    return list(dict.fromkeys(s // unit * unit for s in sizes))


class CommCase(BaseModel):
    """A case's params: one collective at one size (the largest buffer's bytes)."""

    model_config = RECORD

    collective: str
    bytes: int
    dtype: CommDtype
    nproc: int
    backend: Backend
    device: Literal["cpu", "cuda"]


class RingModel(BaseModel):
    """The ring model fitted to the run: t = steps * latency + factor * bytes / bandwidth."""

    model_config = RECORD

    latency_us: float
    bandwidth_gb_per_s: float | None
    fitted_on: str
    points: int
    world_size: int
    formula: str


class CommSummary(BaseModel):
    model_config = RECORD

    ring_model: RingModel | None = None


class CommBenchmark(DistributedBenchmark[CommConfig]):
    name = "comm"
    help = """\
    Collectives over torch.distributed: time, algbw and busbw per size, and the ring model.

    Bus bandwidth uses nccl-tests' factors (all_reduce 2(n-1)/n; all_gather, reduce_scatter,
    all_to_all (n-1)/n; broadcast 1); the ring model's latency and bandwidth are fitted to the
    all_reduce sweep and predict every other case. Each result is checked after one call.
    Timed as nccl-tests does: after a barrier, --iters back-to-back calls per window.
    """
    renderer = "llmbench.report.dist:render_comm"
    plot = "llmbench.report.plots:comm"
    config_type = CommConfig
    params_type = CommCase
    summary_type = CommSummary
    metrics = (
        Metric("algbw_gb_per_s", "GB/s", "higher", "bytes / time (nccl-tests' algbw)",
               derived=True),
        Metric("busbw_gb_per_s", "GB/s", "higher", "algbw x the bus factor (nccl-tests' busbw)",
               derived=True),
        Metric("bus_factor", "x", "info", "nccl-tests' bus bandwidth factor for this op"),
        Metric("predicted_time_ms", "ms", "info", "the ring model's time, fitted to the run",
               derived=True),
        Metric("median_ms_per_rank", "ms", "info", "each rank's median time per call"),
        Metric("window_ms_by_rank", "ms", "info", "every rank's window samples, rank-major"),
        Metric("result_checked", "1", "info", "the result was checked after one call"),
        # The collective's own buffers on CUDA (fixed by op, size and ranks), noise on a CPU:
        # information, not a gate.
        Metric("peak_memory_bytes", "B", "info", "the largest rank's peak above its start"),
        Metric("peak_memory_bytes_per_rank", "B", "info", "each rank's peak above its start"),
        Metric("peak_memory_method", "", "info", "how the peak was measured"),
        # One process per rank runs every case and the allocator's cache is not emptied between
        # them: a case reports the largest buffer of any case before it.
        Metric("peak_reserved_bytes", "B", "info",
               "the largest rank's caching-allocator reserve (CUDA)"),
    )
    case_target = "llmbench.benches.comm:run_case"

    def resolve(self, config: CommConfig, hw: HardwareInfo) -> CommConfig:
        device = resolve_device(config, hw)
        group = self.group_settings(config, hw, device)
        lo, hi = DEFAULT_SIZES[device]
        sizes = config.sizes or [lo << k for k in range((hi // lo).bit_length())]
        return config.model_copy(update={
            **group, "device": device,
            "sizes": rounded_sizes(sizes, group["nproc"], DTYPE_BYTES[config.dtype])})

    def plan(self, config: CommConfig, ctx: PlanContext) -> list[CasePlan]:
        return [CasePlan(
            name=f"{c}/size={size_label(s)}",
            params={"collective": c, "bytes": s, "dtype": config.dtype, "nproc": config.nproc,
                    "backend": config.backend, "device": config.device},
            run_args={"timing": {"warmup": config.warmup, "ops": config.iters,
                                 "windows": config.windows}})
            for c in config.collectives for s in config.sizes]

    def summarize(self, config: CommConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        n = config.nproc
        ok = [c for c in cases if c.ok and c.time()]
        fit_on = [c for c in ok if c.params["collective"] == "all_reduce"]
        source = "all_reduce"
        if len(fit_on) < 2:
            fit_on, source = ok, "all cases"
        fit = two_term_fit(
            [ring_steps(c.params["collective"], n) for c in fit_on],
            [bus_factor(c.params["collective"], n) * c.params["bytes"] for c in fit_on],
            [c.time().median / 1e3 for c in fit_on]) if n > 1 else None
        if fit is None:
            return cases, {"ring_model": None}
        alpha, beta = fit
        out = []
        for case in cases:
            if case.ok:
                p = case.params
                predicted = (ring_steps(p["collective"], n) * alpha
                             + bus_factor(p["collective"], n) * p["bytes"] * beta)
                case = case.model_copy(update={"metrics": {
                    **case.metrics, "predicted_time_ms": predicted * 1e3}})
            out.append(case)
        return out, {"ring_model": {
            "latency_us": alpha * 1e6,
            "bandwidth_gb_per_s": 1 / beta / 1e9 if beta > 0 else None,
            "fitted_on": source, "points": len(fit_on), "world_size": n,
            "formula": "t = steps * latency + busbw_factor * bytes / bandwidth"}}


# ------------------------------------------------------------------ one case, on every rank


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    from llmbench.core import tracing
    from llmbench.core.memory import measure_peak
    from llmbench.core.timing import TimeStats, measure_windows
    from llmbench.dist import collectives, group
    from llmbench.train.loop import TORCH_DTYPES, device_of

    p = payload["params"]
    n, rank = group.world_size(), group.rank()
    device = device_of(p["device"])
    cuda = device.type == "cuda"
    ops = []  # the timed collective, for --trace

    def case() -> tuple[TimeStats, list[list[float]]]:
        with group.local():
            op, check = collectives.prepare(p["collective"], p["bytes"],
                                            TORCH_DTYPES[p["dtype"]], device, rank, n)
            ops.append(op)
        with group.collective():
            op()
            if cuda:
                torch.cuda.synchronize()
        with group.local():
            check()
        with group.collective():
            mine = measure_windows(op, device=p["device"], barrier=group.barrier,
                                   **payload["timing"])
            windows, per_rank = group.mean_across_ranks(mine.samples)
        return TimeStats.from_samples(windows), per_rank

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    (stats, per_rank), peak = measure_peak(case, device=p["device"])
    with group.collective():
        peaks = group.gather([peak.peak_bytes,
                              torch.cuda.max_memory_reserved() if cuda else None])
        # --trace: one more call on every rank, after the memory figures (it would add to them)
        tracing.after_timing(ops[0], p["device"])
    seconds = stats.median / 1e3
    algbw = p["bytes"] / seconds / 1e9
    out = {
        "time_ms": stats.model_dump(),
        "algbw_gb_per_s": algbw,
        "busbw_gb_per_s": algbw * bus_factor(p["collective"], n),
        "bus_factor": bus_factor(p["collective"], n),
        "median_ms_per_rank": [TimeStats.from_samples(r).median for r in per_rank],
        # Every rank's window samples, rank-major (rank 0's windows, then rank 1's, ...).
        "window_ms_by_rank": [w for r in per_rank for w in r],
        "result_checked": True,
        # Buffers, the check's scratch, and the backend's own buffers on this rank, above
        # what it held before the case.
        "peak_memory_bytes": max(r[0] for r in peaks),
        "peak_memory_bytes_per_rank": [float(r[0]) for r in peaks],
        "peak_memory_method": peak.method,
    }
    if cuda:  # absolute: the caching allocator's reserve, NCCL's buffers are outside it
        out["peak_reserved_bytes"] = max(r[1] for r in peaks)
    return out
