"""The table `llmbench env` prints."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmbench.benches.environment import EnvReport
from llmbench.core.results import EnvInfo
from llmbench.core.units import format_bytes
from llmbench.report.tables import new_table


def _flag(value: bool | None) -> str:
    return "?" if value is None else "on" if value else "off"


def settings_line(env: EnvInfo) -> str:
    """What the process runs with that moves the figures (recorded in every results file)."""
    visible = env.cuda_visible_devices
    return (f"torch threads {env.torch_threads or '?'} · CPU affinity {env.cpu_affinity or '?'} · "
            f"TF32 matmul {_flag(env.matmul_allow_tf32)}, cuDNN {_flag(env.cudnn_allow_tf32)} · "
            f"cudnn.benchmark {_flag(env.cudnn_benchmark)} · CUDA_VISIBLE_DEVICES "
            f"{'unset' if visible is None else repr(visible)}")


def gpu_state_line(env: EnvInfo) -> str:
    """Clocks, power and temperature as NVML read them when the report was made."""
    def of(now: object, top: object, unit: str) -> str:
        return f"{now if now is not None else '?'} of {top if top is not None else '?'} {unit}"

    power = (f"power {env.gpu_power_draw_w or '?'} W of {env.gpu_power_limit_w} W limit"
             if env.gpu_power_limit_w else "power limit ?")
    return (f"SM clock {of(env.gpu_sm_clock_mhz, env.gpu_sm_clock_max_mhz, 'MHz')} · memory "
            f"clock {of(env.gpu_mem_clock_mhz, env.gpu_mem_clock_max_mhz, 'MHz')} · {power} · "
            f"{env.gpu_temperature_c if env.gpu_temperature_c is not None else '?'} °C · "
            f"persistence {_flag(env.gpu_persistence_mode)} · ECC {_flag(env.gpu_ecc)}")


def render(report: EnvReport, console: Console) -> None:
    console.print(_device_table(report))
    _print_profile(report, console)
    console.print(_tiles_table(report))
    console.print(_impls_table(report))


def _device_table(report: EnvReport) -> Table:
    hw, env = report.hardware, report.env
    table = new_table("device")
    table.show_header = False
    table.add_column("", style="bold")
    table.add_column("")
    if env.device == "cuda" and hw.gpu:
        g = hw.gpu
        table.add_row("GPU", escape(f"{g.name} · compute capability {env.compute_capability} · "
                                    f"{format_bytes(g.memory_total_bytes)} · {g.sm_count or '?'} "
                                    "SMs"))
        table.add_row("driver / CUDA", escape(f"{hw.driver or '?'} (driver supports CUDA "
                                              f"{hw.cuda_driver or '?'}) · torch built with CUDA "
                                              f"{hw.torch_cuda} · cuDNN {hw.cudnn or '-'}"))
    else:
        table.add_row("device", "CPU (no CUDA GPU in use)")
    c = hw.cpu
    table.add_row("CPU", escape(f"{c.model} · {c.usable_cores} usable of {c.logical_cores} "
                                f"logical cores ({c.physical_cores or '?'} physical) · ISA "
                                f"{c.isa or '?'} · {c.max_ghz or '?'} GHz"))
    if c.isa_flags:
        table.add_row("ISA flags", escape(" ".join(c.isa_flags)))
    table.add_row("RAM", format_bytes(c.ram_total_bytes))
    table.add_row("NVML", escape(hw.nvml))
    table.add_row("versions", escape(f"python {env.python} · torch {env.torch} · triton "
                                     f"{env.triton or 'not installed'} · flash-attn "
                                     f"{env.flash_attn or 'not installed'}"))
    table.add_row("os", escape(env.os))
    table.add_row("settings", escape(settings_line(env)))
    if env.device == "cuda":
        table.add_row("GPU state", escape(gpu_state_line(env)))
    table.add_row("peak memory", escape(f"measured by {env.memory_method}"))
    for note in hw.notes:
        table.add_row("note", escape(note))
    return table


def _print_profile(report: EnvReport, console: Console) -> None:
    p = report.profile
    console.print(f"\n[bold]profile[/] [cyan]{escape(p['name'])}[/]: {escape(p['reason'])}\n  "
                  f"{escape(p['source'])}", highlight=False)
    if p.get("shared_memory_per_block_kib"):
        console.print(f"  {escape(str(p['description']))} · {p['shared_memory_per_block_kib']} "
                      "KiB shared memory per block", highlight=False)
    default = f"default dtype {report.default_dtype}"
    console.print(f"  dtype {report.dtype} ({default})" if report.dtype != report.default_dtype
                  else f"  {default}", highlight=False)
    if report.dtype_unsupported:
        console.print(f"  [yellow]{report.dtype}: {escape(report.dtype_unsupported)}[/]",
                      highlight=False)
    peak = (f"{report.peak_tflops:.4g} TFLOP/s {report.dtype}" if report.peak_tflops
            else f"no {report.dtype} peak")
    bw = f" · {report.peak_memory_gbps:g} GB/s" if report.peak_memory_gbps else ""
    console.print(f"  peak: {peak}{bw} ({escape(report.peak.source)})", highlight=False)
    cal = report.calibration
    if cal is None:
        console.print("  attainable: not measured (`llmbench peak --save` measures it; the "
                      "roofline then uses it)", highlight=False)
        return
    gemm = cal.gemm_tflops.get(report.dtype)
    gemm_text = (f"{gemm:.4g} TFLOP/s {report.dtype} GEMM" if gemm
                 else f"no {report.dtype} GEMM figure")
    bw_text = f" · {cal.bandwidth_gbps:.4g} GB/s" if cal.bandwidth_gbps else ""
    console.print(f"  attainable: {gemm_text}{bw_text} ({escape(cal.describe())})",
                  highlight=False)


def _tiles_table(report: EnvReport) -> Table:
    p = report.profile
    tiles = new_table(f"\nattention tiles of profile {escape(p['name'])} (block_m x block_n, "
                      "warps, stages)")
    for column in ("head dim", "range", "forward", "dK/dV", "dQ"):
        tiles.add_column(column)
    for row in report.tiles:
        dkdv, dq = ("as forward", "as forward") if row.backward_from_forward else (
            row.dkdv.describe(), row.dq.describe())
        tiles.add_row(str(row.head_dim), f"{row.head_dim_range[0]}-{row.head_dim_range[1]}",
                      row.forward.describe(), dkdv, dq)
    return tiles


def _impls_table(report: EnvReport) -> Table:
    impls = new_table(f"\nattention implementations ({report.dtype}, head dim {report.head_dim})")
    impls.add_column("impl")
    impls.add_column("memory")
    impls.add_column("here")
    impls.add_column("")
    for i in report.implementations:
        impls.add_row(escape(i.name), escape(i.memory), "[green]available[/]" if i.available else
                      "[dim]unavailable[/]", escape(i.summary if i.available else i.reason or ""))
    return impls
