"""Summarize a folder of llmbench results (what benchmarks/gpu_session.sh leaves behind).

    python benchmarks/session_summary.py RESULTS_DIR

One block per step: its exit code and time (from session.txt), its cases by status, every
distinct reason a case did not run ok, throttled cases, and the step's headline figures. Never
fails on a missing or broken file: that is part of the summary too.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _steps(folder: Path) -> list[tuple[str, str]]:
    """(name, 'exit N after S s') per step, in the order they ran."""
    path = folder / "session.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        found = re.match(r"exit (\d+) after (\d+) s: (\S+)", line)
        if found:
            out.append((found.group(3), f"exit {found.group(1)} after {found.group(2)} s"))
    return out


def _headline(doc: dict[str, Any]) -> list[str]:
    """A few figures a reader looks for first, per benchmark."""
    lines = []
    cases = [c for c in doc.get("cases", []) if c.get("status") == "ok"]
    bench = doc.get("benchmark")
    if bench == "attention":
        for c in cases:
            m = c.get("metrics", {})
            t = (m.get("time_ms") or {}).get("median")
            if t is None:
                continue
            extra = "".join(f" {label} {m[key]:.3g}x" for key, label in (
                ("speedup_vs_standard_x", "speed-up"),
                ("memory_reduction_vs_standard_x", "memory")) if key in m)
            roof = (f", {m['arithmetic_intensity']:.3g} FLOP/B {m.get('bound', '?')}-bound "
                    f"{m['roofline_pct']:.3g} % of roofline" if "roofline_pct" in m else "")
            lines.append(f"{c['name']}: {t:.4g} ms, {m.get('throughput_tflops', 0):.4g} TFLOP/s,"
                         f" err {m.get('max_abs_error', float('nan')):.1e}{extra}{roof}")
            if c.get("trace"):
                top = (c["trace"].get("top") or [{}])[0]
                lines.append(f"  top op {top.get('name')} {top.get('pct', 0):.3g} % "
                             f"({c['trace'].get('ranked_by')}); snapshot "
                             f"{c['trace'].get('memory_snapshot')}")
        source = doc.get("summary", {}).get("peak_source")
        if source:
            lines.append(f"peak: {doc['summary'].get('peak_tflops')} TFLOP/s ({source})")
    elif bench == "peak":
        for c in cases:
            m = c.get("metrics", {})
            figure = (f"{m['tflops']:.4g} TFLOP/s" if "tflops" in m
                      else f"{m.get('gbps', 0):.4g} GB/s")
            lines.append(f"{c['name']}: {figure}")
        lines.append(f"summary: {json.dumps(doc.get('summary', {}), default=str)[:600]}")
    elif bench == "tune" and doc.get("summary", {}).get("compile_only"):
        for arch, t in doc["summary"].get("targets", {}).items():
            lines.append(f"{arch}: {t['fit']} of {t['cases']} fit, most shared memory "
                         f"{t['max_shared_memory_bytes']:,} of "
                         f"{t['shared_memory_limit_bytes'] or 0:,} B")
    elif bench == "tune":
        for d, w in doc.get("summary", {}).get("winners", {}).items():
            lines.append(f"head dim {d}: winner {w}")
    else:
        for c in cases[:8]:
            t = ((c.get("metrics", {}).get("time_ms") or {}).get("median"))
            if t is not None:
                lines.append(f"{c['name']}: {t:.4g} ms")
    return lines


def _env_report(doc: dict[str, Any]) -> list[str]:
    """`llmbench env --json`: the device, the profile and why, the dtype and the peak."""
    hw, env, profile = doc.get("hardware", {}), doc.get("env", {}), doc.get("profile", {})
    gpu = (hw.get("gpus") or [{}])[0]
    where = (f"{gpu.get('name')} (compute capability {env.get('compute_capability')})"
             if gpu else env.get("cpu_model"))
    peak = doc.get("peak") or {}
    return [f"env: {where} · profile {profile.get('name')} ({profile.get('reason')})",
            f"  default dtype {doc.get('default_dtype')} · peak {doc.get('peak_tflops')} "
            f"TFLOP/s ({peak.get('source')}) · torch {env.get('torch')} · triton "
            f"{env.get('triton')} · driver {env.get('driver')}",
            f"  threads {env.get('torch_threads')} · SM clock {env.get('gpu_sm_clock_mhz')} of "
            f"{env.get('gpu_sm_clock_max_mhz')} MHz · power limit {env.get('gpu_power_limit_w')}"
            f" W · {env.get('gpu_temperature_c')} C"]


def summarize_doc(path: Path) -> list[str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"{path.name}: unreadable ({exc})"]
    if "hardware" in doc:
        return _env_report(doc)
    env = doc.get("env", {})
    counts = Counter(c.get("status") for c in doc.get("cases", []))
    lines = [f"{path.name}: {doc.get('benchmark')} on {env.get('gpu_name') or env.get('cpu_model')}"
             f" · profile {env.get('profile')} · "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    reasons = {}
    for c in doc.get("cases", []):
        if c.get("status") != "ok" and c.get("reason"):
            reasons.setdefault((c["status"], c["reason"]), c["name"])
        if c.get("metrics", {}).get("gpu_throttled"):
            lines.append(f"  throttled: {c['name']} ({c['metrics'].get('gpu_throttle_reasons')})")
    for (status, reason), name in reasons.items():
        lines.append(f"  {status}: {name}: {reason}")
    lines += [f"  {line}" for line in _headline(doc)]
    return lines


def main(folder: Path) -> int:
    if not folder.is_dir():
        print(f"{folder}: no such folder")
        return 2
    print(f"== llmbench session summary: {folder}")
    mode = (folder / "session.txt").read_text().splitlines()[0] if (
        folder / "session.txt").exists() else "unknown mode"
    print(mode)
    for name, how in _steps(folder):
        print(f"- {name}: {how}")
        doc = folder / f"{name}.json"
        if doc.exists():
            for line in summarize_doc(doc):
                print(f"  {line}")
        else:
            text = folder / f"{name}.txt"
            tail = text.read_text().strip().splitlines()[-4:] if text.exists() else []
            for line in tail:
                print(f"    | {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")))
