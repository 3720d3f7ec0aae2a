import json
import math
import shutil
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from llmbench.benches import metric_of
from llmbench.ci.compare import compare, compare_metric, load_side, parse_threshold
from llmbench.ci.stats import mann_whitney_p, smallest_p
from llmbench.core.errors import UsageError
from llmbench.core.results import ResultsError
from llmbench.core.timing import TimeStats
from llmbench.report.compare import junit, markdown
from tests.conftest import run_cli, run_cli_inprocess


def stats(samples):
    return TimeStats.from_samples(samples)


BASE = [10.0 + 0.1 * (i % 7) for i in range(30)]


def test_statistics_on_known_samples():
    assert smallest_p(3, 3) == pytest.approx(0.1)
    assert smallest_p(5, 5) == pytest.approx(2 / 252)
    assert smallest_p(0, 4) == 1.0
    assert mann_whitney_p(BASE, BASE) == pytest.approx(1.0)
    assert mann_whitney_p(BASE, [x * 1.2 for x in BASE]) < 1e-9


def judge(benchmark, name, base, new, **kw):
    """compare_metric as `compare` calls it: with the metric's declaration."""
    return compare_metric("b", "c", name, base, new, threshold=kw.get("threshold", 0.05),
                          alpha=0.01, declared=metric_of(benchmark, name))


@pytest.mark.parametrize("factor, verdict", [
    (1.2, "regression"), (1.03, "within-threshold"), (0.8, "improvement"), (1.0, "unchanged"),
])
def test_time_metric_verdicts(factor, verdict):
    row = judge("attention", "time_ms", stats(BASE), stats([x * factor for x in BASE]))
    assert row.verdict == verdict
    assert row.change == pytest.approx(factor - 1)


def test_directions_from_declarations():
    worse_acc = judge("align", "eval/accuracy", 0.95, 0.80)
    assert worse_acc.verdict == "regression" and worse_acc.direction == "higher"
    for bench, derived in (("attention", "throughput_tflops"), ("amp", "tokens_per_s"),
                           ("attention", "speedup_vs_standard_x"),
                           ("checkpoint", "overhead_pct"),
                           ("checkpoint", "activation_saved_pct")):
        assert judge(bench, derived, 10.0, 1.0) is None  # judged through the measurement
    better_mem = judge("attention", "peak_memory_bytes", 100, 50)
    assert better_mem.verdict == "improvement"
    assert judge("attention", "predicted_memory_bytes", 1, 9) is None  # a prediction
    assert judge("attention", "error_rows_checked", 1, 9) is None  # information only
    from_zero = judge("attention", "peak_memory_bytes", 0, 10)
    assert math.isinf(from_zero.change) and from_zero.verdict == "regression"
    # What the old name-suffix rule got wrong: a slowdown is better low (higher by its _x),
    # and the loss before training says nothing about the run (lower by its name).
    assert metric_of("accum", "slowdown_vs_whole_x").better == "lower"
    assert judge("amp", "first_loss", 5.0, 9.0) is None
    assert judge("kvcache", "not_a_declared_metric", 1, 9) is None


def test_an_error_metric_below_its_floor_is_rounding():
    from llmbench.core.declare import Metric

    error = Metric("grad_max_abs_error", "abs", "lower", family="error", floor=1e-6)
    tiny = compare_metric("b", "c", error.name, 0.0, 1e-9, threshold=0.05, alpha=0.01,
                          declared=error)
    assert tiny.verdict == "within-threshold" and "floor" in tiny.note
    real = compare_metric("b", "c", error.name, 0.0, 1e-3, threshold=0.05, alpha=0.01,
                          declared=error)
    assert real.verdict == "regression" and math.isinf(real.change)


def test_undeclared_metrics_are_listed_not_judged(tiny_run, tmp_path):
    """A metric this llmbench does not declare (a document from another version) is named in
    the comparison, never gated."""
    import shutil

    new = tmp_path / "new"
    shutil.copytree(tiny_run, new)
    path = new / "attention.json"
    doc = json.loads(path.read_text())
    for case in doc["cases"]:
        case["metrics"]["renamed_ms"] = 1.0
    path.write_text(json.dumps(doc))
    base = tmp_path / "base"
    shutil.copytree(new, base)
    result = compare(load_side(base), load_side(new))
    assert "attention.renamed_ms" in result.undeclared
    assert not any(m.metric == "renamed_ms" for m in result.metrics)


def test_noise_is_not_a_regression():
    import random

    rng = random.Random(0)
    a = [10 * rng.uniform(0.6, 1.4) for _ in range(20)]
    b = [10 * rng.uniform(0.6, 1.4) * 1.08 for _ in range(20)]
    row = judge("attention", "time_ms", stats(a), stats(b))
    assert abs(row.change) > 0.05
    assert row.verdict == "not-significant" and row.p_value >= 0.01


def test_few_samples_fall_back_to_the_threshold():
    row = judge("attention", "time_ms", stats([10.0, 10.1]), stats([13.0, 13.1]))
    assert row.verdict == "regression" and "too few samples" in row.note


def test_parse_threshold():
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("0.1") == pytest.approx(0.1)
    with pytest.raises(UsageError, match="not a threshold"):
        parse_threshold("lots")


def _scaled(run, tmp_path, factor=None, status=None, name="scaled"):
    """A copy of the run with one attention case's time samples scaled (or its status set)."""
    out = tmp_path / name
    shutil.copytree(run, out)
    path = out / "attention.json"
    doc = json.loads(path.read_text())
    case = next(c for c in doc["cases"] if c["name"] == "sdpa-flash/seq=128/fwd")
    if factor is not None:
        t = case["metrics"]["time_ms"]
        samples = [s * factor for s in t["samples"]]
        case["metrics"]["time_ms"] = TimeStats.from_samples(samples).model_dump()
    if status is not None:
        case["status"], case["reason"], case["metrics"] = status, "CUDA out of memory", {}
    path.write_text(json.dumps(doc))
    return out


def test_acceptance_exit_codes(tiny_run, tmp_path):
    same = run_cli("compare", str(tiny_run), str(tiny_run))
    assert same.returncode == 0, same.stdout + same.stderr
    slow = run_cli("compare", str(tiny_run), str(_scaled(tiny_run, tmp_path, 1.2)))
    assert slow.returncode == 1, slow.stdout
    assert "time_ms" in slow.stdout and "sdpa-flash/seq=128/fwd" in slow.stdout
    a_bit = run_cli("compare", str(tiny_run), str(_scaled(tiny_run, tmp_path, 1.03, name="b")))
    assert a_bit.returncode == 0, a_bit.stdout
    oom = run_cli("compare", str(tiny_run), str(_scaled(tiny_run, tmp_path, status="oom",
                                                        name="c")))
    assert oom.returncode == 1
    assert "ok -> oom" in oom.stdout


def test_comparison_details(tiny_run, tmp_path):
    base = load_side(tiny_run)
    assert set(base.docs) == {"attention", "kvcache", "schedule"}
    assert base.thresholds["attention"] == {"peak_memory_bytes": 0.5}
    new = load_side(_scaled(tiny_run, tmp_path, 1.2))
    result = compare(base, new, threshold=0.05, alpha=0.01)
    (reg,) = result.regressions
    assert (reg.label, reg.case, reg.metric) == ("attention", "sdpa-flash/seq=128/fwd",
                                                 "time_ms")
    assert reg.p_value is not None and reg.p_value < 0.01
    # Per-metric thresholds from the suite apply, then per family, then the default.
    assert all(m.threshold == 0.5 for m in result.metrics if m.metric == "peak_memory_bytes")
    assert all(m.threshold == 0.05 for m in result.metrics if m.metric == "max_abs_error")
    family = load_side(tiny_run)
    family.thresholds["attention"] = {"time": 0.3}
    relaxed = compare(family, new, threshold=0.05, alpha=0.01)
    assert not relaxed.regressions  # +20 % is within a 30 % time threshold
    md = markdown(result)
    assert ":x:" in md and "`time_ms`" in md
    tree = ET.fromstring(junit(result))
    assert int(tree.get("tests")) == len(result.metrics)
    assert int(tree.get("failures")) == 1
    assert len(tree.findall("testcase/failure")) == 1


def test_one_sided_cases_and_environment(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    path = other / "attention.json"
    doc = json.loads(path.read_text())
    doc["cases"] = doc["cases"][1:]
    doc["env"]["torch"] = "9.9.9"
    path.write_text(json.dumps(doc))
    (other / "schedule.json").unlink()
    result = compare(load_side(tiny_run), load_side(other))
    assert "schedule (whole benchmark)" in result.only_base
    assert any(item.startswith("attention: ") for item in result.only_base)
    assert any("torch" in w and "9.9.9" in w for w in result.env_warnings)
    assert not result.failed


def test_bad_input(tiny_run, tmp_path):
    missing = run_cli("compare", str(tmp_path / "nope"), str(tiny_run))
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    bad = run_cli("compare", str(foreign), str(tiny_run / "attention.json"))
    assert bad.returncode == 2 and "not an llmbench result" in bad.stderr
    future = tmp_path / "future.json"
    doc = json.loads((tiny_run / "attention.json").read_text())
    doc["schema_version"] = 2
    future.write_text(json.dumps(doc))
    mismatch = run_cli("compare", str(tiny_run / "attention.json"), str(future))
    assert mismatch.returncode == 2
    assert "schema_version 2 is not supported" in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match="no llmbench result files"):
        load_side(empty)


def test_markdown_and_junit_from_the_cli(tiny_run, tmp_path):
    out = tmp_path / "junit.xml"
    proc = run_cli("compare", str(tiny_run), str(tiny_run), "--format", "markdown", "--junit",
                   str(out))
    assert proc.returncode == 0
    assert proc.stdout.startswith("### llmbench: :white_check_mark:")
    assert ET.parse(out).getroot().get("failures") == "0"
    as_json = run_cli_inprocess("compare", str(tiny_run), str(tiny_run), "--format", "json")
    assert as_json.returncode == 0
    result = json.loads(as_json.stdout)
    assert result["metrics"] and not any(m["verdict"] == "regression" for m in result["metrics"])
    old = run_cli_inprocess("compare", str(tiny_run), str(tiny_run), "--markdown")
    assert old.stdout == proc.stdout  # the old spelling still works


def _with_env(run, tmp_path, name, **changes):
    """A copy of the run whose attention document's env has `changes` (None: field removed)."""
    out = tmp_path / name
    shutil.copytree(run, out)
    path = out / "attention.json"
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc["env"].pop(key, None)
        else:
            doc["env"][key] = value
    path.write_text(json.dumps(doc))
    return out


def test_environment_settings_that_differ_are_reported_not_judged(tiny_run, tmp_path):
    from llmbench.report.compare import render

    base = _with_env(tiny_run, tmp_path, "base", torch_threads=8, cpu_affinity="0-7",
                     matmul_allow_tf32=False, cudnn_benchmark=False,
                     gpu_sm_clock_max_mhz=1980, gpu_power_limit_w=700.0,
                     gpu_persistence_mode=True, gpu_ecc=True, gpu_sm_clock_mhz=345)
    new = _with_env(tiny_run, tmp_path, "new", torch_threads=1, cpu_affinity="0",
                    matmul_allow_tf32=True, cudnn_benchmark=True, cuda_visible_devices="1",
                    gpu_sm_clock_max_mhz=1755, gpu_power_limit_w=500.0,
                    gpu_persistence_mode=False, gpu_ecc=False, gpu_sm_clock_mhz=1980)
    result = compare(load_side(base), load_side(new))
    assert not result.failed
    fields = {d.field: d for d in result.env_differences}
    assert set(fields) == {"torch_threads", "cpu_affinity", "matmul_allow_tf32",
                           "cudnn_benchmark", "cuda_visible_devices", "gpu_sm_clock_max_mhz",
                           "gpu_power_limit_w", "gpu_persistence_mode", "gpu_ecc"}
    assert (fields["torch_threads"].base, fields["torch_threads"].new) == (8, 1)
    assert fields["cuda_visible_devices"].label == "attention"
    assert "attention: torch_threads 8 -> 1" in result.env_warnings
    assert "attention: cuda_visible_devices None -> '1'" in result.env_warnings
    assert "attention: gpu_power_limit_w 700.0 -> 500.0" in result.env_warnings
    md = markdown(result)
    assert "- attention: torch_threads 8 -> 1" in md and "cudnn_benchmark" in md
    console = Console(record=True, width=200, color_system=None)
    render(result, console)
    text = console.export_text()
    assert "environment differs: attention: matmul_allow_tf32 False -> True" in text
    cli = run_cli("compare", str(base), str(new))
    assert cli.returncode == 0 and "gpu_ecc True -> False" in cli.stdout


def test_settings_an_older_llmbench_did_not_record_are_not_differences(tiny_run, tmp_path):
    old = _with_env(tiny_run, tmp_path, "old", torch_threads=None, cpu_affinity=None,
                    matmul_allow_tf32=None, cudnn_allow_tf32=None, cudnn_benchmark=None,
                    cuda_visible_devices=None)
    assert "torch_threads" not in json.loads((old / "attention.json").read_text())["env"]
    result = compare(load_side(old), load_side(tiny_run))
    assert result.env_warnings == [] and result.env_differences == []


def test_throttled_cases_are_named_but_not_judged(tiny_run, tmp_path):
    out = tmp_path / "hot"
    shutil.copytree(tiny_run, out)
    path = out / "attention.json"
    doc = json.loads(path.read_text())
    case = next(c for c in doc["cases"] if c["name"] == "sdpa-flash/seq=128/fwd")
    case["metrics"].update(gpu_throttled=True, gpu_throttle_reasons="hw_thermal_slowdown",
                           gpu_sm_clock_mhz_start=1980, gpu_sm_clock_mhz_end=990,
                           gpu_sm_clock_max_mhz=1980)
    path.write_text(json.dumps(doc))
    result = compare(load_side(tiny_run), load_side(out))
    assert not result.failed
    assert not any(m.metric.startswith("gpu_") for m in result.metrics)
    assert result.throttled == ["new: attention: sdpa-flash/seq=128/fwd"]
    assert "GPU throttled" in markdown(result)
