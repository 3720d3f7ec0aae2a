"""A Hugging Face causal LM behind the built-in model's interface, so that every training
benchmark trains it the same way: `forward(tokens) -> logits` (the loss is taken on the output's
`.logits`), `layers`, `output`, `cfg` (the widths the FLOP and byte counts read) and
`set_checkpointing(segments)`.

Checkpointing: a segment of one decoder layer uses transformers' own activation checkpointing
(`activation_checkpointing_enable`, `gradient_checkpointing_enable` before transformers 5, then
each layer's `gradient_checkpointing` switch picks the layers), with use_reentrant=False as the
built-in model's. transformers checkpoints one layer at a time, so a segment of several layers
(the sqrt policy) runs its layers inside one torch.utils.checkpoint call of llmbench's: the
segment's first layer runs them all, the others pass their input through. The layers of a
segment are called with the first one's arguments (its attention mask): right for the presets,
whose layers all attend alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmbench.models.hf import HFConfig, build


@dataclass(frozen=True)
class Widths:
    """The figures of the built-in ModelConfig that train.traffic reads, for an HF model."""

    dim: int
    n_layers: int
    n_heads: int
    kv_heads: int
    head_size: int
    vocab_size: int
    tie_embeddings: bool


def _decoder_layers(inner: nn.Module) -> nn.ModuleList:
    base = getattr(inner, inner.base_model_prefix)
    layers = getattr(base, "layers", None)
    if layers is None:
        layers = base.h  # Falcon
    return layers


class HFCausalLM(nn.Module):
    """transformers' causal LM (`models.hf.build`), trained through llmbench's loops."""

    def __init__(self, inner: nn.Module, hf: HFConfig) -> None:
        super().__init__()
        self.inner = inner
        self.hf = hf
        self.cfg = Widths(dim=hf.hidden_size, n_layers=hf.num_hidden_layers,
                          n_heads=hf.num_attention_heads, kv_heads=hf.num_key_value_heads,
                          head_size=hf.head_dim, vocab_size=hf.vocab_size,
                          tie_embeddings=hf.tie_word_embeddings)
        self.checkpoint_segments: list[tuple[int, int]] = []
        # transformers 5.x renames past_key_values to cache
        self._cache_arg = "cache" if "cache" in inspect.signature(inner.forward).parameters \
            else "past_key_values"

    @property
    def layers(self) -> nn.ModuleList:
        return _decoder_layers(self.inner)

    @property
    def output(self) -> nn.Module:
        return self.inner.get_output_embeddings()

    def segment_tail(self) -> nn.Linear:
        """The first layer's last projection (the MLP's down projection): what a checkpointed
        segment does not run again (torch's early stop; train.traffic)."""
        mlp = self.layers[0].mlp
        return getattr(mlp, "down_proj", None) or mlp.dense_4h_to_h

    def forward(self, tokens: torch.Tensor, cache: Any = None, start: int = 0) -> torch.Tensor:
        """tokens (batch, seq) -> logits (batch, seq, vocab). With `cache` (`new_cache`), the
        tokens follow the `start` tokens already in it (transformers reads the position from
        the cache) and their keys and values are appended."""
        if cache is None:
            return self.inner(input_ids=tokens, use_cache=False).logits
        if cache.get_seq_length() != start:
            raise ValueError(f"the cache holds {cache.get_seq_length()} tokens, asked to "
                             f"continue at {start}")
        return self.inner(input_ids=tokens, use_cache=True, **{self._cache_arg: cache}).logits

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final normalized hidden states (batch, seq, hidden): what the head reads (and
        what reward and value heads read)."""
        base = getattr(self.inner, self.inner.base_model_prefix)
        return base(input_ids=tokens, use_cache=False).last_hidden_state

    def new_cache(self, batch: int, max_seq: int | None = None, **_: Any) -> Any:
        """An empty transformers DynamicCache (it grows as tokens are appended)."""
        from transformers import DynamicCache

        return DynamicCache()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ checkpointing

    def set_checkpointing(self, segments: Sequence[tuple[int, int]]) -> None:
        """Recompute each [start, end) run of decoder layers in the backward pass; [] turns
        it off. One-layer segments: transformers' own checkpointing; longer ones: one
        torch.utils.checkpoint call per segment (the module docstring)."""
        segs = sorted((int(a), int(b)) for a, b in segments)
        n = len(self.layers)
        for (a, b), nxt in zip(segs, segs[1:] + [(n, 0)], strict=False):
            if not 0 <= a < b <= n or b > nxt[0]:
                raise ValueError(f"checkpoint segments must be disjoint [start, end) ranges "
                                 f"within {n} layers, got {segs}")
        self._reset_checkpointing()
        singles = {a for a, b in segs if b - a == 1}
        if singles:
            self._enable_own()
            for i, layer in enumerate(self.layers):
                layer.gradient_checkpointing = i in singles
        for a, b in segs:
            if b - a > 1:
                self._install_segment(a, b)
        self.checkpoint_segments = segs

    def _enable_own(self) -> None:
        kwargs = {"use_reentrant": False}
        if hasattr(self.inner, "activation_checkpointing_enable"):  # transformers 5
            self.inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _reset_checkpointing(self) -> None:
        if hasattr(self.inner, "activation_checkpointing_disable"):  # transformers 5
            if self.inner.is_activation_checkpointing:
                self.inner.activation_checkpointing_disable()
        elif self.inner.is_gradient_checkpointing:
            self.inner.gradient_checkpointing_disable()
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
            if hasattr(layer, "gradient_checkpointing"):
                layer.gradient_checkpointing = False

    def _install_segment(self, a: int, b: int) -> None:
        run = list(self.layers[a:b])
        returned: dict[str, bool] = {"tuple": False}

        def first(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not (self.training and torch.is_grad_enabled()):
                return _call(run[0], hidden_states, args, kwargs)

            def segment(h: torch.Tensor) -> torch.Tensor:
                for layer in run:
                    out = _call(layer, h, args, kwargs)
                    returned["tuple"] = isinstance(out, tuple)
                    h = out[0] if returned["tuple"] else out
                return h

            h = checkpoint(segment, hidden_states, use_reentrant=False)
            return (h,) if returned["tuple"] else h

        def passed(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return (hidden_states,) if returned["tuple"] else hidden_states

        run[0].forward = first
        for layer, position in zip(run[1:], range(a + 1, b), strict=True):
            layer.forward = _passing(layer, passed, position)


def _call(layer: nn.Module, h: torch.Tensor, args: tuple[Any, ...],
          kwargs: dict[str, Any]) -> Any:
    """The layer's own forward (its class's), whatever instance override is installed."""
    return type(layer).forward(layer, h, *args, **kwargs)


def _passing(layer: nn.Module, passed: Any, position: int) -> Any:
    """A segment's later layer: passes its input through while training with autograd (the
    segment's first layer ran it); runs itself otherwise (evaluation, no_grad)."""

    def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if layer.training and torch.is_grad_enabled():
            return passed(hidden_states)
        return _call(layer, hidden_states, args, kwargs)

    return forward


def build_causal_lm(hf: HFConfig, *, dtype: torch.dtype | None = None, device: Any = "cpu",
                    attention: str = "sdpa") -> HFCausalLM:
    """`hf` built with random weights (the torch RNG's current state), wrapped."""
    return HFCausalLM(build(hf, dtype=dtype, device=device, attention=attention), hf)
