import json
import os

import jsonschema
import pytest

from llmbench.core.errors import UsageError
from llmbench.core.results import (
    CaseResult,
    EnvInfo,
    ResultDocument,
    ResultsError,
    json_schema,
    load_document,
    metric_direction,
    write_atomic,
    write_document,
)
from llmbench.core.timing import TimeStats


def make_doc() -> ResultDocument:
    return ResultDocument(
        benchmark="attention",
        env=EnvInfo(device="cpu", cpu_model="test cpu", cores=2, profile="cpu"),
        config={"seqs": [128]},
        cases=[
            CaseResult(name="standard/seq=128/fwd", params={"impl": "standard", "seq": 128},
                       status="ok", metrics={
                           "time_ms": TimeStats.from_samples([1.0, 1.1, 1.2]),
                           "peak_memory_bytes": 1024, "max_abs_error": 1e-7}),
            CaseResult(name="flash-attn/seq=128/fwd", params={"impl": "flash-attn"},
                       status="unavailable", reason="flash-attn runs only on NVIDIA GPUs"),
        ])


def test_contract_keys(tmp_path):
    path = write_document(make_doc(), tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert set(data) == {"schema_version", "tool", "benchmark", "created_at", "env", "config",
                         "cases", "summary"}
    assert data["schema_version"] == 1
    assert data["tool"]["name"] == "llmbench"
    case = data["cases"][0]
    assert set(case) == {"name", "params", "status", "reason", "metrics"}
    assert set(case["metrics"]["time_ms"]) == {"median", "iqr", "p10", "p90", "n", "samples",
                                               "noisy"}
    for key in ("device", "gpu_name", "compute_capability", "driver", "cuda", "torch",
                "triton", "flash_attn", "cpu_model", "cores", "ram_bytes", "python", "os",
                "git_commit", "profile"):
        assert key in data["env"]
    assert data["cases"][1]["status"] == "unavailable"


def test_document_validates_against_exported_schema(tmp_path):
    data = json.loads(make_doc().to_json())
    jsonschema.validate(data, json_schema())
    data["cases"][0]["status"] = "exploded"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema())


def test_round_trip(tmp_path):
    path = write_document(make_doc(), tmp_path / "r.json")
    doc = load_document(path)
    assert doc.cases[0].time().median == pytest.approx(1.1)
    assert doc.cases[0].metrics["peak_memory_bytes"] == 1024


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    path.write_text("old")

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic("new contents", path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_atomic_write_replaces(tmp_path):
    path = tmp_path / "sub" / "r.json"
    write_atomic("one", path)
    write_atomic("two", path)
    assert path.read_text() == "two"
    assert len(list(path.parent.iterdir())) == 1
    with pytest.raises(UsageError, match="is a directory"):
        write_atomic("x", tmp_path)


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    ('{"a": 1}', "not an llmbench result"),
    ('{"tool": {"name": "llmbench"}, "schema_version": 99}', "schema_version 99 is not"),
])
def test_load_rejects(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load_document(path)
    with pytest.raises(ResultsError, match="no such file"):
        load_document(tmp_path / "missing.json")


@pytest.mark.parametrize("name, direction", [
    ("time_ms", "lower"), ("peak_memory_bytes", "lower"), ("max_abs_error", "lower"),
    ("throughput_tflops", "higher"), ("tokens_per_s", "higher"), ("accuracy", "higher"),
    ("speedup_vs_standard_x", "higher"), ("peak_utilization_pct", "higher"),
    ("predicted_memory_bytes", None), ("error_rows_checked", None), ("overhead_pct", "lower"),
])
def test_metric_direction(name, direction):
    assert metric_direction(name) == direction
