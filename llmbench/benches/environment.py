"""What `llmbench env` reports: the device, versions, the profile in force and why, the default
dtype, the peak figures and their source, the forward and backward tiles the profile gives, and
which attention implementations can run here (and why not).

`env --json` writes `EnvReport`: a document of its own kind (a machine, not a benchmark's cases),
sharing the results documents' `schema_version`, `tool` and `env`, and told apart from them by
having no `benchmark`; `llmbench schema` describes both (`cli/schema.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from llmbench import kernels
from llmbench.core import hardware
from llmbench.core.calibration import Calibration, load_calibration
from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo
from llmbench.core.profiles import AttentionTile, KernelTile, PeakFigures, select_profile
from llmbench.core.results import SCHEMA_VERSION, EnvInfo, ToolInfo
from llmbench.kernels.problem import AttentionProblem

TILE_HEAD_DIMS = (64, 128, 256)


class ImplAvailability(BaseModel):
    name: str
    summary: str
    memory: str
    available: bool
    reason: str | None = None


class TileRow(BaseModel):
    """The profile's tiles for one head dim."""

    head_dim: int
    head_dim_range: tuple[int, int]
    forward: KernelTile
    dkdv: KernelTile
    dq: KernelTile
    backward_from_forward: bool = False  # the profile gives no backward tiles for this range


class EnvReport(BaseModel):
    """The document `llmbench env --json` writes (no `benchmark`: not a results document)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    tool: ToolInfo = Field(default_factory=ToolInfo)
    env: EnvInfo
    hardware: HardwareInfo
    profile: dict[str, Any]
    tile: AttentionTile
    tiles: list[TileRow]
    head_dim: int
    dtype: str
    default_dtype: str
    dtype_unsupported: str | None = None
    peak: PeakFigures
    peak_tflops: float | None
    peak_memory_gbps: float | None
    # What `llmbench peak --save` measured on this device, when it did: the roofline's ceilings.
    calibration: Calibration | None = None
    implementations: list[ImplAvailability]


def describe(*, profile: str | None = None, device: str | None = None, head_dim: int = 64,
             dtype: str | None = None, hw: HardwareInfo | None = None) -> EnvReport:
    """The report for `hw` (default: this machine), so that it can be built for any record."""
    from llmbench.core.runner import build_env

    hw = hw or hardware.detect()
    device = hardware.usable_device(device, hw)
    if head_dim <= 0:
        raise UsageError(f"--head-dim: must be positive, got {head_dim}")
    default = hardware.default_dtype(device, hw)
    dtype = dtype or default
    choice = select_profile(hw, profile, device)
    tiles = []
    for d in sorted({*TILE_HEAD_DIMS, head_dim}):
        t = choice.profile.tile_for(d)
        back = t.backward()
        tiles.append(TileRow(head_dim=d, head_dim_range=t.head_dim, forward=t.forward,
                             dkdv=back.dkdv, dq=back.dq,
                             backward_from_forward=t.dkdv is None or t.dq is None))
    problem = AttentionProblem(
        batch=1, heads=8, kv_heads=8, seq=1024, head_dim=head_dim, dtype=dtype, causal=True,
        mode="fwd", device=device,
        compute_capability=hw.gpu.compute_capability if device == "cuda" and hw.gpu else None)
    impls = []
    for name in kernels.names():
        impl = kernels.get(name)
        why = impl.unavailable(problem)
        impls.append(ImplAvailability(name=name, summary=impl.summary, memory=impl.memory,
                                      available=why is None, reason=why))
    p = choice.profile
    peak = p.peak_figures(hw)
    return EnvReport(
        env=build_env(hw, choice, device),
        hardware=hw,
        profile={"name": p.name, "source": p.source, "reason": choice.reason,
                 "description": p.description,
                 "compute_capability": list(p.compute_capability or []) or None,
                 "shared_memory_per_block_kib": p.shared_memory_per_block_kib},
        tile=p.tile_for(head_dim), tiles=tiles, head_dim=head_dim, dtype=dtype,
        default_dtype=default, dtype_unsupported=hardware.dtype_unsupported(device, dtype, hw),
        peak=peak, peak_tflops=peak.tflops.get(dtype), peak_memory_gbps=peak.memory_gbps,
        calibration=load_calibration(hw, device), implementations=impls,
    )
