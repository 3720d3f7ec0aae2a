"""Cross-check llmbench's timing against torch.utils.benchmark in the same run.

For a few fixed attention cases, take llmbench's median (llmbench.core.timing.measure, the
code every benchmark uses) and torch.utils.benchmark.Timer(...).blocked_autorange()'s median,
interleaved so that drift hits both, and fail if any pair differs by more than --tolerance.

    python benchmarks/timer_agreement.py            # CPU; on a GPU add --device cuda
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from torch.utils import benchmark as tub

from llmbench import kernels
from llmbench.core.timing import TimingPolicy, measure

CASES = [  # (impl, seq): a ~1 ms call (timed in blocks), a ~30 ms call, a ~100 ms call
    ("sdpa-flash", 512),
    ("sdpa-flash", 2048),
    ("standard", 2048),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per case")
    args = ap.parse_args()
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    failed = False
    print(f"{'case':<22} {'llmbench ms':>12} {'torch Timer ms':>15} {'diff':>7}")
    for impl, seq in CASES:
        fn = kernels.get(impl).load()
        q, k, v = (torch.randn(1, 8, seq, 64, device=args.device, dtype=dtype) for _ in range(3))

        def call(fn=fn, q=q, k=k, v=v):
            return fn(q, k, v, causal=True)

        ours, theirs = [], []
        timer = tub.Timer(stmt="call()", globals={"call": call},
                          num_threads=torch.get_num_threads())
        for _ in range(args.rounds):
            ours.append(measure(call, device=args.device,
                                policy=TimingPolicy(min_time_s=1.0, max_time_s=5.0)).median)
            if args.device == "cuda":
                torch.cuda.synchronize()
            theirs.append(timer.blocked_autorange(min_run_time=1.0).median * 1e3)
        a, b = sorted(ours)[len(ours) // 2], sorted(theirs)[len(theirs) // 2]
        diff = abs(a - b) / b
        failed |= not diff <= args.tolerance or math.isnan(diff)
        print(f"{impl + '/seq=' + str(seq):<22} {a:>12.3f} {b:>15.3f} {diff:>6.1%}")
    print("FAIL" if failed else f"OK: every median within {args.tolerance:.0%} of torch's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
