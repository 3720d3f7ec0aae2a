"""The settings and GPU-state lines of `llmbench env`: what every results file records."""

from llmbench.core.results import EnvInfo
from llmbench.report.env import gpu_state_line, settings_line


def env(**fields):
    return EnvInfo(device="cuda", cpu_model="x", cores=2, profile="sm90", **fields)


def test_settings_line_names_threads_affinity_and_flags():
    line = settings_line(env(torch_threads=8, cpu_affinity="0-7", matmul_allow_tf32=True,
                             cudnn_allow_tf32=True, cudnn_benchmark=False,
                             cuda_visible_devices="MIG-4f2a"))
    assert line == ("torch threads 8 · CPU affinity 0-7 · TF32 matmul on, cuDNN on · "
                    "cudnn.benchmark off · CUDA_VISIBLE_DEVICES 'MIG-4f2a'")
    assert settings_line(env()).endswith("CUDA_VISIBLE_DEVICES unset")


def test_gpu_state_line_from_nvml_fields_and_without_them():
    line = gpu_state_line(env(gpu_sm_clock_mhz=1980, gpu_sm_clock_max_mhz=1980,
                              gpu_mem_clock_mhz=2619, gpu_mem_clock_max_mhz=2619,
                              gpu_power_limit_w=700.0, gpu_power_draw_w=112.5,
                              gpu_temperature_c=34, gpu_persistence_mode=True, gpu_ecc=True))
    assert line == ("SM clock 1980 of 1980 MHz · memory clock 2619 of 2619 MHz · power 112.5 W "
                    "of 700.0 W limit · 34 °C · persistence on · ECC on")
    assert gpu_state_line(env()) == ("SM clock ? of ? MHz · memory clock ? of ? MHz · power "
                                     "limit ? · ? °C · persistence ? · ECC ?")
