"""What `llmbench env` reports: the device, versions, the profile in force and why, the tile
config it gives, and which attention implementations can run here (and why not)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmbench import __version__, kernels
from llmbench.core import hardware
from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo
from llmbench.core.profiles import AttentionTile, select_profile
from llmbench.core.results import EnvInfo
from llmbench.kernels.problem import AttentionProblem


class ImplAvailability(BaseModel):
    name: str
    summary: str
    memory: str
    available: bool
    reason: str | None = None


class EnvReport(BaseModel):
    schema_version: int = 1
    tool: dict[str, str] = {"name": "llmbench", "version": __version__}
    env: EnvInfo
    hardware: HardwareInfo
    profile: dict[str, Any]
    tile: AttentionTile
    head_dim: int
    dtype: str
    peak_tflops: float | None
    peak_memory_gbps: float | None
    implementations: list[ImplAvailability]


def describe(*, profile: str | None = None, device: str | None = None, head_dim: int = 64,
             dtype: str | None = None) -> EnvReport:
    from llmbench.core.runner import build_env

    hw = hardware.detect()
    device = device or hw.device
    if device == "cuda" and hw.device != "cuda":
        raise UsageError("--device cuda: no usable CUDA GPU here")
    if head_dim <= 0:
        raise UsageError(f"--head-dim: must be positive, got {head_dim}")
    dtype = dtype or ("bf16" if device == "cuda" else "fp32")
    choice = select_profile(hw, profile, device)
    tile = choice.profile.tile_for(head_dim)
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
    return EnvReport(
        env=build_env(hw, choice, device),
        hardware=hw,
        profile={"name": choice.profile.name, "source": choice.profile.source,
                 "reason": choice.reason, "description": choice.profile.description},
        tile=tile, head_dim=head_dim, dtype=dtype,
        peak_tflops=choice.profile.peak_tflops(dtype, hw),
        peak_memory_gbps=choice.profile.peak_memory_gbps(hw),
        implementations=impls,
    )
