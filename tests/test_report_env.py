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


# ------------------------------------------------------------------ brackets are not markup


def _text(print_to) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=250, record=True, color_system=None)
    print_to(console)
    return console.export_text()


def test_a_hint_with_brackets_prints_whole():
    from llmbench.report.plots import HINT
    from llmbench.report.tables import print_plain

    assert "pip install 'llmbench[plot]'" in HINT
    # rich reads [plot] as a style: printed as markup, the hint loses it
    assert "[plot]" not in _text(lambda c: c.print(HINT))
    assert HINT in _text(lambda c: print_plain(c, HINT, "second [bold]line[/]"))
    assert "second [bold]line[/]" in _text(lambda c: print_plain(c, "second [bold]line[/]"))


def test_table_header_keeps_what_the_document_records():
    from llmbench.core.results import ResultDocument
    from llmbench.report.tables import header

    doc = ResultDocument(benchmark="attention", config={}, cases=[], env=EnvInfo(
        device="cpu", cpu_model="Xeon [engineering sample]", cores=2, profile="lab[1]",
        profile_reason="--profile /data/[team]/lab.toml"))
    text = _text(lambda c: c.print(header(doc)))
    assert "Xeon [engineering sample]" in text
    assert "profile lab[1] (--profile /data/[team]/lab.toml)" in text


def test_env_table_keeps_brackets():
    from llmbench.benches.environment import describe
    from llmbench.report.env import render

    report = describe(device="cpu")
    cpu = report.hardware.cpu.model_copy(update={"model": "Xeon [engineering sample]"})
    report = report.model_copy(update={
        "hardware": report.hardware.model_copy(update={"cpu": cpu}),
        "profile": {**report.profile, "name": "lab[1]", "description": "tiles [tuned here]",
                    "shared_memory_per_block_kib": 100},
        "implementations": [i.model_copy(update={
            "available": False, "reason": "triton is not installed (pip install "
            "'llmbench[triton]')"}) for i in report.implementations]})
    text = _text(lambda c: render(report, c))
    assert "Xeon [engineering sample]" in text
    assert "profile lab[1]:" in text and "tiles [tuned here]" in text
    assert "attention tiles of profile lab[1]" in text
    assert "(pip install 'llmbench[triton]')" in text
