"""Plots of result documents, where people would rather look than read (matplotlib, optional).

Each function takes a document and returns (title, PNG bytes) pairs; a document with nothing
worth plotting gives none.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from llmbench.core.results import CaseResult, ResultDocument

Figure = tuple[str, bytes]

# Plain text with brackets: print it with markup off (`report.tables.print_plain`), or rich
# reads `[plot]` as a style and prints `'llmbench'`.
HINT = "plots need matplotlib: pip install 'llmbench[plot]'"


def available() -> str | None:
    """None when matplotlib imports, else the one-line hint (`HINT`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        return HINT
    return None


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _subplots(n: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.6), squeeze=False)
    return fig, axes[0]


def _ok(doc: ResultDocument) -> list[CaseResult]:
    return [c for c in doc.cases if c.ok]


def _loglog(axes: list[tuple[Any, str]], xlabel: str) -> None:
    """Log-log axes (x in powers of two) with labels and a grid; a legend on the first."""
    for ax, label in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)


def _typed(doc: ResultDocument) -> list[tuple[Any, CaseResult]]:
    """(typed params, case) of every ok case."""
    from llmbench.benches import params_of

    return [(params_of(doc, c), c) for c in _ok(doc)]


def attention(doc: ResultDocument) -> list[Figure]:
    cases = _typed(doc)
    impls = list(dict.fromkeys(p.impl for p, _ in cases))
    if not cases or len({p.seq for p, _ in cases}) < 2:
        return []
    fig, (t_ax, m_ax) = _subplots(2)
    for impl in impls:
        cs = sorted(((p, c) for p, c in cases if p.impl == impl), key=lambda pc: pc[0].seq)
        seqs = [p.seq for p, _ in cs]
        t_ax.plot(seqs, [c.time().median for _, c in cs], marker="o", label=impl)
        m_ax.plot(seqs, [max(1, c.metrics["peak_memory_bytes"]) / 2**20 for _, c in cs],
                  marker="o", label=impl)
    _loglog([(t_ax, "median time (ms)"), (m_ax, "peak memory (MiB)")], "sequence length")
    return [("attention: time and memory vs sequence length (log-log)", _png(fig))]


def kvcache(doc: ResultDocument) -> list[Figure]:
    from llmbench.benches import summary_of

    if not doc.summary:
        return []
    summary = summary_of(doc)
    rows = summary.analytic
    if not rows:
        return []
    fig, axes = _subplots(2 if _ok(doc) else 1)
    names = [r.variant for r in rows]
    axes[0].bar(names, [r.bytes_per_token / 1024 for r in rows],
                color=["tab:orange" if r.published else "tab:blue" for r in rows])
    axes[0].set_ylabel("KV cache per token (KiB)")
    axes[0].set_title(f"{summary.architecture.name} ({doc.config['dtype']})", fontsize=9)
    axes[0].tick_params(axis="x", rotation=45)
    cases = _typed(doc)
    if cases:
        axes[1].bar([p.variant for p, _ in cases],
                    [c.metrics["decode_tokens_per_s"] for _, c in cases], color="tab:green")
        axes[1].set_ylabel("decode tokens/s (scaled copy)")
    return [("KV-cache bytes per variant, and measured decode speed", _png(fig))]


def optim(doc: ResultDocument) -> list[Figure]:
    cases = [c for c in _ok(doc) if "weights_bytes" in c.metrics]
    if not cases:
        return []
    fig, (ax,) = _subplots(1)
    names = [c.name for c in cases]
    bottom = [0.0] * len(cases)
    for key, label in (("weights_bytes", "weights"), ("gradients_bytes", "gradients"),
                       ("state_bytes", "optimizer states"),
                       ("activation_memory_bytes", "activations")):
        values = [c.metrics[key] / 2**20 for c in cases]
        ax.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("MiB")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return [("training memory breakdown per optimizer", _png(fig))]


def estimate(doc: ResultDocument) -> list[Figure]:
    """The per-GPU peak of each checkpoint policy, stacked: model states, activations and
    the backward's temporaries."""
    from llmbench.benches import summary_of

    if not doc.summary:
        return []
    s = summary_of(doc)
    g = s.per_gpu
    fig, (ax,) = _subplots(1)
    names = [r.policy for r in s.by_policy]
    bottom = [0.0] * len(names)
    layers = [("weights", [g["weights_bytes"]] * len(names)),
              ("gradients", [g["gradients_bytes"]] * len(names)),
              ("optimizer states", [g["optimizer_bytes"]] * len(names)),
              ("activations", [r.activation_bytes for r in s.by_policy]),
              ("backward temporaries", [r.peak_bytes - g["model_state_bytes"]
                                        - r.activation_bytes for r in s.by_policy])]
    for label, values in layers:
        gib = [v / 2**30 for v in values]
        ax.bar(names, gib, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, gib, strict=True)]
    if s.memory_bytes:
        ax.axhline(s.memory_bytes / 2**30, color="black", linestyle="--", linewidth=1,
                   label="memory per GPU")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(f"{s.model}: batch {doc.config['batch']} x seq {doc.config['seq']}, "
                 f"{doc.config['precision']}", fontsize=9)
    ax.legend(fontsize=7)
    return [("training memory per GPU by checkpoint policy", _png(fig))]


def checkpoint(doc: ResultDocument) -> list[Figure]:
    cases = [c for c in _ok(doc) if "overhead_pct" in c.metrics]
    if not cases:
        return []
    figures = []
    fig, (ax,) = _subplots(1)
    for c in cases:
        ax.scatter(c.metrics["overhead_pct"], c.metrics["activation_memory_bytes"] / 2**20)
        ax.annotate(c.name, (c.metrics["overhead_pct"],
                             c.metrics["activation_memory_bytes"] / 2**20), fontsize=7)
    ax.set_xlabel("step time overhead vs none (%)")
    ax.set_ylabel("activation memory (MiB)")
    ax.grid(True, alpha=0.3)
    figures.append(("checkpointing: memory vs overhead", _png(fig)))
    typed = [(p, c) for p, c in _typed(doc) if "overhead_pct" in c.metrics]
    policies = list(dict.fromkeys(p.policy for p, _ in typed))
    if len({p.layers for p, _ in typed}) >= 2:
        fig, (ax,) = _subplots(1)
        for policy in policies:
            cs = sorted(((p, c) for p, c in typed if p.policy == policy),
                        key=lambda pc: pc[0].layers)
            ax.plot([p.layers for p, _ in cs],
                    [c.metrics["activation_memory_bytes"] / 2**20 for _, c in cs], marker="o",
                    label=policy)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("layers")
        ax.set_ylabel("activation memory (MiB)")
        ax.legend(fontsize=8)
        figures.append(("checkpointing: activation memory vs depth (log-log)", _png(fig)))
    return figures


def _curves(doc: ResultDocument, keys: list[tuple[str, str]], x_key: str | None,
            title: str) -> list[Figure]:
    cases = _ok(doc)
    present = [(k, label) for k, label in keys if any(k in c.metrics for c in cases)]
    if not present:
        return []
    fig, axes = _subplots(len(present))
    for ax, (key, label) in zip(axes, present, strict=True):
        for c in cases:
            ys = c.metrics.get(key)
            if not ys:
                continue
            xs = c.metrics.get(x_key) if x_key else list(range(len(ys)))
            ax.plot(xs, ys, label=c.name)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return [(title, _png(fig))]


def align(doc: ResultDocument) -> list[Figure]:
    return _curves(doc, [("history/loss", "loss"),
                         ("history/rewards/accuracies", "rewards/accuracies"),
                         ("history/objective/scores", "objective/scores"),
                         ("history/objective/gold_scores", "gold (rule) score")],
                   "history/step", "alignment: loss, accuracy and reward curves")


def amp(doc: ResultDocument) -> list[Figure]:
    return _curves(doc, [("loss_curve", "training loss")], None,
                   "AMP: loss per step of each variant")


def accum(doc: ResultDocument) -> list[Figure]:
    cases = _ok(doc)
    if not cases:
        return []
    fig, (m_ax, t_ax) = _subplots(2)
    names = [c.name for c in cases]
    m_ax.bar(names, [c.metrics["peak_memory_bytes"] / 2**20 for c in cases])
    m_ax.set_ylabel("step peak memory (MiB)")
    t_ax.bar(names, [c.metrics["tokens_per_s"] for c in cases], color="tab:green")
    t_ax.set_ylabel("tokens/s")
    return [("gradient accumulation: memory and throughput per split", _png(fig))]


def schedule(doc: ResultDocument) -> list[Figure]:
    return _curves(doc, [("lr_curve", "learning rate")], None, "learning-rate schedules")


def comm(doc: ResultDocument) -> list[Figure]:
    cases = [(p, c) for p, c in _typed(doc) if c.time()]
    if len({p.bytes for p, _ in cases}) < 2:
        return []
    fig, (t_ax, b_ax) = _subplots(2)
    for name in dict.fromkeys(p.collective for p, _ in cases):
        cs = sorted(((p, c) for p, c in cases if p.collective == name),
                    key=lambda pc: pc[0].bytes)
        sizes = [p.bytes for p, _ in cs]
        t_ax.plot(sizes, [c.time().median for _, c in cs], marker="o", label=name)
        b_ax.plot(sizes, [c.metrics["busbw_gb_per_s"] for _, c in cs], marker="o",
                  label=name)
    _loglog([(t_ax, "time per call (ms)"), (b_ax, "bus bandwidth (GB/s)")],
            "message size (bytes)")
    return [("comm: time and bus bandwidth vs message size (log-log)", _png(fig))]


def plotter_of(benchmark: str) -> Callable[[ResultDocument], list[Figure]] | None:
    """What draws `benchmark`'s documents, from its declaration: its plot function, the
    generic plot of its PlotSpec, or None (it declares `no_plot` and why)."""
    from llmbench import benches
    from llmbench.core.declare import PlotSpec

    bench = benches.declaration(benchmark)
    spec = bench.plot if bench else None
    if isinstance(spec, PlotSpec):
        from llmbench.report.generic import plot

        return lambda doc: plot(doc, spec)
    if isinstance(spec, str):
        from llmbench.report import resolve

        return resolve(spec)
    return None


def figures(doc: ResultDocument) -> list[Figure]:
    """The benchmark's own plots, then the roofline chart when its cases carry the figures."""
    from llmbench.report import roofline

    plotter = plotter_of(doc.benchmark)
    return (plotter(doc) if plotter else []) + roofline.chart(doc)
