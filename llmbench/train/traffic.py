"""A training step's FLOPs and the bytes it must move: the roofline's inputs (core.roofline)
for amp, checkpoint, accum and optim, computed from the model in the case's process.

FLOPs, the convention of Kaplan et al. 2020 and Narayanan et al. 2021 ("6N" per token): a
forward pass is 2 FLOPs per weight of every matrix multiply (the blocks' projections and MLP,
the output head) per token, plus the attention core, 4 * batch * heads * head_dim * pairs per
layer with causal pairs counted as seq^2 / 2; the backward pass is twice the forward for the
matrix multiplies and 2.5x for the attention core (a fused kernel's backward recomputes the
scores): the convention of flash-attention's benchmarks, which `llmbench attention` follows
(kernels.problem), whatever attention the model runs. Checkpointed layers run their forward
once more, but for the last down-projection of each segment (`step_flops`). Element-wise work
(norms, activations, the optimizer's update) is not counted, as in MFU.

Bytes, a lower bound, caches assumed to keep nothing between passes: the forward reads every
weight, the backward reads them again and writes the gradients (a later micro-batch reads and
writes them again to accumulate), the activations saved for the backward are written once and
read once (their measured size; with checkpointing, the size without it, since the recomputed
layers save theirs again), a recomputed layer reads its weights once more, and the optimizer
reads the weights, gradients and states and writes the weights and states. A lower bound of
the kind a fused kernel reaches: torch's eager element-wise ops (an optimizer's single-tensor
update, norms, activations) make extra passes over their tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmbench.kernels.problem import attended_pairs, mode_flops, pairs_flops


def _matmul_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def layer_forward_flops(model: Any, batch: int, seq: int) -> float:
    """One block's forward over sequences of `seq` tokens (seq - 1 positions, as step_flops):
    its matrix multiplies and its attention core."""
    cfg = model.cfg
    seq -= 1
    core = pairs_flops(attended_pairs(seq, causal=True), heads=cfg.n_heads,
                       head_dim=cfg.head_size, batch=batch)
    return 2.0 * _matmul_weights(model.layers[0]) * batch * seq + core


def step_flops(model: Any, batch: int, seq: int, *, recomputed_layers: int = 0,
               segments: int = 0) -> float:
    """FLOPs of one training step over `batch` sequences of `seq` tokens (however it is split
    into micro-batches). The model reads seq - 1 of them: the last is only a target
    (train.loop.lm_loss). `recomputed_layers` in `segments` checkpointed segments: torch's
    non-reentrant checkpoint stops recomputing once every saved tensor is back (its early
    stop), so the last down-projection of each segment, whose output nothing saved, does not
    run again."""
    cfg = model.cfg
    seq -= 1
    tokens = batch * seq
    core = pairs_flops(attended_pairs(seq, causal=True), heads=cfg.n_heads,
                       head_dim=cfg.head_size, batch=batch)
    core_step = mode_flops(core, "fwd+bwd")  # as `llmbench attention` counts it, any impl
    matmul = 2.0 * (_matmul_weights(model.layers[0]) * cfg.n_layers
                    + _matmul_weights(model.output)) * tokens
    return (3.0 * matmul + cfg.n_layers * core_step
            + recomputed_layers * layer_forward_flops(model, batch, seq + 1)
            - segments * 2.0 * model.segment_tail().weight.numel() * tokens)


def _hf_attention(module: nn.Module) -> bool:
    """A transformers decoder's attention module (LlamaAttention, Qwen2Attention, ...)."""
    return (type(module).__module__.startswith("transformers.")
            and type(module).__name__.endswith("Attention") and hasattr(module, "head_dim")
            and hasattr(getattr(module, "config", None), "num_attention_heads"))


def optimizer_bytes(params: list[torch.Tensor], state_bytes: int) -> int:
    """The optimizer's step: reads weights, gradients and states, writes weights and states."""
    weights = _bytes(params)
    grads = _bytes(p.grad for p in params if p.grad is not None) or weights
    return 2 * weights + grads + 2 * state_bytes


def step_bytes(model: Any, state_bytes: int, activation_bytes: int, *, micro_batches: int = 1,
               recomputed_layers: int = 0, segments: int = 0) -> int:
    """Bytes one training step must move (the module's lower bound). `activation_bytes`: what
    the forward passes save for the backward, recomputation included (with checkpointing, the
    activations of the model without it: the recomputed layers save them again)."""
    params = [p for p in model.parameters() if p.requires_grad]
    weights = _bytes(params)
    grads = weights  # a gradient per weight, in its dtype
    recompute = (recomputed_layers * _bytes(model.layers[0].parameters())
                 - segments * _bytes(model.segment_tail().parameters()))  # see step_flops
    per_micro = 2 * weights + 2 * activation_bytes + recompute
    accumulate = grads + 2 * grads * (micro_batches - 1)
    return micro_batches * per_micro + accumulate + optimizer_bytes(params, state_bytes)


def step_figures(model: Any, optimizer: Any, batch: int, seq: int, activation_bytes: int, *,
                 micro_batches: int = 1, recomputed_layers: int = 0,
                 segments: int = 0) -> dict[str, Any]:
    """The case metrics a training benchmark reports for the roofline."""
    from llmbench.train.optimizers import measured_state_bytes

    params = [p for g in optimizer.param_groups for p in g["params"]]
    state, _ = measured_state_bytes(optimizer, params)
    return {"flops_per_step": step_flops(model, batch, seq, segments=segments,
                                         recomputed_layers=recomputed_layers),
            "bytes_moved": step_bytes(model, state, activation_bytes,
                                      micro_batches=micro_batches, segments=segments,
                                      recomputed_layers=recomputed_layers)}


class Tally:
    """FLOPs and bytes of every pass the models make while it is active (the built-in model
    and transformers' through models.hf_model), counted as
    they happen: for loops whose steps mix several models and phases (the alignment methods:
    a policy and a reference, generation with a KV cache, value and reward heads).

    Every linear layer counts 2 FLOPs per weight per token and reads its weights; every
    attention module counts its core against the keys it sees (the cache's too, when decoding:
    4 * batch * heads * head_dim * pairs, causal, bottom-right aligned) and the cache's keys
    and values it reads. A forward under autograd is counted with its backward, by the
    convention of the module's docstring (matrix multiplies 3x, the core 3.5x; the weights
    read again, their gradients written); a forward inside a backward is a checkpointed
    layer's recomputation, a forward only (counted per layer that ran: torch's early stop
    skips the end of a segment). Every optimizer step adds its reads and writes
    (`optimizer_bytes`). Norm weights and the activations a forward saves are not counted (the
    activations' size is not measured in these loops), so the bytes are a looser lower bound
    than `step_bytes`'s."""

    def __init__(self) -> None:
        self.flops = 0.0
        self.bytes = 0
        self._handles: list[Any] = []

    def __enter__(self) -> Tally:
        from torch.nn.modules import module as nn_module
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handles = [nn_module.register_module_forward_hook(self._post, with_kwargs=True),
                         register_optimizer_step_post_hook(self._optimizer_step)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _post(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              output: Any) -> None:
        from llmbench.models.transformer import Attention

        if isinstance(module, nn.Linear):
            tokens = args[0].numel() // module.in_features
            self._count(2.0 * module.weight.numel() * tokens, 0.0,
                        _bytes(module.parameters()), module)
        elif isinstance(module, Attention):
            # Attention.forward(x, cos, sin, cache=None, layer=0, start=0), by position or name
            bound = dict(zip(("x", "cos", "sin", "cache", "layer", "start"), args,
                             strict=False)) | kwargs
            batch, new = bound["x"].shape[:2]
            start = int(bound.get("start", 0))
            core = pairs_flops(attended_pairs(new, causal=True, seq_k=start + new),
                               heads=module.n_heads, head_dim=module.head_dim, batch=batch)
            cache = 0
            if bound.get("cache") is not None:  # its keys and values read, the new ones written
                elem = module.wq.weight.element_size()
                cache = 2 * batch * module.kv_heads * module.head_dim * (start + new) * elem
            self._count(0.0, core, cache, module, weights=False)
        elif _hf_attention(module):
            self._hf_attention(module, args, kwargs)

    def _hf_attention(self, module: nn.Module, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> None:
        """A transformers attention module (models.hf_model), as the built-in one: called
        with hidden_states and, when decoding, a cache already holding the new keys."""
        hidden = args[0] if args else kwargs["hidden_states"]
        batch, new = hidden.shape[:2]
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        seq_k = cache.get_seq_length(module.layer_idx) if cache is not None else new
        config = module.config
        core = pairs_flops(attended_pairs(new, causal=True, seq_k=seq_k),
                           heads=config.num_attention_heads, head_dim=module.head_dim,
                           batch=batch)
        read = 0
        if cache is not None:
            kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            read = 2 * batch * kv * module.head_dim * seq_k * hidden.element_size()
        self._count(0.0, core, read, module, weights=False)

    def _count(self, matmul: float, core: float, read: int, module: nn.Module, *,
               weights: bool = True) -> None:
        # A forward inside a backward is a checkpointed layer's recomputation: a forward only.
        recomputing = torch._C._current_graph_task_id() != -1
        trained = [p for p in module.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and not recomputing and trained:
            self.flops += 3.0 * matmul + mode_flops(core, "fwd+bwd")
            # the backward reads the weights again and writes their gradients
            self.bytes += read + ((read + _bytes(trained)) if weights else 0)
        else:
            self.flops += matmul + core
            self.bytes += read

    def _optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        from llmbench.train.optimizers import measured_state_bytes

        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.bytes += optimizer_bytes(params, measured_state_bytes(optimizer, params)[0])

    def per_step(self, steps: int) -> dict[str, Any]:
        """The case metrics: the totals over `steps` steps, per step."""
        if steps <= 0:
            return {}
        return {"flops_per_step": self.flops / steps, "bytes_moved": self.bytes // steps}
