import json
import os

import jsonschema
import pytest

from llmbench.core.errors import OutputError, UsageError
from llmbench.core.results import (
    CaseResult,
    EnvInfo,
    ResultDocument,
    ResultsError,
    json_schema,
    load_document,
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
    with pytest.raises(OutputError, match=f"^cannot write {path}: disk gone$"):
        write_atomic("new contents", path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_an_unwritable_document_is_kept_in_the_cache_else_in_the_temp_folder(tmp_path,
                                                                         monkeypatch):
    from llmbench.core.results import keep_unsaved

    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    kept = keep_unsaved("doc", "attention.json")
    assert kept.parent == tmp_path / "cache" / "unsaved" and kept.read_text() == "doc"
    assert kept.name.startswith("attention-") and kept.suffix == ".json"
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "file"))  # a file: no folder there
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    kept = keep_unsaved("doc", "r.json")
    assert kept.parent == tmp_path / "tmp" / "llmbench-unsaved"
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "file"))
    assert keep_unsaved("doc", "r.json") is None


def test_check_writable_refuses_what_cannot_be_a_file_before_a_run(tmp_path):
    from llmbench.core.results import check_writable

    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="^--json .*/f/r.json: cannot make its folder: "):
        check_writable(tmp_path / "f" / "r.json", "--json")
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path, "--json")
    check_writable(tmp_path / "new" / "r.json", "--json")
    assert (tmp_path / "new").is_dir()


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


NEW_ENV_FIELDS = ("torch_threads", "cpu_affinity", "matmul_allow_tf32", "cudnn_allow_tf32",
                  "cudnn_benchmark", "cuda_visible_devices", "gpu_sm_clock_mhz",
                  "gpu_sm_clock_max_mhz", "gpu_mem_clock_mhz", "gpu_mem_clock_max_mhz",
                  "gpu_power_limit_w", "gpu_power_draw_w", "gpu_temperature_c",
                  "gpu_persistence_mode", "gpu_ecc")


def test_env_settings_are_optional_fields(tmp_path):
    """Documents written before the settings were recorded still load (the fields are null and
    unset); new documents carry them and validate against the schema."""
    data = json.loads(make_doc().to_json())
    for key in NEW_ENV_FIELDS:
        data["env"].pop(key)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    doc = load_document(old)
    assert all(getattr(doc.env, key) is None for key in NEW_ENV_FIELDS)
    assert not doc.env.model_fields_set & set(NEW_ENV_FIELDS)
    env = EnvInfo(device="cuda", cpu_model="x", cores=2, profile="sm90", torch_threads=4,
                  cpu_affinity="0-3", matmul_allow_tf32=True, cudnn_allow_tf32=True,
                  cudnn_benchmark=False, cuda_visible_devices="GPU-1234",
                  gpu_sm_clock_mhz=345, gpu_sm_clock_max_mhz=1980, gpu_mem_clock_mhz=2619,
                  gpu_mem_clock_max_mhz=2619, gpu_power_limit_w=700.0, gpu_power_draw_w=74.5,
                  gpu_temperature_c=31, gpu_persistence_mode=True, gpu_ecc=True)
    new = make_doc().model_copy(update={"env": env})
    new.cases[0].metrics.update(gpu_throttled=True, gpu_throttle_reasons="sw_power_cap",
                                gpu_sm_clock_mhz_start=1980, gpu_sm_clock_mhz_end=1410,
                                gpu_sm_clock_max_mhz=1980)
    jsonschema.validate(json.loads(new.to_json()), json_schema())
    back = load_document(write_document(new, tmp_path / "new.json"))
    assert back.env.gpu_power_limit_w == 700.0 and back.env.cpu_affinity == "0-3"
    assert back.cases[0].metrics["gpu_throttle_reasons"] == "sw_power_cap"
    schema_env = json_schema()["$defs"]["EnvInfo"]["properties"]
    assert set(NEW_ENV_FIELDS) <= set(schema_env)
