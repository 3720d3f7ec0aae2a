"""A device's attainable figures, measured once by `llmbench peak --save` and read by the other
benchmarks to show "% of attainable" beside "% of peak".

A calibration is kept under $LLMBENCH_CACHE/calibration (default ~/.cache/llmbench), one JSON
file per key: the device kind, its name (the GPU's, or the CPU model), the NVIDIA driver and
the torch version. Any of those changing changes what the device attains, so a calibration is
read back only on a machine with the same key, never across drivers or torch versions. Nothing
here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from llmbench.core.cache import cache_dir
from llmbench.core.hardware import HardwareInfo
from llmbench.core.results import write_atomic

KEY_FIELDS = ("device", "device_name", "driver", "torch")


class Calibration(BaseModel):
    """What `llmbench peak` measured on one device (best of its sweep)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: Literal[1] = 1
    device: Literal["cpu", "cuda"]
    device_name: str  # the GPU's name, or the CPU model
    driver: str | None  # the NVIDIA driver; None on a CPU
    torch: str
    llmbench: str
    created_at: str  # ISO time, UTC
    gemm_tflops: dict[str, float]  # dtype -> best attainable GEMM TFLOP/s of the sweep
    gemm_shape: dict[str, str]  # dtype -> "M x N x K" of that best
    copy_gbps: float | None  # STREAM copy: bytes read + written per second, best of sweep
    triad_gbps: float | None  # STREAM triad a = b + s*c: 3 arrays per element
    h2d_gbps: float | None = None  # pinned host -> device (GPU only)
    d2h_gbps: float | None = None

    @property
    def bandwidth_gbps(self) -> float | None:
        """Attainable device-memory bandwidth: the higher of copy and triad, of those measured."""
        measured = [g for g in (self.copy_gbps, self.triad_gbps) if g is not None]
        return max(measured) if measured else None

    def describe(self) -> str:
        """Where the figures come from, for a table's footnote."""
        return f"calibration of {self.created_at[:10]} (llmbench peak, torch {self.torch})"


def calibration_key(hw: HardwareInfo, device: str) -> dict[str, str | None]:
    """What a calibration is valid for: device, device_name, driver, torch."""
    if device == "cuda":
        name = hw.gpu.name if hw.gpu is not None else "unknown GPU"
        driver = hw.driver
    else:
        name, driver = hw.cpu.model, None
    return {"device": device, "device_name": name, "driver": driver, "torch": hw.torch or "?"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def calibration_path(hw: HardwareInfo, device: str) -> Path:
    """cache_dir()/calibration/<slug>.json: the key in words, then a short hash of the whole
    key (two keys that read alike still get two files)."""
    key = calibration_key(hw, device)
    words = [key["device"], key["device_name"], f"driver {key['driver']}" if key["driver"]
             else "", f"torch {key['torch']}"]
    readable = _slug(" ".join(w for w in words if w))[:96].strip("-.")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir() / "calibration" / f"{readable}-{digest}.json"


def load_calibration(hw: HardwareInfo, device: str) -> Calibration | None:
    """This machine's calibration for `device`, or None when there is none, it cannot be read,
    it is of another version, or it was made for another key (device, driver, torch)."""
    path = calibration_path(hw, device)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != 1:
        return None
    try:
        cal = Calibration.model_validate(data)
    except ValidationError:
        return None
    key = calibration_key(hw, device)
    if any(getattr(cal, f) != key[f] for f in KEY_FIELDS):
        return None
    return cal


def save_calibration(cal: Calibration, hw: HardwareInfo, device: str) -> Path:
    """Write `cal` (atomically) where `load_calibration` looks for this machine's; its path.
    A calibration made for another key (device, driver, torch) is refused: it would never be
    read back here."""
    key = calibration_key(hw, device)
    wrong = [f for f in KEY_FIELDS if getattr(cal, f) != key[f]]
    if wrong:
        raise ValueError(f"calibration for another machine: {', '.join(wrong)} differ")
    return write_atomic(cal.model_dump_json(indent=2) + "\n", calibration_path(hw, device))
