import time

import pytest

from llmbench.core.timing import TimeStats, TimingPolicy, measure, quantile


def test_quantile_linear_interpolation():
    values = [1.0, 2.0, 3.0, 4.0]
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.25) == 1.75
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 1.0) == 4.0
    assert quantile([7.0], 0.9) == 7.0


def test_stats_from_samples():
    s = TimeStats.from_samples([10.0, 12.0, 11.0, 13.0, 100.0])
    assert s.median == 12.0
    assert s.iqr == pytest.approx(13.0 - 11.0)
    assert s.n == 5 and s.samples == [10.0, 12.0, 11.0, 13.0, 100.0]
    assert s.p10 == pytest.approx(10.4)
    assert s.p90 == pytest.approx(13.0 + 0.6 * 87.0)
    assert s.noisy  # IQR/median = 2/12 > 10 %
    assert not TimeStats.from_samples([10.0, 10.1, 10.2, 10.1]).noisy


def test_measure_sleep_median():
    policy = TimingPolicy(warmup_s=0.0, min_runs=5, min_time_s=0.1, max_time_s=2.0)
    stats = measure(lambda: time.sleep(0.02), policy=policy)
    assert stats.n >= 5
    assert 20.0 <= stats.median < 26.0


def test_measure_respects_caps():
    policy = TimingPolicy(warmup_s=0.0, min_runs=3, min_time_s=100.0, max_runs=4,
                          max_time_s=100.0)
    stats = measure(lambda: time.sleep(0.005), policy=policy)
    assert stats.n == 4
    policy = TimingPolicy(warmup_s=0.0, min_runs=3, max_runs=1000, max_time_s=0.2,
                          target_rel_iqr=1e-9)
    t0 = time.perf_counter()
    stats = measure(lambda: time.sleep(0.05), policy=policy)
    assert 3 <= stats.n < 10 and time.perf_counter() - t0 < 1.0


def test_min_runs_is_a_floor_even_past_max_time():
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_time_s=0.01,
                          block_ms=0.0)
    stats = measure(lambda: time.sleep(0.02), policy=policy)
    assert stats.n == 3


def test_fast_calls_are_timed_in_blocks():
    calls = []
    policy = TimingPolicy(warmup_s=0.01, min_runs=3, min_time_s=0.0, max_runs=3,
                          block_ms=1.0)
    stats = measure(lambda: calls.append(1), policy=policy)
    assert stats.n == 3
    # Each sample is the mean of a block of many calls, so far more calls than samples ran.
    assert len(calls) > 100
    assert stats.median < 0.1


def test_prior_samples_count():
    calls = []
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_runs=3,
                          min_time_s=0.0, block_ms=0.0)
    stats = measure(lambda: calls.append(time.sleep(0.01)), policy=policy,
                    prior_samples_ms=[10.0])
    assert stats.n == 3 and len(calls) == 2
    assert stats.samples[0] == 10.0


def test_noisy_calls_are_flagged():
    delays = iter([0.002, 0.02] * 50)
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=6, max_runs=6,
                          block_ms=0.0)
    stats = measure(lambda: time.sleep(next(delays)), policy=policy)
    assert stats.noisy


def test_lockstep_policy_makes_exactly_the_calls_asked_for():
    """Every rank of a group must call a collective equally often: no adaptive stopping."""
    from llmbench.core.timing import lockstep_policy

    calls = []
    stats = measure(lambda: calls.append(1), policy=lockstep_policy(warmup=3, iters=7))
    assert len(calls) == 10 and stats.n == 7
    slow = []
    stats = measure(lambda: (slow.append(1), time.sleep(0.01)),
                    policy=lockstep_policy(warmup=0, iters=2))
    assert len(slow) == 2 and stats.n == 2  # no extra estimation call either


def test_lockstep_single_call_is_a_single_call():
    from llmbench.core.timing import lockstep_policy

    calls = []
    stats = measure(lambda: calls.append(1), policy=lockstep_policy(warmup=0, iters=1))
    assert len(calls) == 1 and stats.n == 1


def test_interleaved_variants_alternate():
    from llmbench.core.timing import measure_interleaved

    order = []
    stats = measure_interleaved({"a": lambda: order.append("a"),
                                 "b": lambda: (order.append("b"), time.sleep(0.002))},
                                warmup=1, iters=3)
    assert order == ["a", "b"] * 4
    assert stats["a"].n == stats["b"].n == 3
    assert stats["b"].median > stats["a"].median


# ---------------------------------------------------------------- the CUDA path, on a fake GPU


class FakeGpu:
    """The few torch calls the CUDA timing path makes, with a clock that only the work moves.

    `log` records what reached the stream, in order: ("flush",), ("record", event), ("call",)
    and ("sync",). Reading an event's time before a synchronize fails, as it would on a GPU
    that has not reached the event yet."""

    int8 = "int8"

    def __init__(self, call_ms=0.05, flush_ms=1.0, l2_bytes=50 * 2**20):
        from types import SimpleNamespace

        self.clock, self.call_ms, self.flush_ms = 0.0, call_ms, flush_ms
        self.log: list[tuple] = []
        self.unsynced: set[int] = set()
        self.buffers: list[int] = []
        gpu = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self):
                self.t = gpu.clock
                gpu.unsynced.add(id(self))
                gpu.log.append(("record", self))

            def elapsed_time(self, end):
                assert id(self) not in gpu.unsynced and id(end) not in gpu.unsynced, \
                    "elapsed_time read before synchronize"
                return end.t - self.t

        def synchronize():
            gpu.unsynced.clear()
            gpu.log.append(("sync",))

        props = SimpleNamespace(L2_cache_size=l2_bytes)
        self.cuda = SimpleNamespace(Event=Event, synchronize=synchronize,
                                    get_device_properties=lambda index=0: props,
                                    is_available=lambda: True)

    def empty(self, n, dtype=None, device=None):
        assert device == "cuda"
        self.buffers.append(n * (1 if dtype == self.int8 else 4))
        gpu = self

        class Buffer:
            def zero_(self):
                gpu.clock += gpu.flush_ms
                gpu.log.append(("flush",))
                return self

        return Buffer()

    def work(self):
        self.clock += self.call_ms
        self.log.append(("call",))

    def calls(self):
        return [i for i, entry in enumerate(self.log) if entry[0] == "call"]


@pytest.fixture
def fake_gpu(monkeypatch):
    import sys

    gpu = FakeGpu()
    monkeypatch.setitem(sys.modules, "torch", gpu)
    return gpu


def test_cuda_flushes_l2_before_every_timed_call_outside_its_events(fake_gpu):
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=2, min_runs=5, max_runs=40,
                          min_time_s=0.0, max_time_s=10.0, block_ms=1.0)
    stats = measure(fake_gpu.work, device="cuda", policy=policy)
    log = fake_gpu.log
    for i in fake_gpu.calls():
        # flush, start event, the call, end event: the flush is outside the event pair.
        assert log[i - 2] == ("flush",) and log[i - 1][0] == "record" and log[i + 1][0] == "record"
        assert log[i - 1][1] is not log[i + 1][1]
    flushes = sum(1 for e in log if e == ("flush",))
    assert flushes == len(fake_gpu.calls())
    # Each sample is one call's time, without the (1 ms) flush before it.
    assert stats.samples == pytest.approx([0.05] * stats.n)
    # The buffer: twice the L2, and never less than 256 MiB.
    assert fake_gpu.buffers == [256 * 2**20]


def test_cuda_flush_buffer_follows_the_l2(monkeypatch):
    import sys

    gpu = FakeGpu(l2_bytes=200 * 2**20)
    monkeypatch.setitem(sys.modules, "torch", gpu)
    measure(gpu.work, device="cuda", policy=TimingPolicy(warmup_s=0.0, min_runs=3, max_runs=3))
    assert gpu.buffers == [400 * 2**20]


def test_cuda_calls_get_their_own_events_and_synchronize_per_batch(fake_gpu):
    policy = TimingPolicy(warmup_s=0.0, min_warmup_runs=1, min_runs=50, max_runs=50,
                          min_time_s=0.0, max_time_s=10.0, block_ms=1.0)
    stats = measure(fake_gpu.work, device="cuda", policy=policy)
    assert stats.n == 50
    calls = len(fake_gpu.calls())
    syncs = sum(1 for e in fake_gpu.log if e == ("sync",))
    assert syncs < calls / 5  # batches of calls, not a synchronize per call
    assert sum(1 for e in fake_gpu.log if e[0] == "record") == 2 * calls  # a pair per call
    batch: list = []
    for entry in fake_gpu.log:
        if entry == ("sync",):
            assert len({id(e) for e in batch}) == len(batch)  # no event reused before a sync
            batch = []
        elif entry[0] == "record":
            batch.append(entry[1])


def test_cuda_stopping_rules_and_lockstep_counts(fake_gpu):
    from llmbench.core.timing import lockstep_policy

    stats = measure(fake_gpu.work, device="cuda", policy=lockstep_policy(warmup=3, iters=7))
    assert len(fake_gpu.calls()) == 10 and stats.n == 7
    # lock-step: no flush, and every call timed alone (a synchronize after each).
    assert ("flush",) not in fake_gpu.log
    assert sum(1 for e in fake_gpu.log if e == ("sync",)) >= 10
    fake_gpu.log.clear()
    stats = measure(fake_gpu.work, device="cuda", policy=lockstep_policy(warmup=0, iters=1))
    assert len(fake_gpu.calls()) == 1 and stats.n == 1
    fake_gpu.log.clear()
    capped = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_runs=17,
                          min_time_s=100.0, max_time_s=100.0, block_ms=1.0)
    stats = measure(fake_gpu.work, device="cuda", policy=capped)
    assert stats.n == 17 and len(fake_gpu.calls()) == 17  # max_runs caps calls, not batches
    fake_gpu.log.clear()
    timed = TimingPolicy(warmup_s=0.0, min_warmup_runs=0, min_runs=3, max_runs=100_000,
                         min_time_s=0.0, max_time_s=0.5, block_ms=1.0, target_rel_iqr=1e-9)
    flip = iter([0.04, 0.06] * 10**6)

    def noisy():
        fake_gpu.work()
        fake_gpu.clock += next(flip) - fake_gpu.call_ms

    stats = measure(noisy, device="cuda", policy=timed)
    assert stats.noisy
    # Stopped by max_time_s (0.5 s of 0.05 ms calls on average), checked between batches.
    assert 10_000 <= stats.n < 11_000


def test_cuda_warmup_by_time(fake_gpu, monkeypatch):
    policy = TimingPolicy(warmup_s=0.1, min_warmup_runs=1, min_runs=5, max_runs=5,
                          min_time_s=0.0, block_ms=1.0)
    t0 = time.perf_counter()
    stats = measure(fake_gpu.work, device="cuda", policy=policy)
    warmup_calls = len(fake_gpu.calls()) - stats.n
    assert stats.n == 5 and warmup_calls < 2_600
    if time.perf_counter() - t0 < 0.1:  # else the wall clock ended the warm-up first
        assert warmup_calls >= 2_000  # 100 ms of 0.05 ms calls
    idle = FakeGpu(call_ms=0.0)  # calls that leave the GPU idle: the wall clock ends it
    monkeypatch.setitem(__import__("sys").modules, "torch", idle)
    t0 = time.perf_counter()
    measure(idle.work, device="cuda", policy=policy.model_copy(update={"warmup_s": 0.05}))
    assert time.perf_counter() - t0 < 5


def test_stopwatch_flushes_only_when_asked(fake_gpu):
    from llmbench.core.timing import stopwatch

    clock = stopwatch("cuda")
    clock.start()
    fake_gpu.work()
    assert clock.stop_ms() == pytest.approx(0.05)
    assert ("flush",) not in fake_gpu.log
    clock = stopwatch("cuda", flush_l2=True)
    clock.start()
    fake_gpu.work()
    assert clock.stop_ms() == pytest.approx(0.05)  # the flush is before the start event
    assert fake_gpu.log.count(("flush",)) == 1


def test_windows_time_back_to_back_calls_after_a_barrier_as_nccl_tests_does():
    from llmbench.core.timing import measure_windows

    events = []

    def call():
        events.append("call")
        time.sleep(0.002)

    stats = measure_windows(call, warmup=2, ops=4, windows=3,
                            barrier=lambda: events.append("barrier"))
    # 2 untimed calls, then per window: a barrier and exactly 4 calls (lock-step safe).
    assert events == ["call"] * 2 + (["barrier"] + ["call"] * 4) * 3
    assert stats.n == 3
    # A sample is the window's time per call: at least the 2 ms sleep, not 4 x 2 ms.
    assert all(0.002e3 <= s < 0.002e3 * 4 for s in stats.samples), stats.samples
    with pytest.raises(ValueError):
        measure_windows(call, warmup=0, ops=0, windows=1, barrier=lambda: None)
