"""What moves the figures besides the code under test, and whether the GPU throttled.

Settings of the process (torch's intra-op threads, its TF32 and cuDNN flags, the CPUs it may
run on, CUDA_VISIBLE_DEVICES) and of the GPU (clocks, power limit, temperature, persistence and
ECC modes) go into every result's env block. The GPU is read through NVML, which never creates
a CUDA context. Nothing here raises because NVML or a reading is missing: a reading that cannot
be taken is None.

Per case, on a CUDA device, the process running the case samples the GPU's SM clock and NVML's
clock-event (throttle) reasons at the case's start and at its end, with one NVML session per
case. A case is marked `gpu_throttled` (as NVIDIA's nvbench warns of throttling) when either
sample shows a thermal or power reason (`THROTTLING`), or an SM clock under `LOW_CLOCK` of its
maximum while the GPU was busy (an idle GPU lowers its clocks by design).

Neither torch nor pynvml is imported until a function here needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

# NVML's clock-event reason bits (nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*).
REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
GPU_IDLE = 0x1
# Thermal and power reasons: SW power cap, HW slowdown, SW and HW thermal slowdown, HW power
# brake. Application clocks, sync boost and display clocks are settings, not throttling.
THROTTLING = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
LOW_CLOCK = 0.75  # an SM clock under this fraction of its maximum, under load, is throttling

SAMPLED_TARGET = "llmbench.core.gpu_state:run_sampled"

# The env block's GPU fields, all None where there is no GPU or NVML cannot say.
GPU_FIELDS = ("gpu_sm_clock_mhz", "gpu_sm_clock_max_mhz", "gpu_mem_clock_mhz",
              "gpu_mem_clock_max_mhz", "gpu_power_limit_w", "gpu_power_draw_w",
              "gpu_temperature_c", "gpu_persistence_mode", "gpu_ecc")


# ---------------------------------------------------------------------------- the process


def compact_cpus(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 3, 8} -> '0-3,8' (the notation of taskset and /sys cpulist files)."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def cpu_affinity() -> str | None:
    """The CPUs this process (and every process it starts) may run on, or None where the OS
    does not say (macOS, Windows)."""
    try:
        return compact_cpus(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def process_settings() -> dict[str, Any]:
    """The env block's process fields. llmbench never changes torch's thread count or flags,
    and case processes inherit this process's environment and affinity, so these are also what
    each case process uses."""
    out: dict[str, Any] = {
        "torch_threads": None, "cpu_affinity": cpu_affinity(), "matmul_allow_tf32": None,
        "cudnn_allow_tf32": None, "cudnn_benchmark": None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    try:
        import torch
    except ImportError:
        return out
    readings = {
        "torch_threads": lambda: int(torch.get_num_threads()),
        "matmul_allow_tf32": lambda: bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": lambda: bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": lambda: bool(torch.backends.cudnn.benchmark),
    }
    for key, read in readings.items():
        out[key] = _quietly(read)
    return out


# ---------------------------------------------------------------------------- NVML


def _quietly(read: Any) -> Any:
    try:
        return read()
    except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost, a missing symbol
        return None


def _handle(pynvml: Any, uuid: str | None) -> Any:
    """The NVML handle of the device torch calls cuda:0: by the UUID the run detected, else by
    the first entry of CUDA_VISIBLE_DEVICES, else NVML's device 0."""
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:
            pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if visible.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(visible)
    return pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)


class _Nvml:
    """One NVML session on one device (init and shutdown are reference-counted by NVML)."""

    def __init__(self, uuid: str | None) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        try:
            self.handle = _handle(pynvml, uuid)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass

    def clock(self, kind: str, maximum: bool = False) -> int | None:
        which = self.nvml.NVML_CLOCK_SM if kind == "sm" else self.nvml.NVML_CLOCK_MEM
        read = (self.nvml.nvmlDeviceGetMaxClockInfo if maximum
                else self.nvml.nvmlDeviceGetClockInfo)
        value = _quietly(lambda: read(self.handle, which))
        return int(value) if value is not None else None

    def reasons(self) -> int | None:
        for name in ("nvmlDeviceGetCurrentClocksEventReasons",  # drivers from 535 on
                     "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(self.nvml, name, None)
            value = _quietly(lambda fn=fn: fn(self.handle)) if fn is not None else None
            if value is not None:
                return int(value)
        return None

    def temperature(self) -> int | None:
        value = _quietly(lambda: self.nvml.nvmlDeviceGetTemperature(
            self.handle, self.nvml.NVML_TEMPERATURE_GPU))
        return int(value) if value is not None else None


def gpu_settings(uuid: str | None) -> dict[str, Any]:
    """The env block's GPU fields for the device with `uuid` (see `_handle`): one NVML
    session, a reading per field. Every field is None when NVML cannot be used."""
    out: dict[str, Any] = dict.fromkeys(GPU_FIELDS)
    try:
        nvml = _Nvml(uuid)
    except Exception:  # no pynvml, no driver, no such device
        return out
    try:
        pynvml, handle = nvml.nvml, nvml.handle
        out["gpu_sm_clock_mhz"] = nvml.clock("sm")
        out["gpu_sm_clock_max_mhz"] = nvml.clock("sm", maximum=True)
        out["gpu_mem_clock_mhz"] = nvml.clock("mem")
        out["gpu_mem_clock_max_mhz"] = nvml.clock("mem", maximum=True)
        limit = _quietly(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        if limit is None:
            limit = _quietly(lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle))
        out["gpu_power_limit_w"] = limit / 1000 if limit is not None else None  # NVML: mW
        draw = _quietly(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
        out["gpu_power_draw_w"] = draw / 1000 if draw is not None else None
        out["gpu_temperature_c"] = nvml.temperature()
        persistence = _quietly(lambda: pynvml.nvmlDeviceGetPersistenceMode(handle))
        out["gpu_persistence_mode"] = bool(persistence) if persistence is not None else None
        ecc = _quietly(lambda: pynvml.nvmlDeviceGetEccMode(handle))  # [current, pending]
        out["gpu_ecc"] = bool(ecc[0]) if ecc is not None else None
    finally:
        nvml.close()
    return out


# ---------------------------------------------------------------------------- per case


class ClockSample(BaseModel):
    """One look at the GPU: its SM clock against its maximum, and NVML's clock-event reasons."""

    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    reasons: int | None = None
    temperature_c: int | None = None

    @property
    def empty(self) -> bool:
        return self.sm_clock_mhz is None and self.reasons is None

    @property
    def throttled(self) -> bool:
        if self.reasons is None:
            return False  # without the reasons, a low clock may just be an idle GPU
        if self.reasons & THROTTLING:
            return True
        return bool(not self.reasons & GPU_IDLE and self.sm_clock_mhz and self.sm_clock_max_mhz
                    and self.sm_clock_mhz < LOW_CLOCK * self.sm_clock_max_mhz)


def reason_names(mask: int) -> list[str]:
    names = [name for bit, name in REASONS.items() if mask & bit]
    unknown = mask & ~sum(REASONS)
    return names + ([f"0x{unknown:x}"] if unknown else [])


def sample(nvml: _Nvml) -> ClockSample:
    return ClockSample(sm_clock_mhz=nvml.clock("sm"), sm_clock_max_mhz=nvml.clock("sm", True),
                       reasons=nvml.reasons(), temperature_c=nvml.temperature())


def case_metrics(start: ClockSample | None, end: ClockSample | None) -> dict[str, Any]:
    """The information-only metrics a case gets from its two samples ({} when neither could be
    read): `gpu_throttled`, `gpu_throttle_reasons` (every reason seen in either sample, comma
    separated, '' for none), the SM clock at the start and end and its maximum, and the
    temperature at the start and end."""
    taken = [s for s in (start, end) if s is not None and not s.empty]
    if not taken:
        return {}
    seen = 0
    for s in taken:
        seen |= s.reasons or 0
    out: dict[str, Any] = {"gpu_throttled": any(s.throttled for s in taken),
                           "gpu_throttle_reasons": ",".join(reason_names(seen))}
    for suffix, s in (("start", start), ("end", end)):
        if s is not None and s.sm_clock_mhz is not None:
            out[f"gpu_sm_clock_mhz_{suffix}"] = s.sm_clock_mhz
    maximum = next((s.sm_clock_max_mhz for s in taken if s.sm_clock_max_mhz), None)
    if maximum is not None:
        out["gpu_sm_clock_max_mhz"] = maximum
    for suffix, s in (("start", start), ("end", end)):
        if s is not None and s.temperature_c is not None:
            out[f"gpu_temperature_c_{suffix}"] = s.temperature_c
    return out


def sampled(target: str, payload: Any, gpu_uuid: str | None) -> tuple[str, dict[str, Any]]:
    """(target, payload) that run `target(payload)` between two GPU samples (`run_sampled`)."""
    return SAMPLED_TARGET, {"target": target, "payload": payload, "gpu_uuid": gpu_uuid}


def run_sampled(wrapped: dict[str, Any]) -> Any:
    """Runs in the process that runs the case: sample, run the case, sample again, and add the
    samples' metrics to the case's own (a dict). A failed sample only leaves metrics out; the
    case's exceptions pass through unchanged."""
    from llmbench.core.isolate import resolve

    fn = resolve(wrapped["target"])
    try:
        nvml: _Nvml | None = _Nvml(wrapped.get("gpu_uuid"))
    except Exception:
        nvml = None
    try:
        start = _quietly(lambda: sample(nvml)) if nvml is not None else None
        value = fn(wrapped["payload"])
        end = _quietly(lambda: sample(nvml)) if nvml is not None else None
    finally:
        if nvml is not None:
            nvml.close()
    if isinstance(value, dict):
        value = {**value, **(_quietly(lambda: case_metrics(start, end)) or {})}
    return value
