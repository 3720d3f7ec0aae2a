"""Acceptance check of `llmbench peak`: its best fp32 GEMM and its best STREAM copy agree with
torch.utils.benchmark timing the same work.

Runs `llmbench peak --json` (any further arguments go to it), reads the best fp32 GEMM's shape
and TFLOP/s and the best copy's array size and GB/s, then times `torch.mm(a, b, out=c)` at that
shape and `y.copy_(x)` at that size with `torch.utils.benchmark.Timer(...)
.blocked_autorange()`, with as many threads as llmbench's cases use (the Timer's default is
one), fp32 as fp32 (TF32 off), and the same conventions: 2·M·N·K FLOPs a GEMM, 2 x the array's
bytes a copy. Prints both figures and their ratios; exits 1 unless the GEMM agrees within
15 % and the copy within 20 %.

    python benchmarks/peak_agreement.py                 # this machine's device, defaults
    python benchmarks/peak_agreement.py --device cpu
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

GEMM_TOLERANCE = 0.15
BANDWIDTH_TOLERANCE = 0.20
MIN_RUN_TIME_S = 2.0


def run_peak(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="peak-agreement-") as tmp:
        path = Path(tmp) / "peak.json"
        proc = subprocess.run([sys.executable, "-m", "llmbench", "peak", "--json", str(path),
                               *args], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"llmbench peak exited {proc.returncode}")
        print(proc.stdout, end="")
        return json.loads(path.read_text())


def main() -> int:
    doc = run_peak(sys.argv[1:])
    import torch
    from torch.utils.benchmark import Timer

    device = doc["env"]["device"]
    threads = doc["env"].get("torch_threads") or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    summary = doc["summary"]
    if "fp32" not in summary["gemm"] or "copy" not in summary["bandwidth"]:
        print("llmbench peak gave no fp32 GEMM or no copy figure: nothing to compare")
        return 1

    gemm = summary["gemm"]["fp32"]
    m, n, k = (int(x) for x in gemm["shape"].split(" x "))
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    c = torch.empty(m, n, device=device)
    timed = Timer("torch.mm(a, b, out=c)", globals={"torch": torch, "a": a, "b": b, "c": c},
                  num_threads=threads).blocked_autorange(min_run_time=MIN_RUN_TIME_S)
    ref_tflops = 2 * m * n * k / timed.median / 1e12
    del a, b, c

    copy = summary["bandwidth"]["copy"]
    size = copy["array_bytes"]
    x = torch.full((size // 4,), 1.0, device=device)
    y = torch.empty_like(x)
    y.copy_(x)  # first touch of y's pages
    timed = Timer("y.copy_(x)", globals={"x": x, "y": y},
                  num_threads=threads).blocked_autorange(min_run_time=MIN_RUN_TIME_S)
    ref_gbps = 2 * size / timed.median / 1e9

    gemm_ratio = gemm["tflops"] / ref_tflops
    copy_ratio = copy["gbps"] / ref_gbps
    gemm_ok = abs(gemm_ratio - 1) <= GEMM_TOLERANCE
    copy_ok = abs(copy_ratio - 1) <= BANDWIDTH_TOLERANCE
    print(f"\n{device}, {threads} thread(s); torch.utils.benchmark "
          f"blocked_autorange(min_run_time={MIN_RUN_TIME_S:g})")
    print(f"fp32 GEMM {gemm['shape']}: llmbench peak {gemm['tflops']:.4g} TFLOP/s, "
          f"torch.mm {ref_tflops:.4g} TFLOP/s, ratio {gemm_ratio:.3f} "
          f"({'ok' if gemm_ok else 'FAIL'}: within {GEMM_TOLERANCE:.0%})")
    print(f"copy {size / 2**20:g} MiB arrays: llmbench peak {copy['gbps']:.4g} GB/s, "
          f"Tensor.copy_ {ref_gbps:.4g} GB/s, ratio {copy_ratio:.3f} "
          f"({'ok' if copy_ok else 'FAIL'}: within {BANDWIDTH_TOLERANCE:.0%})")
    return 0 if gemm_ok and copy_ok else 1


if __name__ == "__main__":
    sys.exit(main())
