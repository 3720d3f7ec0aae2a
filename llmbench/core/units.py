"""Parsing and formatting of sizes, times and dtypes, without importing torch."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from llmbench.core.errors import UsageError

# Bytes per element of the dtypes the CLI accepts.
DTYPE_BYTES: dict[str, int] = {"fp64": 8, "fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

_BYTE_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}


def parse_bytes(text: str) -> int:
    """'80GiB' -> 85899345920, '1.5GB' -> 1500000000, '4096' -> 4096."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _BYTE_UNITS:
        raise UsageError(f"not a size: {text!r} (examples: 4096, 512MiB, 80GiB, 1.5GB)")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])


def format_bytes(n: float | None) -> str:
    """Binary units, three significant figures: 268435456 -> '256 MiB'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(n)} B"
            return f"{sign}{n:.3g} {unit}" if n < 100 else f"{sign}{n:.0f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_ms(ms: float | None) -> str:
    """A time in the tables' units, three significant figures: 14420 -> '14.4 s', 12.345 ->
    '12.3 ms', 0.0123 -> '12.3 µs'; from 1000 s on, whole seconds ('1442 s'). A value that
    rounds up to the next unit is written in it (999.7 ms -> '1 s', not '1e+03 ms')."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    size = abs(ms)
    if size >= 999.5:
        s = ms / 1000
        return f"{s:.3g} s" if abs(s) < 999.5 else f"{s:.0f} s"
    if size >= 0.9995:
        return f"{ms:.3g} ms"
    return f"{ms * 1000:.3g} µs"


def format_seconds(seconds: float) -> str:
    """An elapsed time for a person: '45 s', '2 min 05 s', '1 h 02 min' (whole units, down)."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _sweep_runs(text: str, what: str, parse_one: Callable[[str, str], int]) -> list[list[int]]:
    """Each comma-separated part of `text` as a run of values: 'A:B' doubles from A to B,
    'A' is one value. Values must be positive and a run must not go backwards."""
    runs = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        lo_s, colon, hi_s = part.partition(":")
        lo = parse_one(lo_s, what)
        hi = parse_one(hi_s, what) if colon else lo
        if min(lo, hi) <= 0:
            got = repr(part) if colon else lo
            raise UsageError(f"{what} must be positive, got {got}")
        if hi < lo:
            raise UsageError(f"{what} sweep {part!r} runs backwards: write LOW:HIGH")
        run = [lo]
        while run[-1] * 2 <= hi:
            run.append(run[-1] * 2)
        runs.append(run)
    return runs


def parse_int_sweep(text: str, *, what: str) -> list[int]:
    """'8192' | '1024,2048' | '1024:16384' (doubling) -> sorted unique positive ints."""
    values = [v for run in _sweep_runs(text, what, _int) for v in run]
    if not values:
        raise UsageError(f"{what}: no values given")
    return sorted(set(values))


def parse_size_sweep(text: str, *, what: str) -> list[int]:
    """'1KiB:1GiB' (doubling) | '4KiB,1MiB,64MiB' (smallest first) -> byte counts."""
    values: list[int] = []
    for run in _sweep_runs(text, what, _size):
        if values and run[0] <= values[-1]:
            raise UsageError(f"{what}: sizes out of order ({format_bytes(run[0])} after "
                             f"{format_bytes(values[-1])}); list them from small to large")
        values += run
    if not values:
        raise UsageError(f"{what}: no sizes given")
    return values


def _size(text: str, what: str) -> int:
    try:
        return parse_bytes(text)
    except UsageError as exc:
        raise UsageError(f"{what}: {exc}") from None


def size_label(n: int) -> str:
    """A compact size for case names: 1024 -> '1KiB', 1536 -> '1536B'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def parse_int_list(texts: list[str], *, what: str) -> list[int]:
    """['0,100', '500'] -> [0, 100, 500]: non-negative integers, sorted and unique."""
    values = [_int(v, what) for text in texts for v in str(text).split(",") if v.strip()]
    negative = [v for v in values if v < 0]
    if negative:
        raise UsageError(f"{what} must not be negative, got {negative[0]}")
    if not values:
        raise UsageError(f"{what}: no values given")
    return sorted(set(values))


def parse_int(text: str, what: str) -> int:
    """'42' -> 42; a UsageError naming `what` otherwise."""
    return _int(text, what)


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"{what}: {text.strip()!r} is not an integer") from None
