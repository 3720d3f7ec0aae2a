"""The five collectives `llmbench comm` times, with buffers that make each result checkable.

Sizes follow nccl-tests: `nbytes` is the largest buffer of the operation (all_reduce and
broadcast: the tensor; all_gather: the gathered output; reduce_scatter: the input that is
scattered; all_to_all: what each rank sends in all), and every rank's share is nbytes / N.
Inputs hold small integers chosen per rank and per chunk, so after one call every rank can
check its output exactly (up to bf16/fp16 rounding of sums beyond their integer range).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from llmbench.core.units import format_bytes

NAMES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all")

# torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor and warns on the old names.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


CHECK_CHUNK_ELEMENTS = 1 << 20  # compared at a time: the check's scratch stays a few MiB


def _chunks(values: list[float], numel: int, dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
    """A tensor of `numel` elements on `device`: len(values) equal chunks, chunk j filled with
    values[j]. Built in place: no host copy, no wider intermediate."""
    out = torch.empty(numel, dtype=dtype, device=device)
    for part, value in zip(out.chunk(len(values)), values, strict=True):
        part.fill_(value)
    return out


def check_chunks(out: torch.Tensor, expected: list[float], what: str) -> None:
    """Raise unless `out`, cut in len(expected) equal chunks, holds expected[j] in chunk j.

    Compared in the buffer's own dtype, CHECK_CHUNK_ELEMENTS at a time, so the check needs a
    few MiB of scratch whatever the buffer's size (fp16/bf16 sums beyond their integer range
    may round: 1 % relative tolerance there)."""
    per = out.numel() // len(expected)
    low_precision = out.dtype in (torch.float16, torch.bfloat16)
    for j, value in enumerate(expected):
        chunk = out[j * per:(j + 1) * per]
        for start in range(0, per, CHECK_CHUNK_ELEMENTS):
            piece = chunk[start:start + CHECK_CHUNK_ELEMENTS]
            if low_precision:
                bad = ~((piece - value).abs_() <= 1e-2 * abs(value))  # NaN is bad too
            else:
                bad = piece != value
            if bool(bad.any()):
                i = j * per + start + int(bad.nonzero()[0])
                raise RuntimeError(f"wrong {what} result: element {i} is {float(out[i]):g}, "
                                   f"expected {value:g}")
            del bad  # before the next chunk's is made


def prepare(name: str, nbytes: int, dtype: torch.dtype, device: torch.device, rank: int,
            world: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """(op, check): `op()` runs the collective once; `check()`, called after exactly one
    `op()`, raises if this rank's output is wrong."""
    elem = torch.empty((), dtype=dtype).element_size()
    numel = nbytes // elem
    if numel == 0 or numel % world:
        raise ValueError(f"{format_bytes(nbytes)} is not a whole number of {elem}-byte "
                         f"elements per rank for {world} ranks")
    share = numel // world
    peers = list(range(world))
    if name == "all_reduce":
        buf = torch.ones(numel, dtype=dtype, device=device)
        out, expected = buf, [float(world)]

        def op() -> None:
            dist.all_reduce(buf)
    elif name == "all_gather":
        inp = torch.full((share,), float(rank % 7 + 1), dtype=dtype, device=device)
        out = torch.empty(numel, dtype=dtype, device=device)
        expected = [float(j % 7 + 1) for j in peers]

        def op() -> None:
            _all_gather(out, inp)
    elif name == "reduce_scatter":
        inp = _chunks([float(j % 2 + 1) for j in peers], numel, dtype, device)
        out = torch.empty(share, dtype=dtype, device=device)
        expected = [float(world * (rank % 2 + 1))]

        def op() -> None:
            _reduce_scatter(out, inp)
    elif name == "broadcast":
        out = torch.full((numel,), 7.0 if rank == 0 else 0.0, dtype=dtype, device=device)
        expected = [7.0]

        def op() -> None:
            dist.broadcast(out, src=0)
    elif name == "all_to_all":
        inp = _chunks([float((rank * world + j) % 7 + 1) for j in peers], numel, dtype, device)
        out = torch.empty(numel, dtype=dtype, device=device)
        expected = [float((i * world + rank) % 7 + 1) for i in peers]

        def op() -> None:
            dist.all_to_all_single(out, inp)
    else:
        raise ValueError(f"unknown collective {name!r} (choose from {', '.join(NAMES)})")

    def check() -> None:
        check_chunks(out, expected, name)

    return op, check
