import torch

from llmbench.core.memory import cpu_method, measure_peak, rss_bytes, tensor_bytes


def test_peak_of_a_known_allocation_within_10_percent():
    size = 256 * 2**20

    def allocate():
        t = torch.ones(size // 4, dtype=torch.float32)  # written, so every page is backed
        return float(t[-1])

    torch.ones(16)  # torch's own lazy start-up stays out of the measurement
    value, peak = measure_peak(allocate)
    assert value == 1.0
    assert abs(peak.peak_bytes - size) / size < 0.10, peak
    assert peak.method == cpu_method()


def test_peak_counts_what_the_call_keeps_and_frees():
    size = 128 * 2**20

    def temporaries():
        a = torch.ones(size // 4)
        b = torch.ones(size // 4)  # both alive at once: the peak is 2 x size
        del a, b
        return None

    _, peak = measure_peak(temporaries)
    assert abs(peak.peak_bytes - 2 * size) / (2 * size) < 0.10, peak


def test_small_call_has_small_peak():
    _, peak = measure_peak(lambda: sum(range(1000)))
    assert peak.peak_bytes < 8 * 2**20


def test_rss_and_tensor_bytes():
    assert rss_bytes() > 10 * 2**20
    t = torch.zeros(1000, dtype=torch.float64)
    assert tensor_bytes(t, t[10:], None) == 8000


def test_memory_reused_from_earlier_frees_is_counted():
    size = 8 * 2**20

    def allocate(n=size):
        return float(torch.ones(n // 4).sum())

    # Freeing a 16 MiB mmap'd block raises glibc's mmap threshold, so the 8 MiB blocks that
    # follow come from the heap, and malloc keeps the freed one to hand straight back.
    allocate(2 * size)
    allocate()
    _, peak = measure_peak(allocate)
    assert abs(peak.peak_bytes - size) / size < 0.10, peak
