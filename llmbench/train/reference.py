"""The starting policy of the alignment loops, and a cache for trained models.

The reference is the built-in model after a short SFT stage on a 50/50 mix of chosen and
rejected responses, so that it follows the rule about half the time: there is room to move in
both directions. Trained weights are cached under $LLMBENCH_CACHE (default
~/.cache/llmbench), keyed by everything that shaped them, so later commands start at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmbench.core.cache import cache_dir
from llmbench.models.sizes import build
from llmbench.models.transformer import Transformer
from llmbench.train.policy import encode, response_logps
from llmbench.train.prefs import PrefData

CACHE_VERSION = 1  # bump when the training code below changes what it produces


def _path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **key}, sort_keys=True)
                            .encode()).hexdigest()[:20]
    return cache_dir() / kind / f"{digest}.pt"


def cached_state(kind: str, key: dict[str, Any],
                 train: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict, bool]:
    """(state dict, True if it came from the cache). Written atomically."""
    path = _path(kind, key)
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except Exception:  # a corrupt or foreign file: train again and overwrite it
            pass
    return save_state(kind, key, train()), False


def save_state(kind: str, key: dict[str, Any], state: dict[str, torch.Tensor]) -> dict:
    state = {k: v.detach().cpu() for k, v in state.items()}
    path = _path(kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return state


def model_key(size: str, hf_config: str | None = None, layers: int | None = None
              ) -> dict[str, Any]:
    """What names a policy's architecture in a cache key: the built-in size, or the Hugging
    Face document itself (a digest of it, as read, at its --layers depth)."""
    if hf_config is None:
        return {"size": size}
    from llmbench.models.hf import load_config

    raw = load_config(hf_config, layers=layers).raw
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]
    return {"size": size, "hf_config": digest}


def new_policy(size: str, data: PrefData, *, seed: int, device: str,
               hf_config: str | None = None, layers: int | None = None) -> Transformer:
    """The built-in size (its context fitted to the data), or the Hugging Face architecture
    `hf_config` cut to `layers`, initialised from `seed`."""
    torch.manual_seed(seed)
    where = torch.device("cuda:0" if device == "cuda" else "cpu")
    if hf_config is not None:
        from llmbench.models.hf import load_config
        from llmbench.models.hf_model import build_causal_lm

        return build_causal_lm(load_config(hf_config, layers=layers), device=where)
    max_len = max(64, data.max_len + 8)
    return build(size, max_seq_len=max_len).to(where)


def sft_reference(data: PrefData, *, size: str, seed: int, steps: int, batch: int, lr: float,
                  device: str, hf_config: str | None = None, layers: int | None = None
                  ) -> tuple[Transformer, bool]:
    """The reference policy (trained, or from the cache) and whether it was cached."""
    model = new_policy(size, data, seed=seed, device=device, hf_config=hf_config,
                       layers=layers)
    dev = next(model.parameters()).device

    def train() -> dict[str, torch.Tensor]:
        rng = random.Random(f"sft-mix-{seed}")
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            picks = [rng.choice(data.train) for _ in range(batch)]
            responses = [p.chosen if rng.random() < 0.5 else p.rejected for p in picks]
            tokens, mask = encode([p.prompt for p in picks], responses, dev)
            loss = -(response_logps(model, tokens, mask) / mask.sum(-1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return model.state_dict()

    key = {"data": data.fingerprint, **model_key(size, hf_config, layers), "seed": seed,
           "steps": steps, "batch": batch, "lr": lr}
    if hf_config is None:
        key["max_seq_len"] = model.cfg.max_seq_len
    state, hit = cached_state("sft", key, train)
    model.load_state_dict(state)
    return model, hit
