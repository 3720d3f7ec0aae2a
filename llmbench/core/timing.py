"""Wall-clock timing of one callable: warm-up by time, then adaptive repeats.

The habits of torch.utils.benchmark (median and IQR, repeat until the noise is small, warn when
IQR/median is over 10 %) and triton.testing.do_bench (CUDA events, flush L2 between GPU runs,
warm up by time rather than count). Calls shorter than `block_ms` are timed in blocks, each
sample being the block's mean, so that clock overhead does not dominate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NOISY_REL_IQR = 0.10


class TimingPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_s: float = Field(0.2, ge=0, description="warm up for at least this long")
    min_warmup_runs: int = Field(1, ge=0)
    min_runs: int = Field(3, ge=1, description="never fewer samples than this")
    min_time_s: float = Field(1.0, ge=0, description="measure for at least this long")
    max_runs: int = Field(200, ge=1)
    max_time_s: float = Field(
        10.0, gt=0, description="stop measuring after this long (once min_runs are taken)")
    target_rel_iqr: float = Field(NOISY_REL_IQR, gt=0,
                                  description="stop early once IQR/median is below this")
    block_ms: float = Field(1.0, ge=0, description="time calls shorter than this in blocks")
    flush_l2: bool = Field(True, description="GPU: overwrite a 256 MiB buffer before each sample")


def lockstep_policy(*, warmup: int, iters: int) -> TimingPolicy:
    """Exactly `warmup` untimed calls, then exactly `iters` calls each timed alone.

    For work every rank of a process group must call the same number of times (collectives,
    data-parallel steps): the adaptive stopping rules would let ranks disagree and deadlock.
    """
    return TimingPolicy(warmup_s=0.0, min_warmup_runs=warmup, min_runs=iters, max_runs=iters,
                        min_time_s=0.0, max_time_s=1e9, block_ms=0.0, flush_l2=False)


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class TimeStats(BaseModel):
    """Statistics of per-call times in milliseconds; `samples` keeps the raw values."""

    model_config = ConfigDict(extra="forbid")

    median: float
    iqr: float
    p10: float
    p90: float
    n: int
    samples: list[float]
    noisy: bool = Field(description=f"IQR/median > {NOISY_REL_IQR:.0%}")

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> TimeStats:
        s = sorted(samples_ms)
        median = quantile(s, 0.5)
        iqr = quantile(s, 0.75) - quantile(s, 0.25)
        return cls(
            median=median, iqr=iqr, p10=quantile(s, 0.10), p90=quantile(s, 0.90), n=len(s),
            samples=list(samples_ms),
            noisy=bool(median > 0 and iqr / median > NOISY_REL_IQR),
        )

    @property
    def rel_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf


def _rel_iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return math.inf
    s = sorted(samples)
    median = quantile(s, 0.5)
    return (quantile(s, 0.75) - quantile(s, 0.25)) / median if median > 0 else math.inf


class _CpuClock:
    def __init__(self, *_: object) -> None:
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1e3


class _CudaClock:
    """CUDA events around the work; synchronize before reading them."""

    def __init__(self, torch: Any, flush_l2: bool) -> None:
        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        # Larger than the L2 of any current GPU (H100: 50 MB), as triton.testing.do_bench does.
        self._flush = (torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
                       if flush_l2 else None)

    def start(self) -> None:
        if self._flush is not None:
            self._flush.zero_()
        self._start.record()

    def stop_ms(self) -> float:
        self._end.record()
        self._torch.cuda.synchronize()
        return float(self._start.elapsed_time(self._end))


def stopwatch(device: str = "cpu", *, flush_l2: bool = False) -> _CpuClock | _CudaClock:
    """A clock with start() and stop_ms(): CUDA events on a GPU, perf_counter on a CPU. For
    timing work that cannot be repeated at will (successive training steps)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        return _CudaClock(torch, flush_l2)
    return _CpuClock()


def measure(fn: Callable[[], object], *, device: str = "cpu",
            policy: TimingPolicy | None = None,
            prior_samples_ms: list[float] | None = None) -> TimeStats:
    """Time `fn()` per `policy` and return per-call statistics in milliseconds.

    `prior_samples_ms`: times of single calls of this same `fn` already taken by the caller
    (for example the call measured for memory, when a call takes seconds); they count as
    samples, so a slow case is not run once more than it needs.
    """
    policy = policy or TimingPolicy()
    clock = stopwatch(device, flush_l2=policy.flush_l2)

    def timed_block(k: int) -> float:
        clock.start()
        for _ in range(k):
            fn()
        return clock.stop_ms() / k

    # Warm-up by time; it also estimates the per-call time for choosing the block size.
    runs, spent_ms, last_ms = 0, 0.0, 0.0
    while runs < policy.min_warmup_runs or spent_ms < policy.warmup_s * 1e3:
        last_ms = timed_block(1)
        spent_ms += last_ms
        runs += 1
        if spent_ms >= policy.max_time_s * 1e3:
            break
    samples: list[float] = list(prior_samples_ms or [])
    total_ms = sum(samples)
    if samples and runs == 0:
        last_ms = samples[-1]
    elif runs == 0:  # no warm-up asked for: the first call estimates and, if long, is a sample
        last_ms = timed_block(1)
        if not 0 < last_ms < policy.block_ms:
            samples.append(last_ms)
            total_ms = last_ms
            if len(samples) >= policy.max_runs:
                return TimeStats.from_samples(samples)
    block = 1
    if policy.block_ms > 0 and 0 < last_ms < policy.block_ms:
        block = min(10_000, math.ceil(policy.block_ms / max(last_ms, 1e-6)))

    while True:
        sample = timed_block(block)
        samples.append(sample)
        total_ms += sample * block
        n = len(samples)
        if n >= policy.max_runs or (n >= policy.min_runs and total_ms >= policy.max_time_s * 1e3):
            break
        if (n >= policy.min_runs and total_ms >= policy.min_time_s * 1e3
                and _rel_iqr(samples) <= policy.target_rel_iqr):
            break
    return TimeStats.from_samples(samples)


def measure_interleaved(fns: dict[str, Callable[[], object]], *, device: str = "cpu",
                        warmup: int, iters: int) -> dict[str, TimeStats]:
    """Time several variants of one piece of work in alternation: `warmup` untimed rounds, then
    `iters` rounds each timing one call of every variant in turn. A paired measurement: drift
    in the machine's speed (other load, clocks) hits every variant alike, which back-to-back
    blocks of each would not. Exactly warmup + iters calls of each (lock-step safe)."""
    clock = stopwatch(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            clock.start()
            fn()
            samples[name].append(clock.stop_ms())
    return {name: TimeStats.from_samples(s) for name, s in samples.items()}
