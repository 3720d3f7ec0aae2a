"""Device profiles: attention tile configs by head dim and peak throughput, one TOML per family.

Selection for a GPU with compute capability (M, m): the profile of exactly that family, else the
nearest lower family, else `cpu`. `--profile NAME|PATH` overrides. A malformed profile is a
`ProfileError` naming the file and the field.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DtypeName = Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"]


class ProfileError(UsageError):
    """A profile file that cannot be read or does not validate."""


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _positive_tflops(v: dict[str, float]) -> dict[str, float]:
    for dtype, value in v.items():
        if value <= 0:
            raise ValueError(f"{dtype} must be > 0, got {value}")
    return v


class AttentionTile(BaseModel):
    """One tile config, used for head dims in the inclusive range `head_dim`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    head_dim: tuple[int, int]
    block_m: int = Field(description="query rows per tile")
    block_n: int = Field(description="key/value rows per tile")
    num_warps: int
    num_stages: int

    @field_validator("block_m", "block_n")
    @classmethod
    def _block(cls, v: int) -> int:
        if not _power_of_two(v) or not 16 <= v <= 1024:
            raise ValueError(f"must be a power of two from 16 to 1024, got {v}")
        return v

    @field_validator("num_warps")
    @classmethod
    def _warps(cls, v: int) -> int:
        if not _power_of_two(v) or v > 32:
            raise ValueError(f"must be 1, 2, 4, 8, 16 or 32, got {v}")
        return v

    @field_validator("num_stages")
    @classmethod
    def _stages(cls, v: int) -> int:
        if not 1 <= v <= 8:
            raise ValueError(f"must be from 1 to 8, got {v}")
        return v

    @field_validator("head_dim")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"must be [low, high] with 1 <= low <= high, got {list(v)}")
        return v


class DevicePeak(BaseModel):
    """Peak figures for one SKU of the family, chosen when `match` is in the GPU's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)
    tflops: dict[DtypeName, float]
    memory_gbps: float | None = Field(None, gt=0)

    _positive = field_validator("tflops")(_positive_tflops)


class GpuPeak(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(description="the SKU the family-level figures are for")
    tflops: dict[DtypeName, float]
    memory_gbps: float = Field(gt=0)
    devices: list[DevicePeak] = Field(default_factory=list)

    _positive = field_validator("tflops")(_positive_tflops)


class CpuPeak(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flops_per_cycle: dict[str, dict[DtypeName, float]] = Field(
        description="per core, keyed by torch's CPU capability; DEFAULT for anything else")
    memory_gbps: float | None = Field(None, gt=0)

    @field_validator("flops_per_cycle")
    @classmethod
    def _has_default(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if "DEFAULT" not in v:
            raise ValueError("needs a DEFAULT entry")
        for isa, table in v.items():
            if "fp32" not in table:
                raise ValueError(f"{isa} needs an fp32 entry")
        return v


def _peak_shape(value: object) -> str:
    """Tell the two peak tables apart by their keys (the profile's `kind` is checked after)."""
    keys = value.keys() if isinstance(value, dict) else vars(value) if value is not None else ()
    return "cpu" if "flops_per_cycle" in keys else "cuda"


Peak = Annotated[
    Annotated[GpuPeak, Tag("cuda")] | Annotated[CpuPeak, Tag("cpu")],
    Discriminator(_peak_shape),
]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["cuda", "cpu"]
    description: str = ""
    compute_capability: tuple[int, int] | None = None
    shared_memory_per_block_kib: int | None = Field(None, gt=0)
    attention: list[AttentionTile] = Field(min_length=1)
    peak: Peak
    source: str = Field("", exclude=True, description="the file it was read from")

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.kind == "cuda":
            if self.compute_capability is None:
                raise ValueError("compute_capability: required for a cuda profile")
            if not isinstance(self.peak, GpuPeak):
                raise ValueError("peak: a cuda profile needs reference, tflops and memory_gbps")
        elif not isinstance(self.peak, CpuPeak):
            raise ValueError("peak: a cpu profile needs flops_per_cycle")
        tiles = sorted(self.attention, key=lambda t: t.head_dim[0])
        for a, b in zip(tiles, tiles[1:], strict=False):
            if b.head_dim[0] <= a.head_dim[1]:
                raise ValueError(
                    f"attention: head_dim ranges {list(a.head_dim)} and {list(b.head_dim)} overlap")
        object.__setattr__(self, "attention", tiles)
        return self

    @property
    def family_key(self) -> tuple[int, int]:
        return self.compute_capability or (0, 0)

    def tile_for(self, head_dim: int) -> AttentionTile:
        """The tile whose head-dim range holds `head_dim`; past the last range, the last tile."""
        for tile in self.attention:
            if tile.head_dim[0] <= head_dim <= tile.head_dim[1]:
                return tile
        if head_dim > self.attention[-1].head_dim[1]:
            return self.attention[-1]
        return self.attention[0]

    def peak_tflops(self, dtype: str, hw: HardwareInfo | None = None) -> float | None:
        """Dense peak TFLOP/s for `dtype` on this machine, or None when the profile has none."""
        if isinstance(self.peak, GpuPeak):
            table = self.peak.tflops
            gpu_name = hw.gpu.name.lower() if hw is not None and hw.gpu else ""
            for dev in self.peak.devices:
                if dev.match.lower() in gpu_name:
                    table = dev.tflops
                    break
            return table.get(dtype)
        if hw is None or not hw.cpu.max_ghz:
            return None
        per_cycle = self.peak.flops_per_cycle.get(hw.cpu.isa or "", None)
        per_cycle = per_cycle or self.peak.flops_per_cycle["DEFAULT"]
        flops = per_cycle.get(dtype, per_cycle["fp32"])
        return hw.cpu.usable_cores * hw.cpu.max_ghz * 1e9 * flops / 1e12

    def peak_memory_gbps(self, hw: HardwareInfo | None = None) -> float | None:
        if isinstance(self.peak, GpuPeak):
            gpu_name = hw.gpu.name.lower() if hw is not None and hw.gpu else ""
            for dev in self.peak.devices:
                if dev.match.lower() in gpu_name and dev.memory_gbps:
                    return dev.memory_gbps
            return self.peak.memory_gbps
        return self.peak.memory_gbps


# ---------------------------------------------------------------------------- files


def profiles_dir() -> Path:
    """Shipped profiles: inside the installed package, else the repository's top-level folder."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "profiles", here.parent / "profiles"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise ProfileError(f"no profiles found in {here / 'profiles'} or {here.parent / 'profiles'}")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("cuda", "cpu"):  # the discriminator's tag
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_validation(path: Path, exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    where = _loc(err["loc"]) or "profile"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] == "extra_forbidden":
        message = "unknown field"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {where}: {message}{more}"


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile file not found") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}") from None
    try:
        return Profile.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        raise ProfileError(_format_validation(path, exc)) from None


def shipped_profiles() -> dict[str, Profile]:
    return {p.stem: load_profile(p) for p in sorted(profiles_dir().glob("*.toml"))}


@dataclass(frozen=True)
class ProfileChoice:
    profile: Profile
    reason: str


def select_profile(hw: HardwareInfo, override: str | None = None,
                   device: str | None = None) -> ProfileChoice:
    """Pick the profile for `device` (default: the detected one) on `hw`, or honour `override`."""
    if override:
        looks_like_path = override.endswith(".toml") or "/" in override or "\\" in override
        if looks_like_path:
            profile = load_profile(override)
            return ProfileChoice(profile, f"--profile {override}")
        shipped = shipped_profiles()
        if override not in shipped:
            raise ProfileError(
                f"unknown profile {override!r} (shipped: {', '.join(sorted(shipped))}; "
                "or give a path to a .toml file)")
        return ProfileChoice(shipped[override], f"--profile {override}")
    shipped = shipped_profiles()
    device = device or hw.device
    gpu = hw.gpu
    if device != "cuda" or gpu is None:
        return ProfileChoice(shipped["cpu"], "no CUDA GPU in use: the cpu profile")
    cc = gpu.compute_capability
    gpu_profiles = [p for p in shipped.values() if p.kind == "cuda"]
    for p in gpu_profiles:
        if p.compute_capability == cc:
            return ProfileChoice(p, f"exact match for compute capability {cc[0]}.{cc[1]}")
    lower = [p for p in gpu_profiles if p.family_key < cc]
    if lower:
        best = max(lower, key=lambda p: p.family_key)
        return ProfileChoice(
            best, f"no sm{cc[0]}{cc[1]} profile: nearest lower family {best.name}")
    return ProfileChoice(
        shipped["cpu"],
        f"compute capability {cc[0]}.{cc[1]} is below every GPU profile: the cpu profile")
