"""--trace and --memory-snapshot: one extra call per case, after its timing, under
torch.profiler; trace files, top ops in the JSON and under the table; bad input is one line."""

import json
import os

import pytest

from llmbench.core import tracing
from llmbench.core.errors import UsageError
from llmbench.core.results import CaseResult, json_schema, load_document
from llmbench.core.runner import RunOptions, run_benchmark
from llmbench.core.timing import TimingPolicy, measure
from tests.conftest import assert_bad_input, run_cli, run_cli_inprocess

MATMUL = {"aten::bmm", "aten::matmul", "aten::mm", "aten::baddbmm"}
SOFTMAX = {"aten::softmax", "aten::_softmax"}


def test_attention_writes_one_trace_per_case_and_its_top_ops(tmp_path):
    """Isolated cases (the request travels in the payload to the child and back)."""
    traces, out = tmp_path / "t", tmp_path / "out.json"
    proc = run_cli("attention", "--seq", "512", "--impl", "standard,sdpa-flash,tiled",
                   "--heads", "2", "--max-time", "0.2", "--trace", str(traces),
                   "--json", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    names = ["standard_seq=512_fwd", "sdpa-flash_seq=512_fwd", "tiled_seq=512_fwd"]
    assert sorted(p.name for p in traces.iterdir()) == sorted(f"{n}.json" for n in names)
    for name in names:
        assert json.loads((traces / f"{name}.json").read_text())["traceEvents"]
    doc = load_document(out)
    cases = {c.name: c for c in doc.cases}
    for case in doc.cases:
        assert case.ok and case.trace is not None and case.trace.error is None
        assert case.trace.path == str(traces.resolve() / f"{tracing.stem(case.name)}.json")
        assert case.trace.ranked_by == "self_cpu" and case.trace.wall_ms > 0
        assert 0 < len(case.trace.top) <= tracing.TOP
        assert sum(op.pct for op in case.trace.top) <= 100 + 1e-6
        assert all(op.calls >= 1 and op.self_ms >= 0 for op in case.trace.top)
        assert "time_ms" in case.metrics and tracing.KEY not in case.metrics
    standard = {op.name for op in cases["standard/seq=512/fwd"].trace.top}
    assert standard & MATMUL and standard & SOFTMAX, standard
    flash = cases["sdpa-flash/seq=512/fwd"].trace.top[0].name
    assert flash.startswith("aten::_scaled_dot_product_flash_attention"), flash
    assert "top ops of standard/seq=512/fwd (trace: " in proc.stdout
    assert "no call to trace" not in proc.stderr
    raw = json.loads(out.read_text())
    import jsonschema

    jsonschema.validate(raw, json_schema())


def _recording_call():
    """A timed function that records, per call, whether a profiler was running; a short
    timing policy."""
    import torch

    profiled = []

    def fn():
        profiled.append(torch._C._autograd._profiler_enabled())
        torch.ones(64, 64) @ torch.ones(64, 64)

    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=1, min_runs=3, max_runs=5,
                          min_time_s=0.0, max_time_s=1.0, block_ms=0.0)
    return profiled, fn, policy


def test_no_timed_sample_runs_under_the_profiler():
    """The structural guarantee: measure() takes every sample, then the one traced call."""
    profiled, fn, policy = _recording_call()
    plain = measure(fn, policy=policy)
    assert not any(profiled) and len(profiled) == plain.n + 1  # + the warm-up call

    profiled.clear()
    value = tracing.call_case(lambda payload: {"stats": measure(fn, policy=policy),
                                               "payload": payload},
                              {"x": 1, tracing.KEY: tracing.request(
                                  "c", trace_dir=None, snapshot_dir=None)})
    assert value["payload"] == {"x": 1}  # the request is taken out before the case sees it
    assert not any(profiled)  # nothing requested: no extra call
    assert tracing.KEY not in value


def test_the_traced_call_comes_after_the_samples(tmp_path):
    profiled, fn, policy = _recording_call()

    def case(payload):
        first = measure(fn, policy=policy)
        second = measure(fn, policy=policy)  # only a case's first timed function is traced
        return {"n": first.n + second.n}

    value = tracing.call_case(case, {tracing.KEY: tracing.request(
        "a/b", trace_dir=tmp_path, snapshot_dir=None)})
    assert profiled.count(True) == 1
    # Calls: warm-up + samples of the first measure, the traced one, then the second measure.
    traced_at = profiled.index(True)
    assert not any(profiled[:traced_at]) and not any(profiled[traced_at + 1:])
    assert traced_at >= 1 + 3  # after the warm-up and at least min_runs samples
    found = value[tracing.KEY]
    assert found["path"] == str(tmp_path / "a_b.json") and (tmp_path / "a_b.json").exists()
    assert tracing._current is None  # the request ends with the case


def test_top_ops_on_a_gpu_rank_kernels_by_device_time():
    class Kind:
        def __init__(self, name):
            self.name = name

    class Event:
        def __init__(self, key, count, cpu, device, kind, old=False):
            self.key, self.count, self.self_cpu_time_total = key, count, cpu
            self.device_type = Kind(kind)
            setattr(self, "self_cuda_time_total" if old else "self_device_time_total", device)

    events = [Event("aten::mm", 2, 50.0, 900.0, "CPU"),  # repeats its kernel's device time
              Event("sgemm_kernel", 2, 0.0, 900.0, "CUDA"),
              Event("softmax_kernel", 1, 0.0, 100.0, "CUDA", old=True)]
    top = tracing.top_ops(events, device_side=True)
    assert top["ranked_by"] == "self_device"
    assert [(op["name"], op["pct"]) for op in top["top"]] == [("sgemm_kernel", 90.0),
                                                              ("softmax_kernel", 10.0)]
    cpu = tracing.top_ops(events[:1], device_side=True)  # no device entries: CPU time
    assert cpu["ranked_by"] == "self_cpu" and cpu["top"][0]["pct"] == 100.0


def test_case_names_become_unique_file_names():
    assert tracing.stem("standard/seq=2048/fwd") == "standard_seq=2048_fwd"
    assert tracing.stems(["a/b", "a_b", "A_B", "x y"]) == ["a_b", "a_b-2", "A_B-3", "x_y"]


def test_older_documents_and_untraced_cases_have_no_trace():
    case = CaseResult(name="c", params={}, status="ok")
    assert case.trace is None and "trace" not in json.loads(case.model_dump_json())


@pytest.mark.parametrize("where", ["/proc/nope/x", "FILE/x"])
def test_trace_into_an_unwritable_place_is_one_line(tmp_path, where):
    file = tmp_path / "file"
    file.write_text("")
    path = where.replace("FILE", str(file))
    proc = run_cli_inprocess("attention", "--seq", "64", "--trace", path)
    assert_bad_input(proc, f"--trace {path}: cannot write there: ")


def test_suite_validation_checks_the_directory_without_making_it(tmp_path):
    from llmbench.cli.commands import check

    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UsageError, match=f"^--trace {file}/x: cannot write there: Not a dir"):
        check(["attention", "--trace", str(file / "x")])
    check(["attention", "--trace", str(tmp_path / "new" / "dir")])
    assert not (tmp_path / "new").exists()


def test_memory_snapshot_on_cpu_is_one_line(tmp_path, hw):
    if hw.device == "cuda":
        pytest.skip("a GPU is present")
    proc = run_cli_inprocess("attention", "--seq", "64", "--device", "cpu",
                             "--memory-snapshot", str(tmp_path / "m"))
    assert_bad_input(proc, "--memory-snapshot: the caching allocator's history is CUDA-only "
                     "(this run is on cpu)")
    assert not (tmp_path / "m").exists()


def test_a_case_that_times_nothing_is_named(tmp_path):
    proc = run_cli_inprocess("schedule", "--trace", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "--trace: no call to trace in" in proc.stderr
    assert "top ops of" not in proc.stdout
    assert list((tmp_path / "t").iterdir()) == []


def test_amp_and_an_align_method_get_a_trace(tmp_path, hw, monkeypatch):
    """Benchmarks timing their own loops trace one more step, after their figures."""
    from llmbench.benches.align import AlignBenchmark, AlignConfig
    from llmbench.benches.amp import AmpBenchmark, AmpConfig

    monkeypatch.setenv("LLMBENCH_CACHE", str(tmp_path / "cache"))
    options = RunOptions(isolate=False, trace_dir=str(tmp_path / "t"))
    amp = run_benchmark(AmpBenchmark(), AmpConfig(steps=5, batch=2, seq=16, device="cpu",
                                                  variants=["fp32"]), options=options, hw=hw)
    (case,) = amp.cases
    assert case.ok, case.reason
    assert len(case.metrics["loss_curve"]) == 5 and case.metrics["time_ms"].n == 2
    assert {op.name for op in case.trace.top} & MATMUL
    assert os.path.exists(case.trace.path) and case.trace.path.endswith("/fp32.json")

    align = run_benchmark(AlignBenchmark(), AlignConfig(
        method="rm", steps=3, batch=4, sft_steps=5, train_pairs=32, heldout_pairs=8,
        eval_samples=4, device="cpu"), options=options, hw=hw)
    (case,) = align.cases
    assert case.ok, case.reason
    assert case.metrics["time_ms"].n == 2 and len(case.metrics["history/loss"]) == 3
    assert case.trace.top and os.path.exists(case.trace.path)


def test_the_python_api_takes_trace(tmp_path):
    import llmbench

    doc = llmbench.run("attention", seq=[64], impl=["sdpa-flash"], heads=2, head_dim=16,
                       max_time=0.05, isolate=False, trace=tmp_path / "t")
    (case,) = doc.cases
    assert case.ok and case.trace.top and os.path.exists(case.trace.path)
    with pytest.raises(UsageError, match="^--memory-snapshot: .*CUDA-only"):
        llmbench.run("attention", seq=[64], device="cpu", memory_snapshot=tmp_path / "m")
