"""`llmbench estimate` proven by measurement: predicted vs measured on this machine.

Runs `llmbench estimate ... --validate` (each checkpoint policy none / every / sqrt trains the
model here, `llmbench checkpoint`'s protocol) for the built-in model at four sizes and
precisions and for two Hugging Face architectures at their real widths, cut to 2 layers, at
two sizes each; prints predicted vs measured model states, activations and step peak, and
exits 1 unless the model states match exactly, the activations are within 10 % and the step
peaks within 15 %.

    python benchmarks/estimate_validation.py [--quick] [--json OUT]

--quick runs one size per model. The Hugging Face runs train 1.5 billion parameters in bf16
(the 128k-152k vocabularies): about 12 GB of memory and a few minutes each on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# (label, estimate's arguments): the model, then the size and precision.
RUNS: list[tuple[str, list[str]]] = [
    ("mini L4 b4 s257 fp32", ["--model", "mini", "--layers", "4", "--batch", "4", "--seq",
                              "257", "--precision", "fp32"]),
    ("base L8 b4 s257 fp32", ["--model", "base", "--layers", "8", "--batch", "4", "--seq",
                              "257", "--precision", "fp32"]),
    ("base L4 b2 s513 fp32 standard", ["--model", "base", "--layers", "4", "--batch", "2",
                                       "--seq", "513", "--precision", "fp32", "--attention",
                                       "standard"]),
    ("mini L6 b8 s257 bf16 autocast", ["--model", "mini", "--layers", "6", "--batch", "8",
                                       "--seq", "257", "--precision", "bf16-mixed",
                                       "--mixed-layout", "autocast"]),
    ("llama-3-8b L2 b2 s257 bf16", ["--hf-config", "llama-3-8b", "--layers", "2", "--batch",
                                    "2", "--seq", "257", "--precision", "bf16"]),
    ("llama-3-8b L2 b1 s513 bf16", ["--hf-config", "llama-3-8b", "--layers", "2", "--batch",
                                    "1", "--seq", "513", "--precision", "bf16"]),
    ("qwen2-7b L2 b1 s257 bf16", ["--hf-config", "qwen2-7b", "--layers", "2", "--batch", "1",
                                  "--seq", "257", "--precision", "bf16"]),
    ("qwen2-7b L2 b2 s385 bf16", ["--hf-config", "qwen2-7b", "--layers", "2", "--batch", "2",
                                  "--seq", "385", "--precision", "bf16"]),
]
QUICK = {"mini L4 b4 s257 fp32", "mini L6 b8 s257 bf16 autocast",
         "llama-3-8b L2 b2 s257 bf16", "qwen2-7b L2 b1 s257 bf16"}
ACTIVATIONS_PCT, PEAK_PCT = 10.0, 15.0


def run_one(label: str, args: list[str], folder: Path) -> list[dict]:
    out = folder / f"{len(list(folder.iterdir()))}.json"
    cmd = [sys.executable, "-m", "llmbench", "estimate", *args, "--validate", "--device",
           "cpu", "--json", str(out), "-q"]
    print(f"$ llmbench estimate {' '.join(args)} --validate --device cpu", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        print(f"  failed (exit {done.returncode}): {done.stderr.strip()[-400:]}", flush=True)
        return [{"run": label, "case": "-", "ok": False}]
    doc = json.loads(out.read_text())
    rows = []
    for case in doc["cases"]:
        m = case["metrics"]
        if case["status"] != "ok":
            rows.append({"run": label, "case": case["name"], "ok": False,
                         "reason": case.get("reason")})
            continue
        measured_states = m["weights_bytes"] + m["gradients_bytes"] + m["state_bytes"]
        row = {"run": label, "case": case["name"].split("/")[-1],
               "states": measured_states, "states_predicted": m["predicted_state_bytes"],
               "activations": m["activation_memory_bytes"],
               "activations_predicted": m["predicted_activation_bytes"],
               "activation_error_pct": m["activation_error_pct"],
               "peak": m["peak_memory_bytes"], "peak_predicted": m["predicted_peak_bytes"],
               "peak_error_pct": m["peak_error_pct"]}
        row["ok"] = (measured_states == m["predicted_state_bytes"]
                     and abs(row["activation_error_pct"]) <= ACTIVATIONS_PCT
                     and abs(row["peak_error_pct"]) <= PEAK_PCT)
        rows.append(row)
        print(f"  {row['case']:<6} states {measured_states / 2**20:10.1f} MiB "
              f"{'=' if measured_states == m['predicted_state_bytes'] else '!='} predicted · "
              f"activations {row['activations'] / 2**20:8.1f} MiB, predicted "
              f"{row['activations_predicted'] / 2**20:8.1f} ({row['activation_error_pct']:+.1f} %)"
              f" · step peak {row['peak'] / 2**20:8.1f} MiB, predicted "
              f"{row['peak_predicted'] / 2**20:8.1f} ({row['peak_error_pct']:+.1f} %)"
              f"{'' if row['ok'] else '  <- outside'}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one size per model")
    parser.add_argument("--json", help="write every row here")
    opts = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in RUNS:
            if opts.quick and label not in QUICK:
                continue
            rows += run_one(label, args, Path(tmp))
    if opts.json:
        Path(opts.json).write_text(json.dumps(rows, indent=1))
    bad = [r for r in rows if not r["ok"]]
    worst_act = max((abs(r["activation_error_pct"]) for r in rows if "peak" in r), default=0)
    worst_peak = max((abs(r["peak_error_pct"]) for r in rows if "peak" in r), default=0)
    print(f"{len(rows) - len(bad)} of {len(rows)} cases within tolerance (model states exact, "
          f"activations {ACTIVATIONS_PCT:g} %, step peak {PEAK_PCT:g} %); worst errors: "
          f"activations {worst_act:.1f} %, step peak {worst_peak:.1f} %")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
