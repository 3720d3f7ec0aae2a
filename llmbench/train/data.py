"""A synthetic language-modelling task the built-in model can learn in a few dozen steps.

Each sequence is an arithmetic progression modulo the vocabulary: a random start and a random
stride in 1..7. After two tokens the rest is predictable, so the loss falls from ln(vocab)
towards zero and a difference between two training runs shows in it.
"""

from __future__ import annotations

import torch


def synthetic_batches(*, vocab: int, batch: int, seq: int, count: int,
                      seed: int) -> list[torch.Tensor]:
    """`count` batches of (batch, seq + 1) int64 tokens (inputs and shifted targets)."""
    g = torch.Generator().manual_seed(seed)
    positions = torch.arange(seq + 1)
    out = []
    for _ in range(count):
        start = torch.randint(0, vocab, (batch, 1), generator=g)
        stride = torch.randint(1, 8, (batch, 1), generator=g)
        out.append((start + stride * positions) % vocab)
    return out
