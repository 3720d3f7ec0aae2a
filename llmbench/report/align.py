"""The tables `llmbench align` prints."""

from __future__ import annotations

from rich.console import Console

from llmbench.benches import params_of, summary_of
from llmbench.core.results import CaseResult, ResultDocument
from llmbench.core.units import format_bytes
from llmbench.report import roofline
from llmbench.report.formats import sparkline
from llmbench.report.tables import (
    header,
    new_table,
    noisy_note,
    print_lines,
    reasons,
    status_cell,
    time_cells,
)

# What each method logs, in TRL's names, shown as the final value of the history.
LOGGED = {
    "sft": ["loss"],
    "rm": ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"],
    "dpo": ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies", "logps/chosen", "logps/rejected"],
    "orpo": ["loss", "nll_loss", "log_odds_ratio", "rewards/chosen", "rewards/rejected",
             "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"],
    "ppo": ["objective/scores", "objective/kl", "objective/entropy", "objective/rlhf_reward",
            "policy/approxkl", "policy/clipfrac", "loss/policy", "loss/value", "val/ratio"],
}
LOGGED["rlhf"] = LOGGED["ppo"] + ["objective/gold_scores"]


def _arrow(m: dict, key: str, fmt: str = "{:.0%}") -> str:
    before, after = m.get(f"eval/{key}_before"), m.get(f"eval/{key}_after")
    if after is None:
        return "-"
    start = fmt.format(before) if before is not None and before == before else "?"
    return f"{start} → {fmt.format(after)}"


def _roles(m: dict) -> str:
    parts = [f"{k.removeprefix('memory/').removesuffix('_bytes')} {format_bytes(v)}"
             for k, v in m.items() if k.startswith("memory/") and k.endswith("_bytes")]
    return ", ".join(parts)


def render(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    console.print(header(doc), highlight=False)
    source = f"data {cfg['data']}" if cfg.get("data") else f"synthetic task '{cfg['task']}'"
    console.print(f"{cfg['method']} · {source} · model {cfg['model']} · {cfg['steps']} steps · "
                  f"batch {cfg['batch']} · lr {cfg['lr']:g} · beta {cfg['beta']:g} · "
                  f"{cfg['device']}", highlight=False)
    table = new_table()
    for col in ("case", "status", "step", "IQR", "tokens/s", "peak mem", "models",
                "held-out pref. acc.", "rule satisfied", "rule score"):
        table.add_column(col, justify="left" if col in ("case", "status") else "right")
    for c in doc.cases:
        m = c.metrics
        median, iqr = time_cells(c.time())
        acc = (f"{m['eval/accuracy_before']:.0%} → {m['eval/accuracy']:.0%}"
               if "eval/accuracy" in m else _arrow(m, "preference_accuracy"))
        table.add_row(c.name, status_cell(c), median, iqr,
                      f"{m['tokens_per_s']:,.0f}" if "tokens_per_s" in m else "-",
                      format_bytes(m.get("peak_memory_bytes")) if c.ok else "-",
                      str(m.get("models_held", "-")), acc, _arrow(m, "rule_satisfaction"),
                      _arrow(m, "rule_score", "{:.2f}"))
    console.print(table)
    lines = reasons(doc.cases, key=lambda c: c.name)
    note = noisy_note(doc.cases, hint="")
    if note:
        lines.append(note)
    print_lines(console, lines)
    for c in doc.cases:
        if c.ok:
            _details(c, params_of(doc, c).method, console)
    saved = summary_of(doc).precompute_ref_saved_bytes
    if saved:
        console.print(f"--precompute-ref: the reference model is freed after one pass; peak "
                      f"memory {format_bytes(saved.peak)} lower, "
                      f"{format_bytes(saved.models)} less held in models", highlight=False)
    roofline.render(doc, console)


def _details(c: CaseResult, method: str, console: Console) -> None:
    m = c.metrics
    console.print(f"\n[bold]{c.name}[/]: holds {_roles(m)}", highlight=False)
    final = []
    for key in LOGGED.get(method, []):
        series = m.get(f"history/{key}")
        if series:
            final.append(f"{key} {series[-1]:.4g}")
    if final:
        console.print("  last logged: " + " · ".join(final), highlight=False)
    loss = m.get("history/loss")
    if loss:
        console.print(f"  loss {loss[0]:.4f} {sparkline(loss, 40)} {loss[-1]:.4f}  "
                      f"(step 0 → {int(m['history/step'][-1])})", highlight=False)
    scores = m.get("history/objective/scores")
    if scores:
        label = "learned reward" if method == "rlhf" or m.get("reward_model_from_cache") \
            is not None else "rule score"
        console.print(f"  {label} {scores[0]:.3f} {sparkline(scores, 40)} {scores[-1]:.3f}",
                      highlight=False)
        gold = m.get("history/objective/gold_scores")
        if gold:
            console.print(f"  gold (rule) score {gold[0]:.3f} {sparkline(gold, 40)} "
                          f"{gold[-1]:.3f}", highlight=False)
        console.print(f"  mean KL to the reference over the run: "
                      f"{m['objective/kl_mean']:.3f} nats per response", highlight=False)
    if "loss_at_step0" in m:
        console.print(f"  step-0 loss {m['loss_at_step0']:.4f} (ln 2 = 0.6931 when the policy "
                      "equals the reference)", highlight=False)
