"""The headline check: `llmbench attention --seq 8192` with defaults, on this machine.

Runs the command as a user would (fresh process, default flags), then checks the targets:
wall time under --max-wall seconds; sdpa-flash at least 5x faster and 30x less peak memory
than standard; tiled at least 20x less memory than standard; every implementation that ran
within 1e-4 of the fp64 reference. Prints the figures and exits 1 if a target is missed.

    python benchmarks/attention_acceptance.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="8192")
    ap.add_argument("--max-wall", type=float, default=90.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "attention.json"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "llmbench", "attention", "--seq", args.seq,
                               "--json", str(out), "-q"], text=True, capture_output=True)
        wall = time.perf_counter() - t0
        print(proc.stdout)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        doc = json.loads(out.read_text())
    cases = {c["params"]["impl"]: c for c in doc["cases"]}
    checks = []

    def check(label: str, value: float | None, ok: bool) -> None:
        checks.append(ok)
        shown = "missing" if value is None else f"{value:.3g}"
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {shown}")

    check(f"wall time (s) < {args.max_wall:g}", wall, wall < args.max_wall)
    flash = cases.get("sdpa-flash", {}).get("metrics", {})
    tiled = cases.get("tiled", {}).get("metrics", {})
    speed = flash.get("speedup_vs_standard_x")
    check("sdpa-flash speed-up vs standard >= 5x", speed, speed is not None and speed >= 5)
    mem = flash.get("memory_reduction_vs_standard_x")
    check("sdpa-flash memory reduction vs standard >= 30x", mem, mem is not None and mem >= 30)
    mem = tiled.get("memory_reduction_vs_standard_x")
    check("tiled memory reduction vs standard >= 20x", mem, mem is not None and mem >= 20)
    for impl, case in cases.items():
        if case["status"] == "ok":
            err = case["metrics"]["max_abs_error"]
            check(f"{impl} max abs error <= 1e-4", err, err <= 1e-4)
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
