"""What the env records about the machine's settings, and per-case GPU throttling, on faked NVML
readings (this machine has no NVIDIA GPU)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
from rich.console import Console

from llmbench.benches import metric_of
from llmbench.core.benchmark import CasePlan
from llmbench.core.hardware import GpuInfo, HardwareInfo
from llmbench.core.profiles import select_profile
from llmbench.core.results import CaseResult, EnvInfo, ResultDocument
from llmbench.core.runner import RunOptions, build_env, run_case
from llmbench.core.timing import TimeStats

pynvml = pytest.importorskip("pynvml")

MAX_SM, MAX_MEM = 1980, 2619
THERMAL = 0x40  # nvmlClocksEventReasonHwThermalSlowdown
IDLE = 0x1  # nvmlClocksEventReasonGpuIdle


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """pynvml's functions over one H200-like device. A case moves `phase` from 0 (its start) to
    1 (its end), so the two samples can read differently."""

    def __init__(self, sm=(1980, 1980), reasons=(0, 0), fail: set[str] | None = None):
        self.sm, self.reasons, self.fail = sm, reasons, fail or set()
        self.phase = 0
        self.inits = self.shutdowns = 0
        self.handles: list[str] = []

    def install(self, monkeypatch):
        def call(name, fn):
            def wrapped(*args):
                if name in self.fail:
                    raise FakeNVMLError(f"{name}: Not Supported")
                return fn(*args)
            monkeypatch.setattr(pynvml, name, wrapped)

        def init():
            self.inits += 1

        def shutdown():
            self.shutdowns += 1

        def by_uuid(uuid):
            self.handles.append(uuid)
            return "handle"

        def by_index(i):
            self.handles.append(f"index {i}")
            return "handle"

        def clock(handle, kind):
            return self.sm[self.phase] if kind == pynvml.NVML_CLOCK_SM else 1593

        call("nvmlInit", init)
        call("nvmlShutdown", shutdown)
        call("nvmlDeviceGetHandleByUUID", by_uuid)
        call("nvmlDeviceGetHandleByIndex", by_index)
        call("nvmlDeviceGetClockInfo", clock)
        call("nvmlDeviceGetMaxClockInfo",
             lambda h, kind: MAX_SM if kind == pynvml.NVML_CLOCK_SM else MAX_MEM)
        call("nvmlDeviceGetCurrentClocksEventReasons", lambda h: self.reasons[self.phase])
        call("nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: self.reasons[self.phase])
        call("nvmlDeviceGetTemperature", lambda h, sensor: 61 + 20 * self.phase)
        call("nvmlDeviceGetEnforcedPowerLimit", lambda h: 700_000)
        call("nvmlDeviceGetPowerManagementLimit", lambda h: 700_000)
        call("nvmlDeviceGetPowerUsage", lambda h: 95_500)
        call("nvmlDeviceGetPersistenceMode", lambda h: 1)
        call("nvmlDeviceGetEccMode", lambda h: [1, 1])
        return self


CURRENT: FakeNvml | None = None


def gpu_case(payload):
    """A case target: the work moves the fake GPU from its start readings to its end ones."""
    if payload.get("fail"):
        raise RuntimeError("the case itself failed")
    if CURRENT is not None:
        CURRENT.phase = 1
    return {"time_ms": TimeStats.from_samples([1.0, 1.1, 1.2])}


def plain_case(payload):
    return {"device": payload["params"]["device"], "pid": os.getpid()}


BENCH = SimpleNamespace(case_target="tests.test_gpu_state:gpu_case", isolated=True)


@pytest.fixture
def nvml(monkeypatch):
    """Install a fake; the test sets its readings."""

    def make(**kwargs):
        global CURRENT
        CURRENT = FakeNvml(**kwargs).install(monkeypatch)
        return CURRENT

    yield make
    globals()["CURRENT"] = None


# A whole attention case's params, as the attention benchmark plans them (its renderer reads
# them as the typed AttentionCase).
PARAMS = {"impl": "sdpa", "seq": 128, "batch": 1, "heads": 2, "kv_heads": 2, "head_dim": 16,
          "dtype": "bf16", "causal": True, "mode": "fwd", "device": "cuda"}


def run_gpu_case(params=None, **payload) -> CaseResult:
    plan = CasePlan(name="sdpa/seq=128/fwd", params=params or PARAMS, run_args=payload)
    return run_case(BENCH, plan, RunOptions(isolate=False), "cuda", gpu_uuid="GPU-1234")


def render(cases: list[CaseResult]) -> str:
    from llmbench.report import render as render_doc

    doc = ResultDocument(
        benchmark="attention",
        env=EnvInfo(device="cuda", gpu_name="NVIDIA H200", cpu_model="cpu", cores=2,
                    profile="h200"),
        config={"batch": 1, "heads": 2, "kv_heads": 2, "head_dim": 16, "dtype": "bf16",
                "causal": True, "mode": "fwd"},
        cases=cases)
    console = Console(record=True, width=220, color_system=None)
    render_doc(doc, console)
    return console.export_text()


# ------------------------------------------------------------------ throttling, per case


def test_thermal_throttling_at_the_end_is_flagged_in_json_and_table(nvml):
    fake = nvml(sm=(1980, 1410), reasons=(IDLE, THERMAL))
    case = run_gpu_case()
    assert case.ok
    m = case.metrics
    assert m["gpu_throttled"] is True
    assert m["gpu_throttle_reasons"] == "gpu_idle,hw_thermal_slowdown"
    assert (m["gpu_sm_clock_mhz_start"], m["gpu_sm_clock_mhz_end"]) == (1980, 1410)
    assert m["gpu_sm_clock_max_mhz"] == MAX_SM
    assert (m["gpu_temperature_c_start"], m["gpu_temperature_c_end"]) == (61, 81)
    assert fake.inits == 1 and fake.shutdowns == 1  # one NVML session per case
    assert fake.handles == ["GPU-1234"]  # the GPU the run detected, by UUID
    dumped = CaseResult.model_validate_json(case.model_dump_json())
    assert dumped.metrics["gpu_throttled"] is True
    text = render([case])
    row = next(line for line in text.splitlines() if line.startswith("sdpa"))
    assert "throttled" in row
    assert "hw_thermal_slowdown" in text


def test_low_sm_clock_under_load_is_throttling(nvml):
    nvml(sm=(1980, 1200), reasons=(0, 0))  # 1200 < 75 % of 1980, no reason given
    case = run_gpu_case()
    assert case.metrics["gpu_throttled"] is True
    assert case.metrics["gpu_throttle_reasons"] == ""
    assert "1200 of 1980 MHz" in render([case])


def test_unthrottled_case_is_not_flagged(nvml):
    # Idle at the start (the clock has dropped, as an idle GPU's does), full speed at the end.
    nvml(sm=(345, 1980), reasons=(IDLE, 0))
    case = run_gpu_case()
    assert case.ok and case.metrics["gpu_throttled"] is False
    text = render([case])
    assert "throttled" not in text
    # Application clocks and sync boost are settings, not throttling.
    nvml(sm=(1755, 1755), reasons=(0x2, 0x10))
    assert run_gpu_case().metrics["gpu_throttled"] is False


@pytest.mark.parametrize("reason", [0x4, 0x8, 0x20, 0x40, 0x80])
def test_each_thermal_or_power_reason_throttles(nvml, reason):
    nvml(reasons=(reason, 0))
    assert run_gpu_case().metrics["gpu_throttled"] is True


def test_sampling_failures_leave_the_case_ok(nvml):
    nvml(fail={"nvmlInit"})
    case = run_gpu_case()
    assert case.ok and not any(k.startswith("gpu_") for k in case.metrics)
    fake = nvml(fail={"nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo",
                      "nvmlDeviceGetCurrentClocksEventReasons",
                      "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetTemperature"})
    case = run_gpu_case()
    assert case.ok and not any(k.startswith("gpu_") for k in case.metrics)
    assert fake.shutdowns == fake.inits == 1
    # An older driver without the "events" name: the throttle-reasons one answers.
    nvml(reasons=(0, THERMAL), fail={"nvmlDeviceGetCurrentClocksEventReasons"})
    assert run_gpu_case().metrics["gpu_throttled"] is True


def test_a_failing_case_keeps_its_own_error(nvml):
    fake = nvml()
    case = run_gpu_case(fail=True)
    assert case.status == "error" and "the case itself failed" in case.reason
    assert fake.shutdowns == fake.inits == 1


def test_cpu_cases_are_not_sampled(nvml):
    fake = nvml(reasons=(THERMAL, THERMAL))
    case = run_gpu_case(params={**PARAMS, "device": "cpu"})
    assert case.ok and "gpu_throttled" not in case.metrics
    assert fake.inits == 0
    plan = CasePlan(name="x", params={"impl": "sdpa"})
    case = run_case(BENCH, plan, RunOptions(isolate=False), "cpu")
    assert case.ok and fake.inits == 0


def test_isolated_child_samples_and_survives_a_missing_nvml():
    # The child imports the real pynvml: no NVIDIA library here, so sampling fails quietly.
    bench = SimpleNamespace(case_target="tests.test_gpu_state:plain_case", isolated=True)
    plan = CasePlan(name="x", params={"device": "cuda"})
    case = run_case(bench, plan, RunOptions(isolate=True, timeout_s=60), "cuda")
    assert case.ok and case.metrics["device"] == "cuda"
    assert case.metrics["pid"] != os.getpid()


def test_throttle_metrics_are_information_only():
    from llmbench.ci.compare import compare_metric

    for name, base, new in [("gpu_throttled", False, True),
                            ("gpu_throttle_reasons", "", "sw_power_cap"),
                            ("gpu_sm_clock_mhz_start", 1980, 900),
                            ("gpu_sm_clock_mhz_end", 1980, 900),
                            ("gpu_sm_clock_max_mhz", 1980, 900),
                            ("gpu_temperature_c_start", 40, 90),
                            ("gpu_temperature_c_end", 40, 90)]:
        declared = metric_of("attention", name)
        assert declared is not None and declared.better == "info", name
        assert compare_metric("b", "c", name, base, new, threshold=0.05, alpha=0.01,
                              declared=declared) is None


# ------------------------------------------------------------------ the env block


@pytest.fixture
def cpu_hw(hw):
    return hw.model_copy(update={"device": "cpu", "gpus": []})


def test_env_records_torch_and_process_settings(cpu_hw, nvml, monkeypatch):
    import torch

    fake = nvml()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = build_env(cpu_hw, select_profile(cpu_hw, None, "cpu"), "cpu")
    assert env.torch_threads == torch.get_num_threads()
    assert env.matmul_allow_tf32 is torch.backends.cuda.matmul.allow_tf32
    assert env.cudnn_allow_tf32 is torch.backends.cudnn.allow_tf32
    assert env.cudnn_benchmark is torch.backends.cudnn.benchmark
    assert env.cuda_visible_devices is None
    if hasattr(os, "sched_getaffinity"):
        from llmbench.core.gpu_state import compact_cpus

        assert env.cpu_affinity == compact_cpus(os.sched_getaffinity(0))
    for field in ("gpu_sm_clock_mhz", "gpu_sm_clock_max_mhz", "gpu_mem_clock_mhz",
                  "gpu_mem_clock_max_mhz", "gpu_power_limit_w", "gpu_power_draw_w",
                  "gpu_temperature_c", "gpu_persistence_mode", "gpu_ecc"):
        assert getattr(env, field) is None, field
    assert fake.inits == 0  # a CPU run asks NVML nothing
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = build_env(cpu_hw, select_profile(cpu_hw, None, "cpu"), "cpu")
    assert env.cuda_visible_devices == "1"


def test_env_records_gpu_settings_through_nvml(cpu_hw, nvml):
    fake = nvml(sm=(345, 345))
    gpu_hw = HardwareInfo(device="cuda", cpu=cpu_hw.cpu, nvml="ok", torch=cpu_hw.torch,
                          gpus=[GpuInfo(index=0, name="NVIDIA H200", compute_capability=(9, 0),
                                        uuid="GPU-1234")])
    env = build_env(gpu_hw, select_profile(cpu_hw, None, "cpu"), "cuda")
    assert (env.gpu_sm_clock_mhz, env.gpu_sm_clock_max_mhz) == (345, MAX_SM)
    assert (env.gpu_mem_clock_mhz, env.gpu_mem_clock_max_mhz) == (1593, MAX_MEM)
    assert (env.gpu_power_limit_w, env.gpu_power_draw_w) == (700.0, 95.5)
    assert env.gpu_temperature_c == 61
    assert env.gpu_persistence_mode is True and env.gpu_ecc is True
    assert fake.handles == ["GPU-1234"] and fake.inits == fake.shutdowns == 1
    nvml(fail={"nvmlDeviceGetEccMode", "nvmlDeviceGetPowerUsage"})  # e.g. GeForce: no ECC
    env = build_env(gpu_hw, select_profile(cpu_hw, None, "cpu"), "cuda")
    assert env.gpu_ecc is None and env.gpu_power_draw_w is None
    assert env.gpu_sm_clock_max_mhz == MAX_SM
    nvml(fail={"nvmlInit"})
    env = build_env(gpu_hw, select_profile(cpu_hw, None, "cpu"), "cuda")
    assert env.gpu_sm_clock_max_mhz is None and env.device == "cuda"


def thread_view(payload):
    import torch

    from llmbench.core.gpu_state import compact_cpus

    return {"threads": torch.get_num_threads(),
            "affinity": (compact_cpus(os.sched_getaffinity(0))
                         if hasattr(os, "sched_getaffinity") else None),
            "tf32": torch.backends.cuda.matmul.allow_tf32,
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_isolated_children_see_what_the_env_records(cpu_hw):
    from llmbench.core.isolate import run_isolated

    env = build_env(cpu_hw, select_profile(cpu_hw, None, "cpu"), "cpu")
    out = run_isolated("tests.test_gpu_state:thread_view", None, timeout_s=120)
    assert out.status == "ok", out.reason
    assert out.value == {"threads": env.torch_threads, "affinity": env.cpu_affinity,
                         "tf32": env.matmul_allow_tf32, "visible": env.cuda_visible_devices}


def test_compact_cpus():
    from llmbench.core.gpu_state import compact_cpus

    assert compact_cpus({0, 1}) == "0-1"
    assert compact_cpus([3, 0, 1, 2, 8, 10, 11]) == "0-3,8,10-11"
    assert compact_cpus([5]) == "5"
    assert compact_cpus([]) == ""


def test_importing_the_module_imports_neither_torch_nor_pynvml():
    """`llmbench --help` never imports torch (tests/test_cli.py); the runner imports this."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", "import llmbench.core.gpu_state, sys; "
                           "assert 'torch' not in sys.modules and 'pynvml' not in sys.modules"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
