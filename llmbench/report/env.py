"""The table `llmbench env` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.core.environment import EnvReport
from llmbench.core.units import format_bytes
from llmbench.report.tables import new_table


def render(report: EnvReport, console: Console) -> None:
    hw, env = report.hardware, report.env
    table = new_table("device")
    table.show_header = False
    table.add_column("", style="bold")
    table.add_column("")
    if env.device == "cuda" and hw.gpu:
        g = hw.gpu
        table.add_row("GPU", f"{g.name} · compute capability {env.compute_capability} · "
                      f"{format_bytes(g.memory_total_bytes)} · {g.sm_count or '?'} SMs")
        table.add_row("driver / CUDA", f"{hw.driver or '?'} (driver supports CUDA "
                      f"{hw.cuda_driver or '?'}) · torch built with CUDA {hw.torch_cuda} · "
                      f"cuDNN {hw.cudnn or '-'}")
    else:
        table.add_row("device", "CPU (no CUDA GPU in use)")
    c = hw.cpu
    table.add_row("CPU", f"{c.model} · {c.usable_cores} usable of {c.logical_cores} logical "
                  f"cores ({c.physical_cores or '?'} physical) · ISA {c.isa or '?'}"
                  f" · {c.max_ghz or '?'} GHz")
    if c.isa_flags:
        table.add_row("ISA flags", " ".join(c.isa_flags))
    table.add_row("RAM", format_bytes(c.ram_total_bytes))
    table.add_row("NVML", hw.nvml)
    table.add_row("versions", f"python {env.python} · torch {env.torch} · triton "
                  f"{env.triton or 'not installed'} · flash-attn "
                  f"{env.flash_attn or 'not installed'}")
    table.add_row("os", env.os)
    table.add_row("peak memory", f"measured by {env.memory_method}")
    for note in hw.notes:
        table.add_row("note", note)
    console.print(table)

    p = report.profile
    console.print(f"\n[bold]profile[/] [cyan]{p['name']}[/]: {p['reason']}\n  {p['source']}",
                  highlight=False)
    peak = (f"{report.peak_tflops:.4g} TFLOP/s {report.dtype}" if report.peak_tflops
            else f"no {report.dtype} peak in this profile")
    bw = f" · {report.peak_memory_gbps:g} GB/s" if report.peak_memory_gbps else ""
    console.print(f"  peak: {peak}{bw}", highlight=False)
    t = report.tile
    console.print(
        f"  attention tile for head dim {report.head_dim}: block_m {t.block_m} · block_n "
        f"{t.block_n} · num_warps {t.num_warps} · num_stages {t.num_stages} "
        f"(head dims {t.head_dim[0]}-{t.head_dim[1]})", highlight=False)

    impls = new_table(f"\nattention implementations ({report.dtype}, head dim {report.head_dim})")
    impls.add_column("impl")
    impls.add_column("memory")
    impls.add_column("here")
    impls.add_column("")
    for i in report.implementations:
        impls.add_row(i.name, i.memory, "[green]available[/]" if i.available else
                      "[dim]unavailable[/]", i.summary if i.available else i.reason or "")
    console.print(impls)
