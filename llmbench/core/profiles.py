"""Device profiles: attention tile configs by head dim and peak throughput, one TOML per family.

Selection for a GPU with compute capability (M, m): the profile of exactly that family, else the
nearest lower family, else the lowest GPU family; a CUDA device never gets the `cpu` profile.
A family of another major version than the GPU's gives tiles but no peak figures. Peak figures
are per SKU, matched by the GPU's exact name; an unlisted SKU gets the family's reference figures
with a source that says so. `--profile NAME|PATH` overrides. A malformed profile is a
`ProfileError` naming the file and the field.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

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

from llmbench.core.errors import UsageError, first_problem
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


class KernelTile(BaseModel):
    """One kernel's launch tile. In every kernel block_m counts query rows and block_n key/value
    rows; the forward and dQ kernels run one program per query tile, dK/dV one per key tile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    def launch(self) -> dict[str, int]:
        """{block_m, block_n, num_warps, num_stages}: what a kernel launch takes."""
        return {"block_m": self.block_m, "block_n": self.block_n, "num_warps": self.num_warps,
                "num_stages": self.num_stages}

    def describe(self) -> str:
        """'128x64, 4 warps, 2 stages'."""
        warps = f"{self.num_warps} warp{'' if self.num_warps == 1 else 's'}"
        stages = f"{self.num_stages} stage{'' if self.num_stages == 1 else 's'}"
        return f"{self.block_m}x{self.block_n}, {warps}, {stages}"


class BackwardTiles(NamedTuple):
    dkdv: KernelTile
    dq: KernelTile

    def kwargs(self) -> dict[str, dict[str, int]]:
        """{"dkdv": {...}, "dq": {...}}: the backward launch kwargs of llmbench's Triton kernel."""
        return {"dkdv": self.dkdv.launch(), "dq": self.dq.launch()}


class AttentionTile(KernelTile):
    """The forward tile for head dims in the inclusive range `head_dim`, and the backward
    kernels' tiles (the forward tile where a profile gives none)."""

    head_dim: tuple[int, int]
    dkdv: KernelTile | None = Field(
        None, description="dK/dV kernel: one program per key tile, walking the query tiles")
    dq: KernelTile | None = Field(
        None, description="dQ kernel: one program per query tile, walking the key tiles")

    @field_validator("head_dim")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"must be [low, high] with 1 <= low <= high, got {list(v)}")
        return v

    @property
    def forward(self) -> KernelTile:
        return KernelTile(**self.launch())

    def backward(self) -> BackwardTiles:
        """The dK/dV and dQ tiles; each absent one is the forward tile."""
        return BackwardTiles(self.dkdv or self.forward, self.dq or self.forward)


def normalize_gpu_name(name: str) -> str:
    """A GPU name as compared with a SKU's names: case-insensitive, spaces collapsed, without a
    leading "NVIDIA " (older drivers leave it off GeForce and Quadro names)."""
    return re.sub(r"\s+", " ", name).strip().lower().removeprefix("nvidia ")


class DevicePeak(BaseModel):
    """Peak figures of one SKU of the family, chosen when the GPU's name is one of `names`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str = Field(min_length=1)
    names: list[str] = Field(min_length=1,
                             description="exact device names as NVML and torch report them")
    source: str = Field("", description="where the figures come from")
    tflops: dict[DtypeName, float]
    memory_gbps: float | None = Field(None, gt=0)

    _positive = field_validator("tflops")(_positive_tflops)

    @model_validator(mode="before")
    @classmethod
    def _legacy_match(cls, data: Any) -> Any:
        """`match = "H100 PCIe"` (profiles written before exact names) is one exact name."""
        if isinstance(data, dict) and "match" in data and "names" not in data:
            data = {k: v for k, v in data.items() if k != "match"} | {
                "sku": data.get("sku") or data["match"], "names": [data["match"]]}
        return data

    def matches(self, gpu_name: str) -> bool:
        key = normalize_gpu_name(gpu_name)
        return any(normalize_gpu_name(n) == key for n in self.names)


class GpuPeak(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str = Field(description="the SKU the family-level figures are for")
    names: list[str] = Field(default_factory=list, description="the reference SKU's names")
    source: str = ""
    tflops: dict[DtypeName, float]
    memory_gbps: float = Field(gt=0)
    devices: list[DevicePeak] = Field(default_factory=list)

    _positive = field_validator("tflops")(_positive_tflops)

    def reference_sku(self) -> DevicePeak:
        """The family's figures as a SKU of their own, matched by name like any other."""
        return DevicePeak(sku=self.reference, names=self.names or [self.reference],
                          source=self.source, tflops=self.tflops, memory_gbps=self.memory_gbps)


class PeakFigures(BaseModel):
    """Dense peak throughput for one machine, and where the figures come from."""

    model_config = ConfigDict(frozen=True)

    tflops: dict[str, float] = Field(default_factory=dict, description="by dtype")
    memory_gbps: float | None = None
    source: str
    sku: str | None = Field(None, description="the SKU matched by name, if one was")


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

    def peak_figures(self, hw: HardwareInfo | None = None) -> PeakFigures:
        """Peak figures for this machine with their source. A GPU gets its SKU's figures, else
        the family reference's (the source says it is not listed), and none at all when this
        profile is for another major compute capability than the GPU's."""
        if isinstance(self.peak, CpuPeak):
            return self._cpu_peak(hw)
        gpu = hw.gpu if hw is not None else None
        ref = self.peak.reference_sku()
        if gpu is not None and self.compute_capability:
            have, ours = gpu.compute_capability, self.compute_capability
            if have[0] != ours[0]:
                return PeakFigures(source=(
                    f"no peak: profile {self.name} is for compute capability {ours[0]}.x, "
                    f"{gpu.name} is {have[0]}.{have[1]}"))
            for sku in (ref, *self.peak.devices):
                if sku.matches(gpu.name):
                    return PeakFigures(tflops=dict(sku.tflops), memory_gbps=sku.memory_gbps,
                                       source=f"{sku.source or f'profile {self.name}'} "
                                              f"(SKU {sku.sku})", sku=sku.sku)
        why = (f"{gpu.name} is not listed in profile {self.name}" if gpu is not None
               else "no GPU to match")
        where = f" ({ref.source})" if ref.source else ""
        return PeakFigures(tflops=dict(ref.tflops), memory_gbps=ref.memory_gbps,
                           source=f"family reference {ref.sku}{where}: {why}")

    def _cpu_peak(self, hw: HardwareInfo | None) -> PeakFigures:
        assert isinstance(self.peak, CpuPeak)
        if hw is None or not hw.cpu.max_ghz:
            return PeakFigures(memory_gbps=self.peak.memory_gbps,
                               source="no peak: the CPU's clock is unknown")
        isa = hw.cpu.isa if hw.cpu.isa in self.peak.flops_per_cycle else "DEFAULT"
        per_cycle = self.peak.flops_per_cycle[isa]
        scale = hw.cpu.usable_cores * hw.cpu.max_ghz * 1e9 / 1e12
        # The dtypes llmbench computes on a CPU; one without an entry runs at the fp32 rate.
        dtypes = dict.fromkeys(["fp32", "fp16", "bf16", *per_cycle])
        tflops = {d: scale * per_cycle.get(d, per_cycle["fp32"]) for d in dtypes}
        return PeakFigures(
            tflops=tflops, memory_gbps=self.peak.memory_gbps,
            source=(f"theoretical: {hw.cpu.usable_cores} usable cores x {hw.cpu.max_ghz:g} GHz "
                    f"x {per_cycle['fp32']:g} fp32 FLOP/cycle ({isa})"))

    def peak_tflops(self, dtype: str, hw: HardwareInfo | None = None) -> float | None:
        """Dense peak TFLOP/s for `dtype` on this machine, or None when the profile has none."""
        return self.peak_figures(hw).tflops.get(dtype)

    def peak_memory_gbps(self, hw: HardwareInfo | None = None) -> float | None:
        return self.peak_figures(hw).memory_gbps


# ---------------------------------------------------------------------------- files


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_toml_value(v) for v in value)}]"
    if isinstance(value, dict):
        return f"{{ {', '.join(f'{k} = {_toml_value(v)}' for k, v in value.items())} }}"
    return str(value)


def tile_toml(tile: AttentionTile) -> list[str]:
    """One [[attention]] table, backward tiles included, as TOML lines."""
    lines = ["[[attention]]", f"head_dim = {_toml_value(list(tile.head_dim))}"]
    lines += [f"{k} = {v}" for k, v in tile.launch().items()]
    lines += [f"{k} = {_toml_value(t.launch())}" for k, t in (("dkdv", tile.dkdv), ("dq", tile.dq))
              if t is not None]
    return lines


def peak_toml(peak: GpuPeak | CpuPeak) -> list[str]:
    """The [peak] table and its SKUs as TOML lines that load back to `peak`."""
    data = peak.model_dump(exclude_none=True)
    devices, per_isa = data.pop("devices", []), data.pop("flops_per_cycle", {})
    lines = ["[peak]", *(f"{k} = {_toml_value(v)}" for k, v in data.items())]
    for isa, table in per_isa.items():
        lines += ["", f"[peak.flops_per_cycle.{isa}]", *(f"{k} = {v}" for k, v in table.items())]
    for dev in devices:
        lines += ["", "[[peak.devices]]", *(f"{k} = {_toml_value(v)}" for k, v in dev.items())]
    return lines


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
    loc, message = first_problem(exc, plain=True)
    where = _loc(loc) or "profile"
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
    gpu_profiles = sorted((p for p in shipped.values() if p.kind == "cuda"),
                          key=lambda p: p.family_key)
    for p in gpu_profiles:
        if p.compute_capability == cc:
            return ProfileChoice(p, f"exact match for compute capability {cc[0]}.{cc[1]}")
    lower = [p for p in gpu_profiles if p.family_key < cc]
    if lower:
        best = lower[-1]
        reason = f"no sm{cc[0]}{cc[1]} profile: nearest lower family {best.name}"
    else:
        best = gpu_profiles[0]
        reason = (f"compute capability {cc[0]}.{cc[1]} is below every GPU profile: the lowest, "
                  f"{best.name}")
    if best.family_key[0] != cc[0]:
        reason += (f"{'' if lower else ','} is compute capability {best.family_key[0]}.x, "
                   f"not {cc[0]}.x: no peak figures")
    return ProfileChoice(best, reason)
