import math

import pytest
import torch

from llmbench.benches.precision import PrecisionBenchmark, PrecisionConfig
from llmbench.benches.schedule import ScheduleBenchmark, ScheduleConfig
from llmbench.core.runner import run_benchmark


def test_precision_table_matches_torch():
    doc = run_benchmark(PrecisionBenchmark(), PrecisionConfig())
    by = {c.name: c.metrics for c in doc.cases if c.ok}
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16),
                        ("bf16", torch.bfloat16)):
        info = torch.finfo(dtype)
        assert by[name]["max"] == info.max
        assert by[name]["smallest_normal"] == info.smallest_normal
        assert by[name]["eps"] == info.eps
        assert by[name]["bits"] == info.bits
    assert (by["fp16"]["exponent_bits"], by["fp16"]["mantissa_bits"]) == (5, 10)
    assert (by["bf16"]["exponent_bits"], by["bf16"]["mantissa_bits"]) == (8, 7)
    assert by["fp16"]["smallest_subnormal"] == 2.0**-24
    assert by["bf16"]["smallest_subnormal"] == 2.0**-133
    assert by["fp32"]["smallest_subnormal"] == 2.0**-149
    assert math.isclose(by["fp32"]["decimal_digits"], 24 * math.log10(2))
    if "float8_e4m3fn" in by:
        assert by["float8_e4m3fn"]["max"] == 448.0
        assert by["float8_e4m3fn"]["smallest_subnormal"] == 2.0**-9
    if "float8_e5m2fnuz" in by:
        assert by["float8_e5m2fnuz"]["mantissa_bits"] == 2
    if "float8_e8m0fnu" in by:
        assert by["float8_e8m0fnu"]["smallest_subnormal"] is None
        assert by["float8_e8m0fnu"]["sign_bits"] == 0
    with pytest.raises(ValueError, match="unknown format 'fp4'"):
        PrecisionConfig(formats=["fp4"])


def test_schedule_cases_hold_whole_curves():
    cfg = ScheduleConfig(kinds=["cosine", "linear", "constant"], total=200, warmup=20)
    doc = run_benchmark(ScheduleBenchmark(), cfg)
    by = {c.name: c.metrics for c in doc.cases}
    assert all(len(m["lr_curve"]) == 201 for m in by.values())
    assert by["cosine"]["lr_final"] == pytest.approx(3e-5)
    assert by["linear"]["lr_final"] == 0.0
    assert by["constant"]["lr_final"] == 3e-4
    assert doc.summary["steps_shown"] == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200]


@pytest.mark.parametrize("kwargs, message", [
    ({"kinds": ["step"]}, "unknown schedule 'step'"),
    ({"warmup": 2000, "total": 1000}, "warmup 2000 is longer than total 1000"),
    ({"min_lr_ratio": 2.0}, "less than or equal to 1"),
    ({"at": [5000]}, "outside 0..1000"),
])
def test_schedule_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduleConfig(**kwargs)


def test_sparkline_handles_any_range():
    from llmbench.report.formats import sparkline

    assert sparkline([0.0, 1.0]) == " █"
    assert sparkline([-3.0, -1.0, 1.0]) == " ▄█"
    assert sparkline([5.0, 5.0]) == "  "
    assert sparkline([1.0, float("nan"), 2.0]) == " ?█"
    assert len(sparkline(list(range(500)), 40)) == 40
