"""Detect the device: an NVIDIA GPU through NVML and torch, else the CPU.

Nothing here raises because a GPU, the NVML library or a /proc file is missing: each missing
piece becomes `None` plus a note, and the device falls back to the CPU. torch is imported lazily
so that `llmbench --help` stays fast.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field


class GpuInfo(BaseModel):
    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_total_bytes: int | None = None
    sm_count: int | None = None
    uuid: str | None = None

    @property
    def family(self) -> str:
        """'sm90' for compute capability 9.0."""
        major, minor = self.compute_capability
        return f"sm{major}{minor}"


class CpuInfo(BaseModel):
    model: str
    logical_cores: int
    physical_cores: int | None = None
    usable_cores: int = Field(description="CPUs this process may run on (affinity / cgroup)")
    isa: str | None = Field(None, description="torch.backends.cpu.get_cpu_capability()")
    isa_flags: list[str] = Field(default_factory=list)
    max_ghz: float | None = None
    ram_total_bytes: int | None = None


class HardwareInfo(BaseModel):
    device: Literal["cuda", "cpu"]
    gpus: list[GpuInfo] = Field(default_factory=list)
    cpu: CpuInfo
    driver: str | None = None
    cuda_driver: str | None = Field(None, description="highest CUDA version the driver supports")
    nvml: str = Field(description="'ok' or 'unavailable: <why>'")
    torch: str | None = None
    torch_cuda: str | None = Field(None, description="CUDA version torch was built with")
    cudnn: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def gpu(self) -> GpuInfo | None:
        """The GPU the benchmarks run on (cuda:0), if any."""
        return self.gpus[0] if self.gpus else None


_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
              "amx_bf16", "amx_tile", "asimd", "sve", "sve2", "bf16", "i8mm")


# ---------------------------------------------------------------------------- CPU


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _meminfo() -> dict[str, int]:
    text = _read("/proc/meminfo") or ""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def _cgroup_memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = (_read(path) or "").strip()
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def _cgroup_memory_usage() -> int | None:
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        text = (_read(path) or "").strip()
        if text.isdigit():
            return int(text)
    return None


def _cpu_model_and_flags() -> tuple[str, list[str], int | None, float | None]:
    text = _read("/proc/cpuinfo")
    if text is None:  # macOS, Windows
        model = platform.processor() or platform.machine() or "unknown CPU"
        if sys.platform == "darwin":
            try:
                model = subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"],
                    capture_output=True, text=True, timeout=2, check=True,
                ).stdout.strip() or model
            except (OSError, subprocess.SubprocessError):
                pass
        return model, [], None, None
    model = None
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical_id = "0"
    mhz: float | None = None
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key in ("model name", "Model", "Hardware", "cpu model") and not model and value:
            model = value
        elif key in ("flags", "Features"):
            flags.update(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
        elif key == "cpu MHz" and mhz is None:
            try:
                mhz = float(value)
            except ValueError:
                pass
    max_khz = (_read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") or "").strip()
    ghz = int(max_khz) / 1e6 if max_khz.isdigit() else (mhz / 1000 if mhz else None)
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return model, sorted(f for f in flags if f in _ISA_FLAGS), (len(cores) or None), ghz


def _usable_cores() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = (_read("/sys/fs/cgroup/cpu.max") or "").split()
    if len(quota) == 2 and quota[0].isdigit() and quota[1].isdigit() and int(quota[1]) > 0:
        n = max(1, min(n, int(int(quota[0]) / int(quota[1]))))
    return n


def detect_cpu() -> CpuInfo:
    model, flags, physical, ghz = _cpu_model_and_flags()
    ram = _meminfo().get("MemTotal")
    limit = _cgroup_memory_limit()
    if limit is not None:
        ram = min(ram, limit) if ram else limit
    if ram is None and hasattr(os, "sysconf"):
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            ram = None
    isa = None
    try:
        import torch

        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch missing or too old: the ISA is simply unknown
        isa = None
    return CpuInfo(
        model=model,
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        usable_cores=_usable_cores(),
        isa=isa,
        isa_flags=flags,
        max_ghz=round(ghz, 3) if ghz else None,
        ram_total_bytes=ram,
    )


def available_cpu_memory_bytes() -> int | None:
    """What a new allocation can use now: MemAvailable, bounded by the cgroup's remaining limit."""
    avail = _meminfo().get("MemAvailable")
    limit, usage = _cgroup_memory_limit(), _cgroup_memory_usage()
    if limit is not None and usage is not None:
        avail = min(avail, limit - usage) if avail is not None else limit - usage
    return avail


# ---------------------------------------------------------------------------- GPU


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_probe() -> tuple[list[dict], dict[str, str | None], str]:
    """(gpus, versions, status). Never raises: any NVML failure is the status line."""
    try:
        import pynvml
    except ImportError as exc:
        return [], {}, f"unavailable: nvidia-ml-py is not installed ({exc})"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return [], {}, f"unavailable: {_text(exc) or type(exc).__name__}"
    gpus: list[dict] = []
    versions: dict[str, str | None] = {}
    status = "ok"
    try:
        versions["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
        try:
            v = pynvml.nvmlSystemGetCudaDriverVersion_v2()
            versions["cuda_driver"] = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:
            versions["cuda_driver"] = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append({
                "index": i,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "compute_capability": (int(major), int(minor)),
                "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
            })
    except Exception as exc:
        status = f"error: {_text(exc) or type(exc).__name__}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus, versions, status


def _torch_cuda() -> tuple[list[dict], dict[str, str | None], list[str]]:
    notes: list[str] = []
    try:
        import torch
    except ImportError as exc:
        return [], {"torch": None}, [f"torch is not importable: {exc}"]
    versions = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": None}
    gpus: list[dict] = []
    try:
        available = torch.cuda.is_available()
    except Exception as exc:
        return [], versions, [f"torch.cuda.is_available() failed: {exc}"]
    if not available:
        return [], versions, notes
    try:
        if torch.backends.cudnn.is_available():
            versions["cudnn"] = str(torch.backends.cudnn.version())
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            uuid = getattr(props, "uuid", None)
            gpus.append({
                "index": i,
                "name": props.name,
                "compute_capability": (props.major, props.minor),
                "memory_total_bytes": int(props.total_memory),
                "sm_count": int(props.multi_processor_count),
                "uuid": f"GPU-{uuid}" if uuid is not None else None,
            })
    except Exception as exc:
        notes.append(f"torch could not read the CUDA devices: {exc}")
    return gpus, versions, notes


def _merge_gpus(from_torch: list[dict], from_nvml: list[dict]) -> list[GpuInfo]:
    """torch decides which GPUs we can use (it honours CUDA_VISIBLE_DEVICES); NVML fills gaps."""
    by_uuid = {g["uuid"]: g for g in from_nvml if g.get("uuid")}
    merged = []
    for i, tg in enumerate(from_torch):
        ng = by_uuid.get(tg.get("uuid") or "") or (from_nvml[i] if i < len(from_nvml) else {})
        merged.append(GpuInfo(**{**ng, **{k: v for k, v in tg.items() if v is not None}}))
    return merged


@lru_cache(maxsize=1)
def detect() -> HardwareInfo:
    """Detect once per process. No usable GPU gives a CPU result, never an error."""
    cpu = detect_cpu()
    nvml_gpus, nvml_versions, nvml_status = _nvml_probe()
    torch_gpus, versions, notes = _torch_cuda()
    gpus = _merge_gpus(torch_gpus, nvml_gpus)
    if nvml_gpus and not gpus:
        torch_v = versions.get("torch") or "not installed"
        notes.append(
            f"NVML sees {nvml_gpus[0]['name']} but torch ({torch_v}) cannot use CUDA: "
            "running on the CPU"
        )
    return HardwareInfo(
        device="cuda" if gpus else "cpu",
        gpus=gpus,
        cpu=cpu,
        driver=nvml_versions.get("driver"),
        cuda_driver=nvml_versions.get("cuda_driver"),
        nvml=nvml_status,
        torch=versions.get("torch"),
        torch_cuda=versions.get("torch_cuda"),
        cudnn=versions.get("cudnn"),
        notes=notes,
    )


def available_memory_bytes(device: str) -> int | None:
    """Free memory for a new case on `device`, read without creating a CUDA context."""
    if device == "cpu":
        return available_cpu_memory_bytes()
    free = _nvml_free()
    if free is not None:
        return free
    try:
        import torch

        return int(torch.cuda.mem_get_info(0)[0])
    except Exception:
        return None


def _nvml_free() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            handle = _nvml_handle_by_uuid(pynvml, visible)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free) if handle is not None else None
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_handle_by_uuid(pynvml: Any, uuid: str) -> Any:
    """The NVML handle of a GPU or MIG instance by its UUID, or None. Current drivers take MIG
    UUIDs in nvmlDeviceGetHandleByUUID; older ones do not, so each GPU's MIG instances are
    walked too (a MIG instance's memory is its own, not its parent GPU's)."""
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        if not uuid.startswith("MIG-"):
            return None
    for i in range(pynvml.nvmlDeviceGetCount()):
        gpu = pynvml.nvmlDeviceGetHandleByIndex(i)
        try:
            slots = pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu)
        except Exception:  # not MIG-capable
            continue
        for j in range(slots):
            try:
                mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, j)
            except Exception:  # an empty slot
                continue
            if _text(pynvml.nvmlDeviceGetUUID(mig)) == uuid:
                return mig
    return None


def package_version(module: str) -> str | None:
    """Installed version of a distribution, without importing it (flash-attn imports CUDA)."""
    from importlib import metadata

    names = {"flash_attn": "flash-attn"}
    try:
        return metadata.version(names.get(module, module))
    except metadata.PackageNotFoundError:
        return None


def git_commit(cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=2, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def usable_device(requested: str | None, hw: HardwareInfo) -> str:
    """The device a run asked for (None: this machine's), refused in one line when it asks
    for CUDA and no usable GPU is here."""
    from llmbench.core.errors import UsageError

    device = requested or hw.device
    if device == "cuda" and hw.device != "cuda":
        why = hw.notes[0] if hw.notes else f"torch {hw.torch} sees no CUDA device"
        raise UsageError(f"--device cuda: no usable CUDA GPU here ({why})")
    return device


def default_dtype(device: str, hw: HardwareInfo) -> Literal["bf16", "fp16", "fp32"]:
    """What a benchmark computes in when not told: bf16 on GPUs with bf16 tensor cores (compute
    capability >= 8.0), fp16 on older ones (>= 5.3), else fp32; fp32 on the CPU."""
    if device != "cuda":
        return "fp32"
    return gpu_default_dtype(hw.gpu.compute_capability if hw.gpu else (0, 0))


def gpu_default_dtype(cc: tuple[int, int]) -> Literal["bf16", "fp16", "fp32"]:
    """The default dtype of a GPU of compute capability `cc` (see `default_dtype`)."""
    return "bf16" if cc >= (8, 0) else "fp16" if cc >= (5, 3) else "fp32"


def dtype_unsupported(device: str, dtype: str, hw: HardwareInfo) -> str | None:
    """Why `dtype` cannot be computed on `device` here, or None."""
    if device == "cuda":
        cc = hw.gpu.compute_capability if hw.gpu else (0, 0)
        if dtype == "fp16" and cc < (5, 3):
            return f"fp16 needs compute capability >= 5.3, this GPU is {cc[0]}.{cc[1]}"
        if dtype == "bf16" and cc < (8, 0):
            return (f"bf16 needs compute capability >= 8.0 (Ampere), this GPU is "
                    f"{cc[0]}.{cc[1]}: use fp16")
        return None
    if dtype == "fp32":
        return None
    import torch

    from llmbench.core.dtypes import torch_dtype

    t = torch_dtype(dtype)
    try:  # the CPU kernels this torch build has for the dtype
        a = torch.ones(4, 4, dtype=t)
        torch.softmax(a @ a, dim=-1)
    except RuntimeError as exc:
        return f"this torch build cannot compute {dtype} on the CPU ({exc})"
    return None
