import pytest

from llmbench.core import hardware
from llmbench.core.hardware import _merge_gpus, detect, detect_cpu


def test_detect_on_this_machine_never_fails():
    hw = detect()
    assert hw.device in ("cpu", "cuda")
    assert hw.cpu.logical_cores >= 1
    assert 1 <= hw.cpu.usable_cores <= hw.cpu.logical_cores
    assert hw.torch
    if hw.device == "cpu":
        assert hw.gpu is None
    assert hw.nvml == "ok" or hw.nvml.startswith(("unavailable:", "error:"))


def test_cpu_details():
    cpu = detect_cpu()
    assert cpu.model
    assert cpu.isa  # torch.backends.cpu.get_cpu_capability()
    meminfo = hardware._meminfo()
    if "MemTotal" in meminfo:
        assert 0 < cpu.ram_total_bytes <= meminfo["MemTotal"]
    free = hardware.available_memory_bytes("cpu")
    assert free is None or 0 < free <= meminfo.get("MemTotal", free)


class FakeNVMLError(Exception):
    pass


def test_nvml_failure_gives_cpu_result(monkeypatch):
    # The real NVML library is absent here; a broken one (driver mismatch) raises at init.
    pynvml = pytest.importorskip("pynvml")

    def broken_init():
        raise FakeNVMLError("Driver/library version mismatch")

    monkeypatch.setattr(pynvml, "nvmlInit", broken_init)
    detect.cache_clear()
    try:
        hw = detect()
    finally:
        detect.cache_clear()
    assert hw.nvml == "unavailable: Driver/library version mismatch"
    if hw.gpus == []:
        assert hw.device == "cpu"


def test_nvml_error_midway_is_reported(monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54")
    monkeypatch.setattr(pynvml, "nvmlSystemGetCudaDriverVersion_v2", lambda: 12040)

    def count():
        raise FakeNVMLError("GPU is lost")

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", count)
    gpus, versions, status = hardware._nvml_probe()
    assert gpus == []
    assert versions == {"driver": "550.54", "cuda_driver": "12.4"}
    assert status == "error: GPU is lost"


def test_gpu_merge_prefers_torch_and_matches_by_uuid():
    nvml = [{"index": 0, "name": "A", "compute_capability": (8, 0), "uuid": "GPU-a",
             "memory_total_bytes": 1},
            {"index": 1, "name": "B", "compute_capability": (9, 0), "uuid": "GPU-b",
             "memory_total_bytes": 2}]
    # CUDA_VISIBLE_DEVICES=1: torch's device 0 is NVML's device 1.
    torch_view = [{"index": 0, "name": "B", "compute_capability": (9, 0), "uuid": "GPU-b",
                   "sm_count": 132, "memory_total_bytes": 2}]
    merged = _merge_gpus(torch_view, nvml)
    assert len(merged) == 1
    assert merged[0].name == "B" and merged[0].sm_count == 132 and merged[0].family == "sm90"


def test_package_version_without_import():
    assert hardware.package_version("torch")
    assert hardware.package_version("surely_not_installed_pkg") is None


def _gpu(cc):
    cpu = hardware.CpuInfo(model="x", logical_cores=2, usable_cores=2)
    gpus = [hardware.GpuInfo(index=0, name="g", compute_capability=cc)] if cc else []
    return hardware.HardwareInfo(device="cuda" if cc else "cpu", gpus=gpus, cpu=cpu, nvml="ok")


@pytest.mark.parametrize("device, cc, dtype", [
    ("cuda", (9, 0), "bf16"), ("cuda", (8, 0), "bf16"), ("cuda", (12, 0), "bf16"),
    ("cuda", (7, 5), "fp16"), ("cuda", (7, 0), "fp16"), ("cuda", (5, 2), "fp32"),
    ("cpu", None, "fp32"), ("cpu", (9, 0), "fp32"),
])
def test_default_dtype_is_one_the_device_computes(device, cc, dtype):
    hw = _gpu(cc)
    assert hardware.default_dtype(device, hw) == dtype
    assert hardware.dtype_unsupported(device, dtype, hw) is None


class _Memory:
    def __init__(self, free):
        self.free = free


def _fake_nvml(monkeypatch, *, by_uuid_takes_mig):
    """Two GPUs; GPU 1 is in MIG mode with two instances. Handles are strings."""
    pynvml = pytest.importorskip("pynvml")
    free = {"gpu0": 70, "gpu1": 80, "mig1.0": 10, "mig1.1": 20}
    uuids = {"gpu0": "GPU-aaa", "gpu1": "GPU-bbb", "mig1.0": "MIG-ccc", "mig1.1": "MIG-ddd"}
    migs = {"gpu1": ["mig1.0", "mig1.1", None]}  # the third slot holds no instance

    def by_uuid(uuid):
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for handle, u in uuids.items():
            if u == uuid and (by_uuid_takes_mig or u.startswith("GPU-")):
                return handle
        raise FakeNVMLError("Not Found")

    def max_mig(handle):
        if handle not in migs:
            raise FakeNVMLError("Not Supported")
        return len(migs[handle])

    def mig_by_index(handle, i):
        if migs[handle][i] is None:
            raise FakeNVMLError("Not Found")
        return migs[handle][i]

    for name, fn in {
        "nvmlInit": lambda: None, "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: f"gpu{i}",
        "nvmlDeviceGetHandleByUUID": by_uuid,
        "nvmlDeviceGetUUID": lambda h: uuids[h],
        "nvmlDeviceGetMaxMigDeviceCount": max_mig,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_by_index,
        "nvmlDeviceGetMemoryInfo": lambda h: _Memory(free[h]),
    }.items():
        monkeypatch.setattr(pynvml, name, fn)


@pytest.mark.parametrize("by_uuid_takes_mig", [True, False])
@pytest.mark.parametrize("visible, free", [
    ("MIG-ddd", 20), ("MIG-ccc,MIG-ddd", 10), ("GPU-bbb", 80), ("1", 80), ("", 70),
    ("MIG-zzz", None),  # not found: no NVML answer (the caller asks torch)
])
def test_nvml_free_memory_of_the_visible_device_mig_included(monkeypatch, by_uuid_takes_mig,
                                                             visible, free):
    _fake_nvml(monkeypatch, by_uuid_takes_mig=by_uuid_takes_mig)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert hardware._nvml_free() == free
