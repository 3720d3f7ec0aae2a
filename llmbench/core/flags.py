"""The flags several benchmarks share, declared once with one meaning each.

A benchmark's config uses these types for its fields, so `--device`, `--seq`, `--model` and the
rest read, default and fail alike in every command (`tests/test_flags.py` checks it across the
registry). Where a benchmark needs a different default text it builds the same option with
`flag_like(...)`, which keeps the meaning and changes only what is shown.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from llmbench.core.declare import Opt

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")  # every --dtype spelling

DEVICE = Opt("Where the cases run: cpu or cuda.",
             default_text="cuda when a usable GPU is present, else cpu")
SEED = Opt("Seed of everything random: inputs, weights, data, sampling.")
SEQ = Opt("Tokens per sequence.", flag="--seq", parse="sweep")
SEQS = Opt("Tokens per sequence: 8192 | 1024,4096 | 1024:16384 (doubling): one case per "
           "length.", flag="--seq", parse="sweep")
BATCH = Opt("Sequences per batch.")
LR = Opt("Peak learning rate.")
MODEL = Opt("Model: a built-in size (tiny, mini, small, base) or a published preset "
            "(llama-3-8b, mistral-7b, ...; `llmbench kvcache --help` lists them).")
IMPLS = Opt("Attention implementation(s) (`llmbench env` lists them and says which run "
            "here).", flag="--impl")
HEADS = Opt("Query heads.")
KV_HEADS = Opt("Key/value heads: 1 is MQA, fewer than --heads GQA.", default_text="--heads")
HEAD_DIM = Opt("Head dimension.")
DTYPE = Opt("Element type.")

Device = Annotated[Literal["cpu", "cuda"] | None, DEVICE]
Seed = Annotated[int, SEED]


def flag_like(opt: Opt, *, help: str | None = None, default_text: str | None = None,  # noqa: A002
              panel: str | None = None) -> Opt:
    """The shared option `opt` with a benchmark's own default text, panel or added words
    (`help` is appended to the shared help, never replaces it)."""
    return replace(opt, help=opt.help + (f" {help}" if help else ""),
                   default_text=default_text if default_text is not None else opt.default_text,
                   panel=panel if panel is not None else opt.panel)
