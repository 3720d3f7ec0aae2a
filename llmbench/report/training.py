"""The tables of the training benchmarks: amp, checkpoint, optim, accum."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from llmbench.benches import params_of, summary_of
from llmbench.core.results import CaseResult, ResultDocument
from llmbench.core.units import format_bytes
from llmbench.report import roofline
from llmbench.report.tables import (
    bytes_cell,
    header,
    new_table,
    noisy_note,
    number,
    print_lines,
    reasons,
    status_cell,
    time_cells,
)

Column = tuple[str, Callable[[CaseResult], str]]


def model_text(cfg: dict, trained_dtype: str | None = None) -> str:
    """The trained model as a header names it: the built-in size, or the Hugging Face config
    (transformers) with the depth kept; the attention and parameter dtype when not the
    defaults (`trained_dtype`: what the cases resolved auto to)."""
    hf = cfg.get("hf_config")
    layers = cfg.get("layers")
    depth = f"{layers} layers" if isinstance(layers, int) else None
    text = f"model {cfg['model']}" if not hf else f"model {hf} (Hugging Face transformers" + \
        (f", {depth}" if depth else "") + ")"
    if not hf and depth:
        text += f" ({depth})"
    if cfg.get("attention", "sdpa") != "sdpa":
        text += f" · {cfg['attention']} attention"
    dtype = trained_dtype or cfg.get("param_dtype")
    if dtype not in (None, "auto", "fp32"):
        text += f" · {dtype} weights"
    return text


def _training_header(doc: ResultDocument, console: Console, extra: str = "") -> None:
    cfg = doc.config
    console.print(header(doc), highlight=False)
    dtype = next((c.params.get("param_dtype") for c in doc.cases), None)
    console.print(f"{model_text(cfg, dtype)} · batch {cfg['batch']} · seq {cfg['seq']} · lr "
                  f"{cfg['lr']:g} · {cfg['device']}{extra}", highlight=False)


def _table(doc: ResultDocument, console: Console, columns: list[Column],
           cases: list[CaseResult] | None = None) -> None:
    cases = doc.cases if cases is None else cases
    table = new_table()
    for title, _ in columns:
        table.add_column(title, justify="left" if title == "status" or not table.columns
                         else "right")
    for case in cases:
        table.add_row(*(fn(case) for _, fn in columns))
    console.print(table)
    lines = reasons(cases, key=lambda c: c.name)
    note = noisy_note(cases)
    if note:
        lines.append(note)
    print_lines(console, lines)


def _m(key: str, fmt: str = "{:.3g}") -> Callable[[CaseResult], str]:
    return lambda c: number(c.metrics.get(key), fmt) if c.ok else "-"


def _b(key: str) -> Callable[[CaseResult], str]:
    return lambda c: bytes_cell(c.metrics.get(key)) if c.ok else "-"


def _median(c: CaseResult) -> str:
    return time_cells(c.time())[0]


def _iqr(c: CaseResult) -> str:
    return time_cells(c.time())[1]


CASE: Column = ("case", lambda c: c.name)
STATUS: Column = ("status", status_cell)


def render_amp(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    _training_header(doc, console, f" · {cfg['steps']} AdamW steps from one seed")
    training = [c for c in doc.cases if params_of(doc, c).variant != "underflow-demo"]
    _table(doc, console, [
        CASE, STATUS, ("step", _median), ("IQR", _iqr),
        ("tokens/s", _m("tokens_per_s", "{:,.0f}")), ("peak mem", _b("peak_memory_bytes")),
        ("activations", _b("activation_memory_bytes")),
        ("act. saved", _m("activation_saved_pct", "{:.1f} %")),
        ("first loss", _m("first_loss", "{:.4f}")),
        ("final loss", _m("final_loss", "{:.4f}")),
        ("vs fp32", _m("loss_diff_vs_fp32", "{:+.4f}")),
        ("skipped", _m("skipped_steps", "{}")), ("final scale", _m("final_scale", "{:g}")),
    ], training)
    summary = summary_of(doc)
    tol = summary.loss_tolerance
    for name, p in summary.parity.items():
        if name != "fp32":
            verdict = "within" if p.within_tolerance else "[red]outside[/]"
            console.print(f"{name}: final loss {p.loss_diff:+.4f} vs fp32, {verdict} the "
                          f"tolerance of ±{tol:g}", highlight=False)
    for c in training:
        if c.ok and c.metrics.get("scale_trace"):
            trace = c.metrics["scale_trace"]
            changes = [f"step {i}: {s:g}" for i, s in enumerate(trace)
                       if i == 0 or s != trace[i - 1]]
            console.print(f"{c.name} loss scale: {' → '.join(changes)}"
                          + (f"; {c.metrics['skip_reason']}" if c.metrics.get("skip_reason")
                             else "; no step skipped"), highlight=False)
    demo = next((c for c in doc.cases if params_of(doc, c).variant == "underflow-demo"), None)
    if demo is not None and demo.ok:
        m = demo.metrics
        console.print(
            f"\n[bold]fp16 gradient underflow[/] on the model's own gradients "
            f"({m['nonzero_fp32_elements']:,} non-zero in fp32, median |g| "
            f"{m['median_abs_gradient']:.2e}):\n"
            f"  below fp16's smallest subnormal: {m['below_fp16_subnormal_fraction']:.4%}; below "
            f"its smallest normal (precision lost): {m['below_fp16_normal_fraction']:.2%}\n"
            f"  zeroed by an fp16 autocast backward pass, no scaling: "
            f"{m['zeroed_fraction_unscaled']:.4%}; with the scaler's {m['loss_scale']:g}: "
            f"{m['zeroed_fraction_scaled']:.4%}", highlight=False)
    elif demo is not None:
        console.print(f"underflow demo {demo.status}: {demo.reason}", highlight=False)
    roofline.render(doc, console)


def render_checkpoint(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    _training_header(doc, console, f" · every-k k={cfg['every']}")
    _table(doc, console, [
        CASE, STATUS, ("step", _median), ("IQR", _iqr),
        ("overhead", _m("overhead_pct", "{:+.1f} %")),
        ("activations", _b("activation_memory_bytes")),
        ("act. saved", _m("activation_saved_pct", "{:.1f} %")),
        ("act. peak", _b("activation_peak_bytes")), ("step peak", _b("peak_memory_bytes")),
        ("peak saved", _m("peak_saved_pct", "{:.1f} %")),
        ("ckpt layers", _m("checkpointed_layers", "{}")),
    ])
    console.print("activations: held between forward and backward; act. peak: forward + "
                  "backward high-water mark, recomputation included", highlight=False)
    fits = summary_of(doc).activation_fit
    if fits:
        const = next(iter(fits.values())).depth_independent_bytes
        console.print(f"\nactivation memory ~ c + a · L^k (c = {format_bytes(const)}, measured: "
                      "embeddings, logits, loss)", highlight=False)
        table = new_table()
        for col in ("policy", "k", "k without c", "layers"):
            table.add_column(col, justify="left" if col in ("policy", "layers") else "right")
        for policy, fit in fits.items():
            table.add_row(policy, number(fit.exponent, "{:.2f}"),
                          number(fit.exponent_raw, "{:.2f}"),
                          ", ".join(map(str, fit.layers)))
        console.print(table)
    roofline.render(doc, console)


def render_optim(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    measured = [c for c in doc.cases if params_of(doc, c).optimizer != "decay-comparison"]
    if measured or doc.cases:
        _training_header(doc, console, f" · {cfg['precision']}")
    else:
        console.print(header(doc), highlight=False)
    if measured:
        _table(doc, console, [
            CASE, STATUS, ("step", _median), ("IQR", _iqr),
            ("states", _b("state_bytes")), ("predicted", _b("analytic_state_bytes")),
            ("= pred.", lambda c: "-" if not c.ok or c.metrics.get("state_matches_analytic")
             is None else ("[green]yes[/]" if c.metrics["state_matches_analytic"]
                           else "[red]NO[/]")),
            ("B/param", _m("elementwise_state_bytes_per_param", "{:.3g}")),
            ("weights", _b("weights_bytes")), ("grads", _b("gradients_bytes")),
            ("activations", _b("activation_memory_bytes")),
            ("sum", _b("training_memory_bytes")), ("peak", _b("training_peak_bytes")),
        ], measured)
        console.print("B/param: state tensors shaped like their parameter, per parameter (the "
                      "rule's figure); states also counts the per-tensor step counters. step: "
                      "optimizer.step() alone. sum: weights + grads + states + activations as "
                      "if held at once; peak: measured over a training step (activations are "
                      "freed while gradients fill in, so it is lower)", highlight=False)
        roofline.render(doc, console)
    _print_analytic(doc, console)
    decay = next((c for c in doc.cases if params_of(doc, c).optimizer == "decay-comparison"),
                 None)
    if decay is not None and decay.ok:
        _print_decay(decay, console)
    elif decay is not None:
        console.print(f"decay comparison {decay.status}: {decay.reason}", highlight=False)


def _print_analytic(doc: ResultDocument, console: Console) -> None:
    cfg, summary = doc.config, summary_of(doc)
    params = summary.params
    console.print(f"\n[bold]analytic[/] for {cfg.get('hf_config') or cfg['model']}: "
                  f"{params:,} parameters, "
                  f"{cfg['precision']} (activations excluded: they depend on batch and seq)",
                  highlight=False)
    table = new_table()
    for col in ("optimizer", "weights", "grads", "states", "total", "B/param", "rule"):
        table.add_column(col, justify="left" if col in ("optimizer", "rule") else "right")
    for row in summary.analytic:
        table.add_row(row.optimizer, format_bytes(row.weights_bytes),
                      format_bytes(row.gradients_bytes),
                      format_bytes(row.states_bytes) if row.states_bytes is not None
                      else "factored", format_bytes(row.total_bytes),
                      f"{row.bytes_per_param:.3g}", row.rule)
    console.print(table)
    console.print(summary.rule_of_thumb, highlight=False)


def _print_decay(decay: CaseResult, console: Console) -> None:
    m = decay.metrics
    console.print(
        f"\n[bold]AdamW vs Adam + L2[/], weight decay {m['weight_decay']:g}, "
        f"{m['steps']} steps from one initialisation:", highlight=False)
    table = new_table()
    for col in ("", "final loss", "weight norm", "decay ÷ AdamW's: p10", "median", "p90",
                "small-grad ¼", "large-grad ¼"):
        table.add_column(col, justify="left" if not col else "right")
    for label in ("adam", "adam+l2", "adamw"):
        ratio = [number(m.get(f"{label}_decay_ratio_{k}"), "{:.3g}") for k in
                 ("p10", "median", "p90", "small_grads", "large_grads")]
        table.add_row(label if label != "adam" else "adam (no decay)",
                      f"{m[f'{label}_final_loss']:.4f}", f"{m[f'{label}_weight_norm']:.2f}",
                      *ratio)
    console.print(table)
    console.print("decay ÷ AdamW's: what one step's weight decay removed from each weight, "
                  "divided by AdamW's lr·wd·w. Decoupled decay is 1 everywhere; L2 decay "
                  "passes through Adam's 1/√v, so it depends on each weight's gradients.",
                  highlight=False)


def render_accum(doc: ResultDocument, console: Console) -> None:
    _training_header(doc, console, f" · effective batch {doc.config['batch']}")
    _table(doc, console, [
        ("micro x steps", lambda c: c.name), STATUS, ("step", _median), ("IQR", _iqr),
        ("tokens/s", _m("tokens_per_s", "{:,.0f}")),
        ("vs whole", _m("slowdown_vs_whole_x", "{:.2f}x")),
        ("step peak", _b("peak_memory_bytes")),
        ("peak saved", _m("peak_saved_pct", "{:.1f} %")),
        ("grad max |Δ|", _m("grad_max_abs_error", "{:.1e}")),
        ("grad rel Δ", _m("grad_rel_error", "{:.1e}")),
    ])
    console.print("grad Δ: the accumulated gradient against the whole batch's in one pass "
                  "(max abs, and relative to the largest gradient)", highlight=False)
    roofline.render(doc, console)
