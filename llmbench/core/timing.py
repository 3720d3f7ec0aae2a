"""Wall-clock timing of one callable: warm-up by time, then adaptive repeats.

The habits of torch.utils.benchmark (median and IQR, repeat until the noise is small, warn when
IQR/median is over 10 %) and triton.testing.do_bench (warm up by time rather than count; on a
GPU, CUDA events and a flushed L2 before every call).

CPU: calls shorter than `block_ms` are timed in blocks with perf_counter, each sample being the
block's mean, so that clock overhead does not dominate. Nothing is flushed.

CUDA: every call is a sample of its own. Before each call an L2 flush buffer (twice the L2, at
least 256 MiB) is zeroed, then the call runs between its own pair of CUDA events, so the flush
is never timed and no call finds the previous one's data in L2. Calls run in batches of about
`_CUDA_BATCH_MS` with no synchronize inside a batch; after each batch one synchronize, the
events are read and the stopping rules are checked. With `block_ms=0` (lock-step) a batch is a
single call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmbench.core import tracing

NOISY_REL_IQR = 0.10
L2_FLUSH_MIN_BYTES = 256 * 2**20
_CUDA_BATCH_MS = 20.0  # the work between two synchronizes while measuring on a GPU
_CUDA_MAX_BATCH = 1000


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
    block_ms: float = Field(
        1.0, ge=0, description="CPU: time calls shorter than this in blocks; CUDA: 0 "
        "synchronizes after every call, else calls run in batches between synchronizes")
    flush_l2: bool = Field(
        True, description="CUDA: zero a buffer of twice the L2 (at least 256 MiB) before "
        "every timed call, outside its events")


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


def _enough(samples: list[float], total_ms: float, policy: TimingPolicy) -> bool:
    """The stopping rules, on a CPU and a GPU alike: max_runs, or max_time once min_runs are
    in; or min_runs and min_time with IQR/median at or below the target."""
    n = len(samples)
    if n >= policy.max_runs or (n >= policy.min_runs and total_ms >= policy.max_time_s * 1e3):
        return True
    return (n >= policy.min_runs and total_ms >= policy.min_time_s * 1e3
            and _rel_iqr(samples) <= policy.target_rel_iqr)


class _CpuClock:
    def __init__(self, *_: object) -> None:
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1e3


def l2_flush_bytes(torch: Any) -> int:
    """The size of the buffer zeroed to flush L2: twice cuda:0's L2, at least 256 MiB (what
    triton.testing.do_bench uses: larger than the L2 of any GPU it was written for)."""
    try:
        l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 0)
    except Exception:  # an older torch or a device that does not say: the floor
        l2 = 0
    return max(L2_FLUSH_MIN_BYTES, 2 * l2)


def _l2_flush_buffer(torch: Any) -> Any:
    return torch.empty(l2_flush_bytes(torch), dtype=torch.int8, device="cuda")


class _CudaClock:
    """CUDA events around the work; synchronize before reading them."""

    def __init__(self, torch: Any, flush_l2: bool) -> None:
        self._torch = torch
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._flush = _l2_flush_buffer(torch) if flush_l2 else None

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
    timing work that cannot be repeated at will (successive training steps). It flushes
    nothing unless `flush_l2` (then the L2 flush buffer is zeroed in start(), before the start
    event); stop_ms() synchronizes."""
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

    Once the statistics are computed, `tracing.after_timing` may call `fn` once more (under
    --trace, for the case's first timed function): never one of the samples.
    """
    policy = policy or TimingPolicy()
    if device == "cuda":
        import torch

        stats = _measure_cuda(fn, torch, policy, prior_samples_ms)
    else:
        stats = _measure_cpu(fn, policy, prior_samples_ms)
    tracing.after_timing(fn, device)
    return stats


def _measure_cpu(fn: Callable[[], object], policy: TimingPolicy,
                 prior_samples_ms: list[float] | None) -> TimeStats:
    """`measure` on a CPU (see the module's docstring)."""
    clock = _CpuClock()

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
        if _enough(samples, total_ms, policy):
            break
    return TimeStats.from_samples(samples)


class _CudaCalls:
    """Runs calls on the GPU, each timed by its own pair of CUDA events, with the L2 flushed
    before each (outside the pair), and one synchronize per batch."""

    def __init__(self, torch: Any, flush_l2: bool) -> None:
        self._torch = torch
        self._flush = _l2_flush_buffer(torch) if flush_l2 else None
        self._pairs: list[tuple[Any, Any]] = []  # reused only after a synchronize

    def run(self, fn: Callable[[], object], k: int) -> list[float]:
        """Per-call times in milliseconds of `k` calls of `fn`."""
        event = self._torch.cuda.Event
        while len(self._pairs) < k:
            self._pairs.append((event(enable_timing=True), event(enable_timing=True)))
        pairs = self._pairs[:k]
        for start, end in pairs:
            if self._flush is not None:
                self._flush.zero_()
            start.record()
            fn()
            end.record()
        self._torch.cuda.synchronize()
        return [float(start.elapsed_time(end)) for start, end in pairs]


def _measure_cuda(fn: Callable[[], object], torch: Any, policy: TimingPolicy,
                  prior_samples_ms: list[float] | None) -> TimeStats:
    """`measure` on a GPU: the same warm-up and stopping rules, applied between batches of
    individually timed calls (see the module's docstring)."""
    torch.cuda.synchronize()
    calls = _CudaCalls(torch, policy.flush_l2)

    def batch(estimate_ms: float | None, cap: int) -> int:
        if policy.block_ms <= 0 or not estimate_ms or estimate_ms <= 0:
            k = 1
        else:
            k = min(_CUDA_MAX_BATCH, math.ceil(_CUDA_BATCH_MS / estimate_ms))
        return max(1, min(k, cap))

    runs, spent_ms, t0 = 0, 0.0, time.perf_counter()
    estimate: float | None = None
    # Warm up for warmup_s of GPU time, or of wall time should the calls keep the GPU idle.
    while runs < policy.min_warmup_runs or (
            spent_ms < policy.warmup_s * 1e3 and time.perf_counter() - t0 < policy.warmup_s):
        # Enough calls for the warm-up time left, else for the count still owed.
        left = (policy.warmup_s * 1e3 - spent_ms) / estimate if estimate else 1.0
        times = calls.run(fn, batch(estimate, max(math.ceil(left),
                                                  policy.min_warmup_runs - runs)))
        spent_ms += sum(times)
        runs += len(times)
        estimate = quantile(sorted(times), 0.5)
        if spent_ms >= policy.max_time_s * 1e3:
            break
    samples: list[float] = list(prior_samples_ms or [])
    total_ms = sum(samples)
    if estimate is None and samples:
        estimate = samples[-1]
    while True:
        times = calls.run(fn, batch(estimate, policy.max_runs - len(samples)))
        samples += times
        total_ms += sum(times)
        estimate = quantile(sorted(times), 0.5)
        if _enough(samples, total_ms, policy):
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


def measure_windows(fn: Callable[[], object], *, device: str = "cpu", warmup: int,
                    ops: int, windows: int, barrier: Callable[[], object]) -> TimeStats:
    """nccl-tests' timing of a collective: `warmup` untimed calls, then `windows` times:
    `barrier()`, the start mark, `ops` back-to-back calls, the end mark; a sample is the
    window's time / `ops`.

    Every rank makes exactly warmup + windows x ops calls (lock-step safe). The barrier lines
    the ranks up before the start mark, so the ranks' skew is paid once per window rather
    than per call; on a GPU, back-to-back calls let the host dispatch the next call while the
    device runs the last, so a small message's figure is the collective's latency wherever
    dispatching a call takes less time than running it (otherwise the window is host-bound,
    as nccl-tests' own would be). On CUDA the marks are events on the current stream, read
    after one synchronize per window; on a CPU, perf_counter (Gloo's calls block until done,
    so nothing overlaps there)."""
    if ops < 1 or windows < 1:
        raise ValueError("ops and windows must be at least 1")
    for _ in range(warmup):
        fn()
    cuda = device == "cuda"
    torch: Any = None
    if cuda:
        import torch
    samples = []
    for _ in range(windows):
        barrier()
        if cuda:
            torch.cuda.synchronize()  # the start mark must not wait on earlier work
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            for _ in range(ops):
                fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(float(start.elapsed_time(end)) / ops)
        else:
            t0 = time.perf_counter()
            for _ in range(ops):
                fn()
            samples.append((time.perf_counter() - t0) * 1e3 / ops)
    return TimeStats.from_samples(samples)


def measure_warmed(fn: Callable[[], object], *, device: str, policy: dict[str, Any],
                   prior_samples_ms: list[float] | None = None) -> TimeStats:
    """`measure` for a call already warmed up (by `memory.warm_then_peak`): the policy's own
    warm-up is switched off."""
    return measure(fn, device=device, prior_samples_ms=prior_samples_ms,
                   policy=TimingPolicy(**{**policy, "warmup_s": 0.0, "min_warmup_runs": 0}))
