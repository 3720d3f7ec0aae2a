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
    "orpo": ["loss", "nll_loss", "log_odds_ratio", "log_odds_chosen", "rewards/chosen",
             "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
             "logps/rejected"],
    "ppo": ["objective/scores", "objective/kl", "objective/entropy", "objective/rlhf_reward",
            "policy/approxkl", "policy/clipfrac", "loss/policy", "loss/value", "val/ratio"],
}
LOGGED["rlhf"] = LOGGED["ppo"] + ["objective/gold_scores"]
LOGGED["simpo"] = ["loss", "nll_loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                   "rewards/accuracies", "logps/chosen", "logps/rejected"]
LOGGED["kto"] = ["loss", "kl", "rewards/chosen", "rewards/rejected", "rewards/margins",
                 "logps/chosen", "logps/rejected"]


def _arrow(m: dict, key: str, fmt: str = "{:.0%}") -> str:
    before, after = m.get(f"eval/{key}_before"), m.get(f"eval/{key}_after")
    if after is None:
        return "-"
    start = fmt.format(before) if before is not None and before == before else "?"
    return f"{start} → {fmt.format(after)}"


def _scale(cfg: dict) -> str:
    """The coefficient that holds the method near its reference: PPO's KL penalty, else beta."""
    if cfg["method"] in ("ppo", "rlhf") and cfg.get("kl_coef") is not None:
        return f"kl_coef {cfg['kl_coef']:g}"
    return f"beta {cfg['beta']:g}"


def _roles(m: dict) -> str:
    parts = [f"{k.removeprefix('memory/').removesuffix('_bytes')} {format_bytes(v)}"
             for k, v in m.items() if k.startswith("memory/") and k.endswith("_bytes")]
    return ", ".join(parts)


def render(doc: ResultDocument, console: Console) -> None:
    cfg = doc.config
    console.print(header(doc), highlight=False)
    source = f"data {cfg['data']}" if cfg.get("data") else f"synthetic task '{cfg['task']}'"
    # The preference methods' forward layout (results before it existed ran them separately).
    layout = (f"{cfg.get('layout', 'separate')} forward · "
              if cfg['method'] in ("dpo", "orpo", "simpo") else "")
    console.print(f"{cfg['method']} · {source} · model {cfg['model']} · {cfg['steps']} steps · "
                  f"batch {cfg['batch']} · lr {cfg['lr']:g} · {_scale(cfg)} · "
                  f"{layout}{cfg['device']}", highlight=False)
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
        # The step's peak moves by the reference's bytes at most, and activations dominate it
        # at small sizes: it may come out higher, within the run-to-run spread.
        moved = "lower" if saved.peak >= 0 else "higher"
        console.print(f"--precompute-ref: the reference model is freed after one pass; peak "
                      f"memory {format_bytes(abs(saved.peak))} {moved}, "
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
    if "eval/logps_margin_after" in m:  # kto on an unpaired file: no pairs, no rule
        console.print(f"  held-out log-prob margin, desirable - undesirable (nats per token): "
                      f"{_arrow(m, 'logps_margin', '{:.3f}')}", highlight=False)
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
    for line in regressions(m, method):  # one line each, however wide: a terminal wraps it
        console.print(f"  ⚠ {line}", highlight=False, soft_wrap=True)


# A fall of the rule satisfaction (share of samples) worth a word: a fifth of the samples.
FALL = 0.2


def regressions(m: dict, method: str) -> list[str]:
    """Why the samples may follow the rule less after training, when they do by FALL or more,
    read from the run's own figures: reward over-optimization (the learned reward rose while
    the rule's gold score fell), or likelihood displacement (held-out preference accuracy
    rose while the chosen responses' log-probability fell: the probability went to responses
    neither chosen nor rejected)."""
    before, after = m.get("eval/rule_satisfaction_before"), m.get("eval/rule_satisfaction_after")
    if before is None or after is None or before - after < FALL:
        return []
    fell = f"rule satisfaction fell from {before:.0%} to {after:.0%}"
    scores, gold = m.get("history/objective/scores"), m.get("history/objective/gold_scores")
    if scores and gold and scores[-1] > scores[0] and gold[-1] < gold[0]:
        return [f"{fell} while the learned reward rose ({scores[0]:.3g} → {scores[-1]:.3g}; "
                f"gold {gold[0]:.3g} → {gold[-1]:.3g}): reward over-optimization, the policy "
                "found what the reward model overrates; a larger --kl-coef keeps it nearer "
                "the reference"]
    chosen = m.get("history/logps/chosen")
    acc_before = m.get("eval/preference_accuracy_before")
    acc_after = m.get("eval/preference_accuracy_after")
    if chosen and acc_before is not None and acc_after is not None and acc_after > acc_before \
            and chosen[-1] < chosen[0]:
        hint = "; --rpo-alpha 1 keeps the chosen responses likely" if method == "dpo" else ""
        return [f"{fell} while held-out preference accuracy rose ({acc_before:.0%} → "
                f"{acc_after:.0%}) and logps/chosen fell ({chosen[0]:.3g} → {chosen[-1]:.3g}): "
                "likelihood displacement, the probability went to responses neither chosen "
                f"nor rejected{hint}"]
    return [fell]
