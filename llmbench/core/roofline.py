"""The roofline model: how far a case sits from what this device can do at its intensity.

Williams, Waterman and Patterson, "Roofline: an insightful visual performance model for
multicore architectures" (CACM 52(4), 2009): a computation of F FLOPs that must move B bytes
to and from memory has arithmetic intensity I = F / B (FLOP/byte) and can at best run at

    attainable FLOP/s = min(peak FLOP/s, I x bandwidth)

It is memory-bound when I x bandwidth < peak (left of the ridge point I* = peak / bandwidth),
compute-bound otherwise. A case's share of its roofline is the time the roofline allows,
max(F / peak, B / bandwidth), over the time it took: for F > 0 that is its FLOP/s over the
attainable FLOP/s, and it stays defined for a call that does no counted FLOPs (an optimizer
step: its share is the bandwidth it reached).

The two ceilings come from this device's calibration (`llmbench peak --save`: the best GEMM
TFLOP/s measured for the dtype, the best of STREAM copy and triad) when one is saved, else
from the profile's theoretical figures; the summary says which. Pure: no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llmbench.core.declare import RECORD, Metric


@dataclass(frozen=True)
class Ceilings:
    """The device's two ceilings for one dtype, and where each came from."""

    peak_tflops: float | None
    bandwidth_gbps: float | None
    source: str
    calibrated_tflops: float | None = None  # the calibration's GEMM figure, when one is saved
    theoretical_tflops: float | None = None  # the profile's, for "% of peak"

    @property
    def ridge_intensity(self) -> float | None:
        """FLOP/byte where the two ceilings meet."""
        if not self.peak_tflops or not self.bandwidth_gbps:
            return None
        return self.peak_tflops * 1e12 / (self.bandwidth_gbps * 1e9)

    def record(self) -> dict[str, Any]:
        return {"peak_tflops": self.peak_tflops, "bandwidth_gbps": self.bandwidth_gbps,
                "ridge_intensity": self.ridge_intensity, "source": self.source}


class RooflineCeilings(BaseModel):
    """The ceilings a document's roofline figures used (a summary's `roofline`)."""

    model_config = RECORD

    peak_tflops: float | None
    bandwidth_gbps: float | None
    ridge_intensity: float | None
    source: str


def ceilings(profile: Any, hw: Any, device: str, dtype: str) -> Ceilings:
    """The ceilings for `dtype` on `device`: the saved calibration's where it has a figure,
    the profile's theoretical one otherwise."""
    from llmbench.core.calibration import load_calibration

    figures = profile.peak_figures(hw)
    cal = load_calibration(hw, device)
    cal_tflops = cal.gemm_tflops.get(dtype) if cal is not None else None
    cal_bw = cal.bandwidth_gbps if cal is not None else None
    measured = f"measured ({cal.describe()})" if cal is not None else ""
    theory = f"theoretical (profile {profile.name}: {figures.source})"
    compute = (measured if cal_tflops else theory if figures.tflops.get(dtype)
               else f"no {dtype} figure")
    bandwidth = (measured if cal_bw else theory if figures.memory_gbps
                 else "none in the profile (`llmbench peak --save` measures it)")
    source = (f"compute and bandwidth {compute}" if compute == bandwidth
              else f"compute {compute}; bandwidth {bandwidth}")
    return Ceilings(peak_tflops=cal_tflops or figures.tflops.get(dtype),
                    bandwidth_gbps=cal_bw or figures.memory_gbps, source=source,
                    calibrated_tflops=cal_tflops, theoretical_tflops=figures.tflops.get(dtype))


def place(flops: float, bytes_moved: float, time_s: float | None, ceil: Ceilings
          ) -> dict[str, Any]:
    """A call's roofline figures: intensity, the attainable TFLOP/s there, the binding ceiling
    and, given its time, its share of the roofline. Figures that need a missing ceiling are
    left out."""
    out: dict[str, Any] = {}
    if bytes_moved <= 0:
        return out
    intensity = flops / bytes_moved
    out["arithmetic_intensity"] = intensity
    peak, bw = ceil.peak_tflops, ceil.bandwidth_gbps
    if not peak or not bw:
        return out
    memory_tflops = intensity * bw * 1e9 / 1e12
    out["roofline_tflops"] = min(peak, memory_tflops)
    out["bound"] = "memory" if memory_tflops < peak else "compute"
    if time_s and time_s > 0:
        allowed = max(flops / (peak * 1e12), bytes_moved / (bw * 1e9))
        out["roofline_pct"] = 100.0 * allowed / time_s
    return out


def utilization(flops: float, time_s: float | None, ceil: Ceilings) -> dict[str, Any]:
    """Achieved TFLOP/s, as a share of the theoretical peak and, with a calibration, of the
    attainable (measured GEMM) peak."""
    if not time_s or time_s <= 0 or flops <= 0:
        return {}
    achieved = flops / time_s / 1e12
    out: dict[str, Any] = {"throughput_tflops": achieved}
    if ceil.theoretical_tflops:
        out["peak_utilization_pct"] = 100.0 * achieved / ceil.theoretical_tflops
    if ceil.calibrated_tflops:
        out["attainable_utilization_pct"] = 100.0 * achieved / ceil.calibrated_tflops
    return out


# The roofline metrics, declared once for every benchmark that reports them.
METRICS: tuple[Metric, ...] = (
    Metric("throughput_tflops", "TFLOP/s", "higher",
           "the FLOPs the call needs per second of its median time", derived=True),
    Metric("peak_utilization_pct", "%", "higher",
           "throughput as a share of the profile's theoretical peak TFLOP/s", derived=True),
    Metric("bytes_moved", "B", "info",
           "bytes the call must move to and from memory (the model's lower bound)"),
    Metric("arithmetic_intensity", "FLOP/B", "info", "FLOPs per byte moved"),
    Metric("roofline_tflops", "TFLOP/s", "info",
           "attainable at this intensity: min(peak, intensity x bandwidth)"),
    Metric("bound", "", "info", "the ceiling that binds at this intensity: compute or memory"),
    Metric("roofline_pct", "%", "higher",
           "the time the roofline allows over the time taken", derived=True),
    Metric("attainable_utilization_pct", "%", "higher",
           "TFLOP/s as a share of this device's measured GEMM peak (llmbench peak --save)",
           derived=True),
)


def case_figures(flops: Any, bytes_moved: Any, case: Any, ceil: Ceilings) -> dict[str, Any]:
    """Utilization and roofline figures of an ok case (a CaseResult) that reported its FLOPs
    and bytes; {} when it did not."""
    stats = case.time()
    if not isinstance(flops, (int, float)) or not isinstance(bytes_moved, (int, float)):
        return {}
    time_s = stats.median / 1e3 if stats else None
    return {**utilization(flops, time_s, ceil),
            **place(flops, bytes_moved, time_s, ceil)}

# The figures `utilization` gives (a case placed by one FLOP count and measured by another).
UTILIZATION = ("throughput_tflops", "peak_utilization_pct", "attainable_utilization_pct")


def apply(cases: list[Any], ctx: Any, flops_key: str,
          dtype_of: Callable[[Any], str]) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Every ok case that reported `flops_key` and `bytes_moved`, with its utilization and
    roofline figures added (the ceilings of the dtype it computes in), and the ceilings used,
    by dtype (a summary's `roofline`)."""
    used: dict[str, Ceilings] = {}
    out = []
    for case in cases:
        if case.ok and flops_key in case.metrics and "bytes_moved" in case.metrics:
            dtype = dtype_of(case)
            if dtype not in used:
                used[dtype] = ceilings(ctx.profile, ctx.hw, ctx.device, dtype)
            figures = case_figures(case.metrics[flops_key], case.metrics["bytes_moved"], case,
                                   used[dtype])
            case = case.model_copy(update={"metrics": {**case.metrics, **figures}})
        out.append(case)
    return out, {dtype: ceil.record() for dtype, ceil in used.items()}
