"""The tables `llmbench estimate` prints: the per-GPU breakdown, the checkpoint policies side
by side, speed and fit, and --validate's predicted vs measured."""

from __future__ import annotations

from rich.console import Console

from llmbench.benches import summary_of
from llmbench.core.results import ResultDocument
from llmbench.core.units import format_bytes, format_ms
from llmbench.report.tables import (
    bytes_cell,
    header,
    new_table,
    number,
    print_lines,
    reasons,
    status_cell,
)


def render(doc: ResultDocument, console: Console) -> None:
    cfg, s = doc.config, summary_of(doc)
    g = s.per_gpu
    console.print(header(doc), highlight=False)
    console.print(
        f"[bold]{s.model}[/]: {s.params:,} parameters · {s.layers} layers · hidden {s.hidden:,}"
        f" · {s.heads} heads / {s.kv_heads} KV heads × {s.head_dim} · MLP {s.intermediate:,}"
        f" · vocab {s.vocab:,}", highlight=False)
    stage = f"ZeRO-{cfg['zero_stage']} over {cfg['gpus']} GPU(s)" if cfg["zero_stage"] \
        else f"{cfg['gpus']} GPU(s), no ZeRO"
    ckpt = cfg["checkpoint"] if cfg["checkpoint"] != "every-k" else f"every-{cfg['every']}"
    layout = f" ({cfg['mixed_layout']} layout)" if cfg["precision"].endswith("-mixed") else ""
    console.print(f"batch {cfg['batch']} × seq {cfg['seq']:,} per GPU · {cfg['precision']}"
                  f"{layout} · {cfg['optimizer']} · checkpoint {ckpt} · {cfg['attention']} "
                  f"attention · {stage}", highlight=False)
    parts = s.activation_parts
    table = new_table("per GPU")
    for col in ("", "bytes", "note"):
        table.add_column(col, justify="left" if col != "bytes" else "right")
    rows = [
        ("weights", g["weights_bytes"], ""),
        ("gradients", g["gradients_bytes"], ""),
        ("optimizer states", g["optimizer_bytes"],
         f"{g['bytes_per_param']:g} B/param of model states before ZeRO"),
        ("activations", g["activation_bytes"],
         f"{format_bytes(g['activation_layer_bytes'])} per layer without checkpointing "
         f"(Korthikanti et al.'s GPT layer: {format_bytes(g['korthikanti_layer_bytes'])}, "
         f"{format_bytes(g['korthikanti_flash_layer_bytes'])} without the scores)"),
        ("  a layer's attention", parts["attention"] + parts["kv"],
         f"without the seq × seq scores; K and V {format_bytes(parts['kv'])}"),
        ("  a layer's scores", parts["scores"], "seq × seq (standard attention only)"),
        ("  a layer's MLP", parts["mlp"], "its intermediates, of the MLP width"),
        ("  a layer's norms", parts["norms"], "with the inputs the projections read"),
        ("logits and loss", g["logits_loss_bytes"],
         "vocab × seq × batch: within the activations and the temporaries"),
        ("backward temporaries", g["backward_peak_bytes"], "above the activations, at the peak"),
        ("peak", g["peak_bytes"], ""),
    ]
    if parts.get("weight_copies"):
        rows.insert(8, ("  a layer's weight copies", parts["weight_copies"],
                        "autocast's casts, kept for the backward"))
    for label, value, note in rows:
        table.add_row(label, bytes_cell(value), note)
    console.print(table)
    _speed(s, cfg, console)
    _policies(s, console)
    if doc.cases:
        _validation(doc, console)


def _speed(s: object, cfg: dict, console: Console) -> None:
    g = s.per_gpu
    console.print(f"FLOPs per token: {g['flops_per_token']:.4g} (6N {g['flops_6n_per_token']:.4g}"
                  f" + attention; with recomputation {g['hardware_flops_per_token']:.4g})",
                  highlight=False)
    if s.step_time_s:
        console.print(f"step {format_ms(s.step_time_s * 1e3)} · {s.tokens_per_s:,.0f} tokens/s per "
                      f"GPU ({s.tokens_per_s_all_gpus:,.0f} on {cfg['gpus']}) at MFU "
                      f"{cfg['mfu']:g} of {s.peak_tflops:g} TFLOP/s {s.compute_dtype} "
                      f"({s.peak_source})", highlight=False)
    else:
        console.print(f"no {s.compute_dtype} peak in this profile: step time needs --profile "
                      "(sm80: A100, sm90: H100, ...)", highlight=False)
    if s.memory_bytes:
        verdict = "[green]fits[/]" if s.fits else "[red]does not fit[/]"
        console.print(
            f"{verdict} in {format_bytes(s.memory_bytes)} per GPU · largest batch at seq "
            f"{cfg['seq']:,}: {s.max_batch or 'none'} · largest seq at batch {cfg['batch']}: "
            f"{f'{s.max_seq:,}' if s.max_seq is not None else 'none'}", highlight=False)
    else:
        console.print("fit: give --memory (such as 80GiB)", highlight=False)


def _policies(s: object, console: Console) -> None:
    table = new_table("by checkpoint policy")
    for col in ("policy", "activations", "peak", "FLOPs/token", "recomputed layers"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in s.by_policy:
        table.add_row(row.policy, bytes_cell(row.activation_bytes), bytes_cell(row.peak_bytes),
                      f"{row.hardware_flops_per_token:.4g}", str(row.checkpointed_layers))
    console.print(table)


def _validation(doc: ResultDocument, console: Console) -> None:
    table = new_table("validation: predicted vs measured here")
    for col in ("case", "status", "states", "pred.", "= meas.", "activations", "pred.",
                "error", "step peak", "pred.", "error"):
        table.add_column(col, justify="left" if col in ("case", "status") else "right")
    for case in doc.cases:
        m = case.metrics
        measured = (m["weights_bytes"] + m["gradients_bytes"] + m["state_bytes"]) \
            if case.ok else None
        table.add_row(
            case.name, status_cell(case), bytes_cell(measured),
            bytes_cell(m.get("predicted_state_bytes")),
            {True: "yes", False: "no"}.get(m.get("states_match"), "-"),
            bytes_cell(m.get("activation_memory_bytes")),
            bytes_cell(m.get("predicted_activation_bytes")),
            number(m.get("activation_error_pct"), "{:+.1f} %"),
            bytes_cell(m.get("peak_memory_bytes")), bytes_cell(m.get("predicted_peak_bytes")),
            number(m.get("peak_error_pct"), "{:+.1f} %"))
    console.print(table)
    s = summary_of(doc)
    lines = ["step peak: above the weights, gradients and optimizer states held before the "
             "step (the tolerance: activations 10 %, step peak 15 %)"]
    if s.validation_note:
        lines.append(s.validation_note)
    print_lines(console, lines + reasons(doc.cases, key=lambda c: c.name))
