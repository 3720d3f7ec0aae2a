"""The starting policy of the alignment loops, and a cache for trained models.

The reference is the built-in model after a short SFT stage on a 50/50 mix of chosen and
rejected responses, so that it follows the rule about half the time: there is room to move in
both directions. Trained weights are cached under $LLMBENCH_CACHE (default
~/.cache/llmbench), so later commands start at once.

A cached stage must give a run the same result whether it came from the cache or was trained
now. So its key holds everything that shapes the weights (`sft_key`: the data the stage trains
on, the architecture, seed, steps, batch, lr, device, dtype, the torch (and transformers)
release, and a digest of llmbench's code that builds and trains the model), and it runs on its
own random streams (`stage_rng`): seeded from (seed, stage name), and restoring the global ones
when it ends, so that what runs after it draws the same numbers whether it ran or was skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from llmbench.core.cache import cache_dir
from llmbench.models.sizes import build, model_config
from llmbench.models.transformer import Transformer
from llmbench.train.policy import encode, response_logps
from llmbench.train.prefs import Pair, PrefData

CACHE_VERSION = 2  # bump when what a key means changes (2: stage_rng, the keys below)

# llmbench's modules whose code builds or trains the reference: a change to any of them is a
# new key (`code_digest`). The Hugging Face ones count only for an --hf-config.
MODEL_CODE = ("llmbench.models.sizes", "llmbench.models.transformer", "llmbench.kernels",
              "llmbench.kernels.sdpa", "llmbench.train.losses", "llmbench.train.policy",
              "llmbench.train.reference")
HF_CODE = ("llmbench.models.hf", "llmbench.models.hf_model")


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


def stage_seed(seed: int, stage: str) -> int:
    """A stage's own seed: 63 bits of sha256("<stage>-<seed>")."""
    digest = hashlib.sha256(f"{stage}-{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def stage_rng(seed: int, stage: str, device: str) -> Iterator[random.Random]:
    """Run a cacheable stage on its own streams. Inside, torch's global generators (the CPU's,
    and GPU 0's when `device` is cuda: weight initialisation, dropout) are seeded from
    stage_seed(seed, stage), and the stage's own draws come from the random.Random yielded
    (seeded alike). On leaving, torch's generators and Python's `random` are back as they were
    before: the stage draws the same numbers whatever ran or was skipped before it, and what
    runs after it sees the streams it would have seen had the stage come from the cache."""
    s = stage_seed(seed, stage)
    python = random.getstate()
    gpu = [0] if device == "cuda" else []
    with torch.random.fork_rng(devices=gpu, device_type="cuda"):
        torch.default_generator.manual_seed(s)
        if gpu:
            with torch.cuda.device(0):
                torch.cuda.manual_seed(s)
        try:
            yield random.Random(s)
        finally:
            random.setstate(python)


def code_digest(modules: tuple[str, ...]) -> str:
    """sha256 of the source files of `modules` (importable names), 16 hex digits."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name}: no source file to key a cache entry with")
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def pairs_digest(pairs: list[Pair]) -> str:
    """sha256 of the pairs themselves (what a stage trains on, in order), 16 hex digits."""
    h = hashlib.sha256()
    for p in pairs:
        for part in (p.prompt, p.chosen, p.rejected):
            h.update(len(part).to_bytes(4, "little") + part)
    return h.hexdigest()[:16]


def runtime_key(device: str, hf_config: str | None = None) -> dict[str, Any]:
    """What besides the code and the arguments makes a trained model's numbers: the device
    (and which GPU), the torch release, transformers' for an --hf-config."""
    key: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        key["gpu"] = torch.cuda.get_device_name(0)
    if hf_config is not None:
        import transformers

        key["transformers"] = transformers.__version__
    return key


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


def _built_in_overrides(data: PrefData, layers: int | None, attention: str = "sdpa"
                        ) -> dict[str, Any]:
    """The built-in model's widths from its size, but its context fitted to the data, its
    depth `layers` when given, and its attention."""
    return {"max_seq_len": max(64, data.max_len + 8), "attention": attention,
            **({"n_layers": layers} if layers else {})}


def new_policy(size: str, data: PrefData, *, device: str, hf_config: str | None = None,
               layers: int | None = None, attention: str = "sdpa") -> Transformer:
    """The built-in size (its context fitted to the data, `layers` deep when given), or the
    Hugging Face architecture `hf_config` cut to `layers`, with `attention` (llmbench's name),
    initialised from the torch RNG's current state (`sft_reference` seeds it)."""
    where = torch.device("cuda:0" if device == "cuda" else "cpu")
    if hf_config is not None:
        from llmbench.models.hf import load_config
        from llmbench.models.hf_model import build_causal_lm
        from llmbench.train.loop import HF_ATTENTION

        return build_causal_lm(load_config(hf_config, layers=layers), device=where,
                               attention=HF_ATTENTION.get(attention, attention))
    return build(size, **_built_in_overrides(data, layers, attention)).to(where)


def sft_key(data: PrefData, *, size: str, seed: int, steps: int, batch: int, lr: float,
            device: str, hf_config: str | None = None, layers: int | None = None,
            attention: str = "sdpa") -> dict[str, Any]:
    """Everything that shapes `sft_reference`'s weights, as its cache key."""
    key: dict[str, Any] = {
        "stage": "sft", "data": data.fingerprint, "train_pairs": pairs_digest(data.train),
        **model_key(size, hf_config, layers), "seed": seed, "steps": steps, "batch": batch,
        "lr": lr, **runtime_key(device, hf_config),
        "code": code_digest(MODEL_CODE + (HF_CODE if hf_config else ()))}
    if hf_config is None:
        key["arch"] = model_config(size, **_built_in_overrides(data, layers, attention)
                                   ).model_dump()
        key["dtype"] = str(torch.get_default_dtype())
    else:
        key["dtype"] = str(torch.float32)  # models.hf.build's
        if attention != "sdpa":
            key["attention"] = attention
    return key


def sft_reference(data: PrefData, *, size: str, seed: int, steps: int, batch: int, lr: float,
                  device: str, hf_config: str | None = None, layers: int | None = None,
                  attention: str = "sdpa") -> tuple[Transformer, bool]:
    """The reference policy (trained, or from the cache) and whether it was cached. It is built
    and trained on the streams of stage_rng(seed, "sft"), so it is the same model either way
    and the caller's random streams are left as they were."""
    key = sft_key(data, size=size, seed=seed, steps=steps, batch=batch, lr=lr, device=device,
                  hf_config=hf_config, layers=layers, attention=attention)
    with stage_rng(seed, "sft", device) as rng:
        model = new_policy(size, data, device=device, hf_config=hf_config, layers=layers,
                           attention=attention)
        dev = next(model.parameters()).device

        def train() -> dict[str, torch.Tensor]:
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

        state, hit = cached_state("sft", key, train)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)  # trained now or loaded: the same module either way
    return model.train(), hit
