"""Child-side helpers: turn a case payload into a model, data and clocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llmbench.core.timing import TimingPolicy
from llmbench.train.data import synthetic_batches
from llmbench.train.loop import build_model, device_of


@dataclass
class CaseSetup:
    params: dict[str, Any]
    device: str
    model: torch.nn.Module
    batches: list[torch.Tensor]
    timing: TimingPolicy
    lr: float

    @property
    def tokens_per_step(self) -> int:
        return self.params["batch"] * self.params["seq"]


def model_of(params: dict[str, Any], seed: int, **model_overrides: Any) -> torch.nn.Module:
    """The model a case's params name (benches.training.case_params), built from `seed`."""
    return build_model(params["model"], seed=seed, device=params["device"],
                       hf_config=params.get("hf_config"), layers=params.get("layers"),
                       dtype=params.get("param_dtype") or "fp32",
                       attention=params.get("attention") or "sdpa", **model_overrides)


def setup(payload: dict[str, Any], *, batches: int = 1, seed_offset: int = 0,
          **model_overrides: Any) -> CaseSetup:
    p = payload["params"]
    device = p["device"]
    model = model_of(p, payload["seed"], **model_overrides)
    data = [b.to(device_of(device)) for b in synthetic_batches(
        vocab=model.cfg.vocab_size, batch=p["batch"], seq=p["seq"], count=batches,
        seed=payload["seed"] + 1 + seed_offset)]
    return CaseSetup(params=p, device=device, model=model, batches=data,
                     timing=TimingPolicy(**payload["timing"]), lr=payload["lr"])
