import pytest

from llmbench.core.errors import UsageError, one_line
from llmbench.core.units import format_bytes, format_ms, parse_bytes, parse_int_sweep


def test_parse_bytes_units():
    assert parse_bytes("4096") == 4096
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("1.5GB") == 1_500_000_000
    assert parse_bytes("512 MiB") == 512 * 2**20
    with pytest.raises(UsageError, match="not a size"):
        parse_bytes("lots")


def test_format_bytes():
    assert format_bytes(268_435_456) == "256 MiB"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(None) == "-"


def test_format_ms():
    assert format_ms(2500) == "2.5 s"
    assert format_ms(12.345) == "12.3 ms"
    assert format_ms(0.0123) == "12.3 µs"


@pytest.mark.parametrize("text, expected", [
    ("8192", [8192]),
    ("1024,4096", [1024, 4096]),
    ("1024:16384", [1024, 2048, 4096, 8192, 16384]),
    ("1000:5000", [1000, 2000, 4000]),
    ("512, 512,128", [128, 512]),
])
def test_parse_int_sweep(text, expected):
    assert parse_int_sweep(text, what="--seq") == expected


@pytest.mark.parametrize("text, message", [
    ("0", "must be positive"),
    ("-5", "must be positive"),
    ("abc", "not an integer"),
    ("4096:1024", "runs backwards"),
    ("", "no values"),
])
def test_parse_int_sweep_rejects(text, message):
    with pytest.raises(UsageError, match=message):
        parse_int_sweep(text, what="--seq")


def test_one_line_keeps_first_line():
    assert one_line("\n  first\nsecond") == "first"
    assert len(one_line("x" * 1000, limit=50)) == 50


def test_parse_size_sweep():
    from llmbench.core.units import parse_size_sweep, size_label

    assert parse_size_sweep("1KiB:8KiB", what="--sizes") == [1024, 2048, 4096, 8192]
    assert parse_size_sweep("4KiB,1MiB", what="--sizes") == [4096, 2**20]
    assert parse_size_sweep("1KiB:4KiB,1MiB", what="--sizes") == [1024, 2048, 4096, 2**20]
    assert [size_label(n) for n in (1024, 2**26, 2**30, 1020)] == ["1KiB", "64MiB", "1GiB",
                                                                     "1020B"]


@pytest.mark.parametrize("text, message", [
    ("1GiB:1KiB", "runs backwards"),
    ("4MiB,1KiB", "sizes out of order"),
    ("1KiB:4KiB,2KiB", "sizes out of order"),
    ("0", "must be positive"),
    ("lots", "not a size"),
    ("", "no sizes given"),
])
def test_parse_size_sweep_rejects(text, message):
    from llmbench.core.units import parse_size_sweep

    with pytest.raises(UsageError, match=message):
        parse_size_sweep(text, what="--sizes")


@pytest.mark.parametrize("ms, text", [
    (14_420, "14.4 s"), (1_442_000, "1442 s"), (999_700, "1000 s"), (999.7, "1 s"),
    (999.4, "999 ms"), (1.0, "1 ms"), (0.9996, "1 ms"), (0.5, "500 µs"), (None, "-"),
    (float("nan"), "-"),
])
def test_format_ms_stays_in_human_units(ms, text):
    assert format_ms(ms) == text
    assert "e+" not in format_ms(ms)


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (45.9, "45 s"), (60, "1 min 00 s"), (125, "2 min 05 s"), (3600, "1 h 00 min"),
    (3725, "1 h 02 min"), (-3, "0 s"),
])
def test_format_seconds(seconds, text):
    from llmbench.core.units import format_seconds

    assert format_seconds(seconds) == text
