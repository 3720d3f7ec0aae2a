"""Is MQA/GQA decoding really faster than MHA here? Measured, not quoted.

Runs `llmbench kvcache` (the measured part: a scaled-down copy decoding at context 2048) for a
few presets and prints each variant's decode tokens/s and its ratio to MHA. Fails if MQA is
slower than MHA for any of them.

    python benchmarks/kvcache_decode.py [--models llama-3-8b,falcon-7b] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-3-8b,falcon-7b,gemma-2b")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    failed = False
    print(f"{'model':<12} {'variant':<8} {'tokens/s':>10} {'vs MHA':>8}")
    for model in args.models.split(","):
        proc = subprocess.run(
            [sys.executable, "-m", "llmbench", "kvcache", "--model", model, "--dtype", args.dtype,
             "--measure-seq", str(args.context), "--batch", str(args.batch), "--format", "json",
             "-q"], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        cases = {c["params"]["variant"]: c for c in json.loads(proc.stdout)["cases"]}
        for variant, case in cases.items():
            m = case["metrics"]
            print(f"{model:<12} {variant:<8} {m['decode_tokens_per_s']:>10.1f} "
                  f"{m['speedup_vs_mha_x']:>7.2f}x")
        mqa = cases["MQA"]["metrics"]["decode_tokens_per_s"]
        mha = cases["MHA"]["metrics"]["decode_tokens_per_s"]
        failed |= mqa < mha
    print("FAIL: MQA slower than MHA somewhere" if failed else "OK: MQA >= MHA everywhere")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
