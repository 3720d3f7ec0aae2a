"""`llmbench precision`: the floating-point formats torch has, read from torch, not typed in.

Per format: bits, sign/exponent/mantissa bits, max, smallest normal, smallest subnormal, machine
epsilon, decimal digits. bits, max and smallest normal come from torch.finfo. Epsilon and the
smallest subnormal are found by casting in torch (the smallest power of two that 1 + e keeps;
halving the smallest normal while the format still holds it exactly), because torch.finfo's eps
is off for some fp8 formats (float8_e5m2fnuz: 0.125 for a 2-bit mantissa); where finfo
disagrees, the case says so.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.hardware import HardwareInfo

FORMATS = ("fp64", "fp32", "fp16", "bf16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
           "float8_e5m2fnuz", "float8_e8m0fnu")
_TORCH_NAMES = {"fp64": "float64", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class PrecisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    formats: Annotated[list[str], Field(min_length=1), Opt(
        "fp64, fp32, fp16, bf16 and the float8 types torch has.", default_text="all")] = list(
        FORMATS)

    @field_validator("formats")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for f in v:
            if f not in FORMATS:
                raise ValueError(f"unknown format {f!r} (choose from {', '.join(FORMATS)})")
        return list(dict.fromkeys(v))


class PrecisionCase(BaseModel):
    model_config = RECORD

    format: str


class PrecisionBenchmark(Benchmark[PrecisionConfig]):
    name = "precision"
    help = """Floating-point formats: bits, range, smallest normal and subnormal, epsilon, digits.

    Read from torch (torch.finfo, and casts that check it), not typed in.
    """
    run_options = ()
    renderer = "llmbench.report.formats:render_precision"
    no_plot = "one row per number format: a table of exact values"
    config_type = PrecisionConfig
    params_type = PrecisionCase
    metrics = (
        Metric("bits", "1", "info", "bits per number"),
        Metric("sign_bits", "1", "info", "sign bits"),
        Metric("exponent_bits", "1", "info", "exponent bits"),
        Metric("mantissa_bits", "1", "info", "mantissa bits"),
        Metric("max", "1", "info", "the largest finite value"),
        Metric("smallest_normal", "1", "info", "the smallest positive normal value"),
        Metric("smallest_subnormal", "1", "info", "the smallest positive subnormal value"),
        Metric("eps", "1", "info", "machine epsilon: the gap between 1 and the next value"),
        Metric("decimal_digits", "1", "info", "decimal digits of precision"),
        Metric("storage", "", "info", "torch's name of the dtype"),
        Metric("note", "", "info", "where torch.finfo disagrees with the casts"),
    )
    case_target = "llmbench.benches.precision:run_case"
    isolated = False

    def device_of(self, config: PrecisionConfig, hw: HardwareInfo) -> str:
        return "cpu"

    def plan(self, config: PrecisionConfig, ctx: PlanContext) -> list[CasePlan]:
        import torch

        plans = []
        for fmt in config.formats:
            missing = None
            if not hasattr(torch, _TORCH_NAMES.get(fmt, fmt)):
                missing = f"torch {torch.__version__} has no torch.{_TORCH_NAMES.get(fmt, fmt)}"
            plans.append(CasePlan(name=fmt, params={"format": fmt}, unavailable=missing))
        return plans


def _held(torch, value: float, dtype) -> bool:  # noqa: ANN001
    """Does the format hold `value` exactly?"""
    return float(torch.tensor(value, dtype=torch.float64).to(dtype).double()) == value


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    import torch

    fmt = payload["params"]["format"]
    dtype = getattr(torch, _TORCH_NAMES.get(fmt, fmt))
    info = torch.finfo(dtype)
    eps = 1.0
    while 1.0 + eps / 2 != 1.0 and _held(torch, 1.0 + eps / 2, dtype):  # != : fp64's own limit
        eps /= 2
    mantissa = round(-math.log2(eps)) if eps < 1.0 else 0
    sign = _held(torch, -1.0, dtype)
    smallest = float(info.smallest_normal)
    while smallest / 2 > 0 and _held(torch, smallest / 2, dtype):
        smallest /= 2
    out: dict[str, Any] = {
        "bits": info.bits,
        "sign_bits": int(sign),
        "exponent_bits": info.bits - int(sign) - mantissa,
        "mantissa_bits": mantissa,
        "max": float(info.max),
        "smallest_normal": float(info.smallest_normal),
        "smallest_subnormal": smallest if smallest < info.smallest_normal else None,
        "eps": eps,
        "decimal_digits": (mantissa + 1) * math.log10(2),
        "storage": str(dtype).removeprefix("torch."),
    }
    if float(info.eps) != eps:
        out["note"] = f"torch.finfo gives eps {float(info.eps):g}; casting shows {eps:g}"
    return out
