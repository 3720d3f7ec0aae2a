"""An analytic model of the memory of one training step of a decoder-only transformer.

Pure arithmetic (no torch, no transformers): from the widths of a model (`Arch`), the batch,
the positions, the precision, the attention kernel and the checkpointed segments, it counts

1. per layer, the bytes autograd saves for the backward pass (`layer_activations`), split into
   norms, attention (queries, output, softmax statistics), K/V, the seq x seq scores when they
   are materialized, the MLP, and autocast's low-precision weight copies;
2. the activation memory held after the forward pass for the whole model under a checkpoint
   policy (`activation_memory`): kept segment inputs, un-checkpointed layers, the final norm,
   the log-softmax of the loss (vocab x positions x batch, fp32) and the weight copies;
3. the temporary peak of the step above that (`step_peak`): logits, the loss gradients, one
   recomputed segment, gradients allocated while activations are freed, AdamW's temporaries;
4. what llmbench measures (`predict`): `activation_step`'s held memory and `measure_peak`'s
   step peak (docs/memory-estimate.md derives every formula and compares them with
   measurements).

Every count is what torch's autograd keeps, read from its derivative formulas (a product saves
the operand the other gradient needs, a linear layer its input and weight, softmax and
log-softmax their output, SiLU and GELU their input, RMSNorm's float32 input and reciprocal
root mean square) and checked tensor by tensor with `torch.autograd.graph.saved_tensors_hooks`
on the built-in model and transformers' llama, qwen2, gemma and falcon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FAMILIES = ("llmbench", "llama", "mistral", "qwen2", "gemma", "falcon")
ATTENTIONS = ("flash", "standard")
FP32 = 4  # bytes: RMSNorm's statistics, softmax statistics, the loss's log-probabilities
INDEX = 8  # bytes of an int64 token id

Segments = Sequence[tuple[int, int]]


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Arch:
    """The widths of a decoder-only transformer, and the parts of its layout that change what
    autograd saves. `family`: "llmbench" (the built-in model) or an HF model_type."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    family: str = "llmbench"
    gated_mlp: bool = True  # SwiGLU / GeGLU (3 matrices); False: up, GELU, down (Falcon)
    norm: str = "rmsnorm"  # "rmsnorm" | "layernorm"
    tied_embeddings: bool = True
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    norms_per_layer: int = 2
    parallel_attention: bool = False  # Falcon: attention and MLP read the same normed input

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r} (choose from {', '.join(FAMILIES)})")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"unknown norm {self.norm!r} (rmsnorm or layernorm)")
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads {self.kv_heads} does not divide heads {self.heads}")

    @property
    def q_width(self) -> int:
        """Width of the queries and of the attention output: heads x head_dim."""
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        """Width of the keys (and of the values): kv_heads x head_dim (GQA/MQA: narrower)."""
        return self.kv_heads * self.head_dim

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> Arch:
        """The built-in model's named size (llmbench.models.sizes), with ModelConfig's
        overrides (n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab_size, ...)."""
        from llmbench.models.sizes import SIZES

        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r} (choose from {', '.join(SIZES)})")
        return cls.from_model_config({**SIZES[size], **overrides})

    @classmethod
    def from_model_config(cls, cfg: Any) -> Arch:
        """The built-in ModelConfig (or a dict of its fields), without importing torch. The
        SwiGLU width follows ModelConfig.ffn_dim: 8/3 dim rounded up to `multiple_of`."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        dim, heads = get("dim", 128), get("n_heads", 4)
        ffn = get("hidden_dim")
        if not ffn:
            multiple = get("multiple_of", 32)
            ffn = multiple * math.ceil(int(2 * 4 * dim / 3) / multiple)
        return cls(hidden=dim, intermediate=ffn, layers=get("n_layers", 4), heads=heads,
                   kv_heads=get("n_kv_heads") or heads, head_dim=get("head_dim") or dim // heads,
                   vocab=get("vocab_size", 256), family="llmbench",
                   tied_embeddings=get("tie_embeddings", True))

    @classmethod
    def from_hf(cls, cfg: Any) -> Arch:
        """A checked Hugging Face config (llmbench.models.hf.HFConfig)."""
        falcon = cfg.model_type == "falcon"
        parallel = falcon and bool(cfg.raw.get("parallel_attn", True))
        return cls(hidden=cfg.hidden_size, intermediate=cfg.intermediate_size,
                   layers=cfg.num_hidden_layers, heads=cfg.num_attention_heads,
                   kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
                   vocab=cfg.vocab_size, family=cfg.model_type,
                   gated_mlp=cfg.mlp_matrices == 3,
                   norm="layernorm" if cfg.norm_bias else "rmsnorm",
                   tied_embeddings=cfg.tie_word_embeddings, qkv_bias=cfg.qkv_bias,
                   o_bias=cfg.o_bias, mlp_bias=cfg.mlp_bias,
                   norms_per_layer=cfg.norms_per_layer, parallel_attention=parallel)

    # ---------------------------------------------------------------- parameters

    def layer_weight_params(self) -> int:
        """Elements of one layer's matrices (the tensors autocast casts): Q, K, V, O and the
        MLP's 3 (gated) or 2 matrices."""
        attention = self.hidden * (self.q_width + 2 * self.kv_width) + self.q_width * self.hidden
        return attention + (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    def layer_params(self) -> int:
        """One layer's parameters: matrices, biases and norms (as HFConfig.param_count)."""
        biases = (self.q_width + 2 * self.kv_width) * self.qkv_bias + self.hidden * self.o_bias
        matrices = 3 if self.gated_mlp else 2
        biases += ((matrices - 1) * self.intermediate + self.hidden) * self.mlp_bias
        norm = self.hidden * (2 if self.norm == "layernorm" else 1)
        return self.layer_weight_params() + biases + self.norms_per_layer * norm

    def param_count(self) -> int:
        """All parameters: embedding, layers, final norm, and the head unless tied."""
        norm = self.hidden * (2 if self.norm == "layernorm" else 1)
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * self.layer_params() + norm + head

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The shape of every parameter tensor (biases and norms included; a tied head is the
        embedding, once), as (out, in) for the matrices: what an optimizer keeps state for."""
        h, q, kv, f = self.hidden, self.q_width, self.kv_width, self.intermediate
        norm = [(h,), (h,)] if self.norm == "layernorm" else [(h,)]
        if self.family == "falcon":  # one fused query_key_value projection
            layer = [(q + 2 * kv, h), (h, q)]
            layer += [(q + 2 * kv,)] * self.qkv_bias + [(h,)] * self.o_bias
        else:
            layer = [(q, h), (kv, h), (kv, h), (h, q)]
            layer += [(q,), (kv,), (kv,)] * self.qkv_bias + [(h,)] * self.o_bias
        # biases after their matrices within a kind: the order does not change any count
        layer = [t for t in layer if len(t) == 2] + [(f, h)] * (2 if self.gated_mlp else 1) \
            + [(h, f)] + [t for t in layer if len(t) == 1]
        layer += ([(f,)] * (2 if self.gated_mlp else 1) + [(h,)]) * self.mlp_bias
        layer += norm * self.norms_per_layer
        head = [] if self.tied_embeddings else [(self.vocab, h)]
        return [(self.vocab, h)] + layer * self.layers + norm + head

    def param_tensors(self) -> list[int]:
        """Element counts of every parameter tensor (biases and norms included)."""
        return [math.prod(shape) for shape in self.param_shapes()]

    def largest_param(self) -> int:
        """Elements of the largest single parameter tensor (AdamW's temporaries are its size)."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate,
                   self.hidden * self.q_width)


@dataclass(frozen=True)
class Widths:
    """Bytes per element: parameters (and the residual stream), the matmuls' compute dtype
    (autocast's, or the parameters'), and whether autocast is on."""

    param: int
    compute: int
    autocast: bool

    @property
    def residual(self) -> int:
        """The residual stream keeps the parameters' dtype: under autocast a low-precision
        matmul output added to an fp32 stream promotes to fp32."""
        return self.param


def element_widths(param_dtype: str = "fp32", autocast: str | None = None) -> Widths:
    """Element sizes of a run: parameters of `param_dtype`, matmuls in `autocast` (None: the
    parameters' dtype). torch.autocast casts a matmul's inputs, not the stream around it."""
    for name in (param_dtype, autocast):
        if name is not None and name not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {name!r} (choose from {', '.join(DTYPE_BYTES)})")
    p = DTYPE_BYTES[param_dtype]
    if autocast is None or DTYPE_BYTES[autocast] == p and autocast == param_dtype:
        return Widths(param=p, compute=p, autocast=False)
    return Widths(param=p, compute=DTYPE_BYTES[autocast], autocast=True)


# ------------------------------------------------------------------ one layer


def norm_bytes(arch: Arch, tokens: int, w: Widths, consumers: int) -> int:
    """What one norm and the linear layers reading it save, for `tokens` = batch x positions.

    RMSNorm, llama style (llmbench, llama, mistral, qwen2: `w * (x.float() * rsqrt(mean(x^2)
    + eps)).to(dtype)`): pow/mul save the fp32 input (x itself when fp32, else a copy), rsqrt
    saves its output (one fp32 per token), the product with the weight saves the normalized
    x-hat in the stream's dtype. Gemma multiplies by (1 + w) in fp32: its x-hat is fp32, and
    (1 + w) is saved too.
    LayerNorm (Falcon; native_layer_norm's backward): the input, mean and rstd per token.
    Each linear layer reading the output saves its input (mm's backward for the weight
    gradient): one shared tensor without autocast, one cast copy per linear layer under it
    (autocast caches casts of leaf weights only)."""
    h, r = arch.hidden, w.residual
    out = consumers * w.compute if w.autocast else r
    if arch.norm == "layernorm":
        return tokens * (h * (r + out) + 2 * r)
    if arch.family == "gemma":  # fp32 x-hat, and (1 + w) in fp32 (weight-sized, per norm)
        return tokens * (h * (FP32 + FP32 + out) + FP32) + h * FP32
    return tokens * (h * (FP32 + r + out) + FP32)


def norm_consumers(arch: Arch) -> tuple[int, ...]:
    """How many linear layers read each of a layer's norms: Q, K, V separately (3) or fused
    (Falcon's query_key_value, 1); the MLP's gate and up (2) or up alone (1); Falcon's single
    parallel norm feeds both the fused QKV and the MLP's up projection."""
    qkv = 1 if arch.family == "falcon" else 3
    up = 2 if arch.gated_mlp else 1
    if arch.parallel_attention and arch.norms_per_layer == 1:
        return (qkv + up,)
    return (qkv, up)


@dataclass(frozen=True)
class AttentionBytes:
    attention: int  # queries, output, softmax statistics, RoPE table casts
    kv: int  # keys and values as saved (GQA-narrow with flash, expanded copies otherwise)
    scores: int  # the seq x seq probabilities (and mask) when materialized


def attention_bytes(arch: Arch, batch: int, positions: int, w: Widths,
                    attention: str = "flash") -> AttentionBytes:
    """What one attention block saves, without its norm.

    flash (SDPA's fused CPU kernel, `_scaled_dot_product_flash_attention_for_cpu`): Q, K, V
    (K and V at kv_heads width: no repeat) and the output, in the compute dtype, and the fp32
    logsumexp per query head and position. The output projection's input is a view of the
    output (no second copy). The built-in model casts its fp32 RoPE tables to the compute
    dtype in each apply_rope (4 seq x head_dim copies per layer, none in fp32).

    standard, built-in (`llmbench.kernels.standard`): matmul saves (Q * scale) and K^T and V
    expanded to the query heads (reshaped copies for bmm), softmax its output (compute dtype),
    the boolean seq x seq mask once per layer; the output projection reads a reshaped copy.

    standard, HF (attn_implementation="eager"): Q, repeat_kv's expanded K and V, softmax's fp32
    probabilities plus their cast copy when the compute dtype is narrower, the transposed
    output copy.

    Falcon, either way on the CPU: its attention reaches SDPA's math backend (an explicit mask),
    which computes in fp32 whatever the dtype: fp32 Q, expanded K and V, and probabilities."""
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r} (choose from {', '.join(ATTENTIONS)})")
    tokens = batch * positions
    c, q, kv = w.compute, arch.q_width, arch.kv_width
    score_elems = batch * arch.heads * positions * positions
    lse = tokens * arch.heads * FP32
    if arch.family == "falcon":
        return AttentionBytes(attention=tokens * q * (FP32 + c), kv=2 * tokens * q * FP32,
                              scores=score_elems * FP32)
    if attention == "flash":
        rope = 4 * positions * arch.head_dim * c if arch.family == "llmbench" and c != FP32 else 0
        return AttentionBytes(attention=2 * tokens * q * c + lse + rope,
                              kv=2 * tokens * kv * c, scores=0)
    if arch.family == "llmbench":
        rope = 4 * positions * arch.head_dim * c if c != FP32 else 0
        return AttentionBytes(attention=2 * tokens * q * c + rope, kv=2 * tokens * q * c,
                              scores=score_elems * c + positions * positions)
    probs = FP32 + (c if c != FP32 else 0)
    return AttentionBytes(attention=2 * tokens * q * c, kv=2 * tokens * q * c,
                          scores=score_elems * probs)


def mlp_bytes(arch: Arch, tokens: int, w: Widths) -> int:
    """The MLP's saved intermediates, compute dtype, intermediate width (the input is the
    norm's). Gated, w2(act(w1 x) * w3 x): the gate w1 x (the activation's input), act(w1 x)
    and w3 x (the product's two operands) and the product (w2's input): 4 tensors. Falcon's
    up, GELU, down: up's output (GELU's input) and GELU's output (down's input): 2."""
    return (4 if arch.gated_mlp else 2) * tokens * arch.intermediate * w.compute


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one layer saves for the backward pass, without recomputation."""

    norms: int
    attention: int
    kv: int
    scores: int
    mlp: int
    weight_copies: int  # autocast's casts of the layer's matrices (saved by mm's backward)

    @property
    def total(self) -> int:
        return (self.norms + self.attention + self.kv + self.scores + self.mlp
                + self.weight_copies)


def layer_activations(arch: Arch, *, batch: int, positions: int, param_dtype: str = "fp32",
                      autocast: str | None = None, attention: str = "flash") -> LayerActivations:
    """What one decoder layer saves for its backward pass (docs/memory-estimate.md, "One
    layer"). Its input counts in its first norm (the fp32 input RMSNorm saves)."""
    w = element_widths(param_dtype, autocast)
    tokens = batch * positions
    att = attention_bytes(arch, batch, positions, w, attention)
    return LayerActivations(
        norms=sum(norm_bytes(arch, tokens, w, n) for n in norm_consumers(arch)),
        attention=att.attention, kv=att.kv, scores=att.scores,
        mlp=mlp_bytes(arch, tokens, w),
        weight_copies=arch.layer_weight_params() * w.compute if w.autocast else 0)


def korthikanti_layer_bytes(hidden: int, heads: int, batch: int, positions: int) -> int:
    """Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    section 4.1: a GPT layer keeps s*b*h*(34 + 5*a*s/h) bytes (fp16, a 4h GELU MLP, dropout
    masks of 1 byte, no tensor or sequence parallelism): 11sbh attention + 5as^2b scores,
    19sbh MLP, 4sbh the two LayerNorms."""
    return positions * batch * (34 * hidden + 5 * heads * positions)


# ------------------------------------------------------------------ the whole model


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes held after the forward pass (what autograd keeps until the backward pass)."""

    layers: int  # un-checkpointed layers' saved tensors (weight copies apart)
    kept_inputs: int  # each checkpointed segment's input
    head: int  # final norm, log-softmax output (fp32), targets
    weight_copies: int  # autocast's weight casts kept by un-checkpointed layers and the head
    other: int  # tokens, HF's RoPE tables

    @property
    def total(self) -> int:
        return self.layers + self.kept_inputs + self.head + self.weight_copies + self.other


def checkpointed_layers(segments: Segments) -> set[int]:
    return {i for a, b in segments for i in range(a, b)}


def head_bytes(arch: Arch, batch: int, positions: int, w: Widths) -> int:
    """The final norm (read by the output layer), the loss's saved tensors: cross_entropy =
    nll_loss(log_softmax(logits.float())) saves the fp32 log-probabilities (vocab x positions x
    batch) and the int64 targets (a copy: tokens[:, 1:] is not contiguous)."""
    tokens = batch * positions
    return norm_bytes(arch, tokens, w, 1) + tokens * (arch.vocab * FP32 + INDEX)


def other_bytes(arch: Arch, batch: int, positions: int, w: Widths) -> int:
    """Transformers' rotary tables: cos and sin (positions x head_dim) computed once per
    forward in the hidden states' dtype and saved by every layer's RoPE products."""
    if arch.family == "llmbench":
        return 0
    return 2 * positions * arch.head_dim * w.residual


def activation_memory(arch: Arch, *, batch: int, positions: int, param_dtype: str = "fp32",
                      autocast: str | None = None, attention: str = "flash",
                      segments: Segments = ()) -> ActivationMemory:
    """The activation memory after the forward pass under a checkpoint policy: a checkpointed
    segment keeps its input (residual dtype) and nothing inside; other layers keep
    `layer_activations`. Autocast's weight casts live from forward to backward only where
    saved (un-checkpointed layers, the output layer): the autocast cache is cleared on exit."""
    w = element_widths(param_dtype, autocast)
    layer = layer_activations(arch, batch=batch, positions=positions, param_dtype=param_dtype,
                              autocast=autocast, attention=attention)
    inside = checkpointed_layers(segments)
    full = arch.layers - len(inside & set(range(arch.layers)))
    head_copy = arch.vocab * arch.hidden * w.compute if w.autocast else 0
    return ActivationMemory(
        layers=full * (layer.total - layer.weight_copies),
        kept_inputs=len(segments) * batch * positions * arch.hidden * w.residual,
        head=head_bytes(arch, batch, positions, w),
        weight_copies=full * layer.weight_copies + head_copy,
        other=other_bytes(arch, batch, positions, w))


# ------------------------------------------------------------------ the step's peak


def param_bytes(arch: Arch, param_dtype: str = "fp32") -> int:
    return arch.param_count() * DTYPE_BYTES[param_dtype]


def gradient_bytes(arch: Arch, param_dtype: str = "fp32") -> int:
    """Gradients have the parameters' dtype (autocast's casts accumulate into them)."""
    return param_bytes(arch, param_dtype)


def adamw_state_bytes(arch: Arch, param_dtype: str = "fp32") -> int:
    """torch.optim.AdamW: exp_avg and exp_avg_sq, each like its parameter."""
    return 2 * param_bytes(arch, param_dtype)


MMAP_THRESHOLD_MAX = 32 << 20  # glibc: a block this large is always its own mmap


def returned_on_free(arch: Arch, param_dtype: str = "fp32") -> int:
    """Gradient bytes whose freeing lowers the resident set: glibc serves blocks of at least
    32 MiB (its largest dynamic mmap threshold) by mmap and unmaps them on free; smaller
    gradients live in malloc's heap, whose freed pages stay resident until malloc_trim."""
    p = DTYPE_BYTES[param_dtype]
    return sum(n * p for n in arch.param_tensors() if n * p >= MMAP_THRESHOLD_MAX)


@dataclass(frozen=True)
class StepPeak:
    """Levels of the step's resident memory above the state before it (weights, gradients of
    the previous step, AdamW's states), in bytes."""

    forward: int  # end of forward: activations + logits (+ their fp32 copy)
    loss_backward: int  # the log-softmax's gradient and nll's gradient over the activations
    head_backward: int  # logits' gradient, the output layer's weight gradient
    layers_backward: int  # the highest point while walking the layers back (recomputation)
    optimizer: int  # AdamW's single-tensor temporaries over the full gradients
    slack: int  # freed heap pages not reused within the step: one layer's activations

    @property
    def peak(self) -> int:
        return max(0, max(self.forward, self.loss_backward, self.head_backward,
                          self.layers_backward) + self.slack, self.optimizer)


def step_peak(arch: Arch, *, batch: int, positions: int, param_dtype: str = "fp32",
              autocast: str | None = None, attention: str = "flash",
              segments: Segments = (), allocator: str = "rss",
              grad_fraction: float = 1.0) -> StepPeak:
    """The step's levels above the resident state before it (docs/memory-estimate.md, "Step
    peak").

    `zero_grad(set_to_none=True)` lowers the resident set by the large gradients only
    (`returned_on_free`). Forward: activations A plus the logits (compute dtype) and, when
    narrower, their fp32 copy. Loss backward: nll's gradient and log-softmax's gradient
    (fp32 vocab x tokens each) over A. Head: the logits' gradient and the output layer's
    weight gradient (under autocast a compute-dtype gradient cast into the fp32 one). Layers,
    last to first: the activations still held plus the gradients allocated so far, plus the
    layer being walked back (a checkpointed segment: its recomputed internals) and its
    gradient temporaries (3 tokens x intermediate and 2 tokens x hidden). AdamW (single-tensor
    on the CPU): two temporaries of the largest parameter over the full gradients. `slack`:
    measured, freed heap pages the step does not reuse come to about one layer's activations
    (an allocator effect, not a tensor).

    `allocator`: "rss" is this model of the resident set (what llmbench measures on a CPU);
    "tensors" counts live tensors only, as a GPU's caching allocator reports its allocated
    bytes: every gradient freed by zero_grad lowers the level, and no slack.
    `grad_fraction`: the share of the gradients a GPU keeps (1 / GPUs under ZeRO stage 2 and
    3, which reduce-scatter them as the backward produces them)."""
    if allocator not in ("rss", "tensors"):
        raise ValueError(f"unknown allocator {allocator!r} (rss or tensors)")
    w = element_widths(param_dtype, autocast)
    p, c = w.param, w.compute
    p_grad = p * grad_fraction
    tokens = batch * positions
    act = activation_memory(arch, batch=batch, positions=positions, param_dtype=param_dtype,
                            autocast=autocast, attention=attention, segments=segments)
    layer = layer_activations(arch, batch=batch, positions=positions, param_dtype=param_dtype,
                              autocast=autocast, attention=attention)
    freed = (returned_on_free(arch, param_dtype) if allocator == "rss"
             else gradient_bytes(arch, param_dtype) * grad_fraction)
    a = act.total - freed
    logits = tokens * arch.vocab
    # autocast caches every weight it casts until its context exits (after the loss): the
    # casts of checkpointed layers, saved by nothing, are alive until then too
    inside = checkpointed_layers(segments) & set(range(arch.layers))
    cached = len(inside) * layer.weight_copies
    forward = a + cached + logits * c + (logits * FP32 if c != FP32 else 0)
    loss = a + 2 * logits * FP32
    head_grad = arch.vocab * arch.hidden * p_grad
    head_tmp = arch.vocab * arch.hidden * c if w.autocast else 0
    head = a - logits * FP32 + logits * c + head_grad + head_tmp
    level = a - act.head + head_grad - head_tmp
    layer_grad = arch.layer_params() * p_grad
    transient = tokens * (3 * arch.intermediate + 2 * arch.hidden) * c
    ends = {e: s for s, e in segments}
    highest = level
    i = arch.layers
    while i > 0:
        if i in ends:  # a checkpointed segment [s, i): recompute, then walk it back
            n = i - ends[i]
            highest = max(highest, level + n * layer.total + transient)
            level += n * layer_grad - tokens * arch.hidden * w.residual
            i = ends[i]
        else:
            highest = max(highest, level + transient)
            level += layer_grad - layer.total
            i -= 1
    embedding_grad = arch.vocab * arch.hidden * p_grad
    highest = max(highest, level + embedding_grad)
    optimizer = (gradient_bytes(arch, param_dtype) * grad_fraction - freed
                 + 2 * arch.largest_param() * p)
    return StepPeak(forward=forward, loss_backward=loss, head_backward=head,
                    layers_backward=highest, optimizer=optimizer,
                    slack=layer.total - layer.weight_copies if allocator == "rss" else 0)


# ------------------------------------------------------------------ what llmbench measures


@dataclass(frozen=True)
class Prediction:
    """What `llmbench.train.loop.activation_step` and `measure_peak(train_step)` read."""

    activation_bytes: int
    step_peak_bytes: int
    activations: ActivationMemory
    peak: StepPeak
    layer: LayerActivations
    positions: int


def segments_for(policy: str, layers: int, every: int = 2) -> list[tuple[int, int]]:
    """The checkpoint policy's segments (llmbench.train.checkpointing, torch-free)."""
    from llmbench.train.checkpointing import segments

    return segments(policy, layers, every)


def predict(arch: Arch, *, batch: int, seq: int, param_dtype: str = "fp32",
            autocast: str | None = None, attention: str = "flash",
            segments: Segments | None = None, policy: str = "none",
            every: int = 2, allocator: str = "rss") -> Prediction:
    """What llmbench measures for a batch of `seq` tokens per row: lm_loss reads
    tokens[:, :-1], so the model sees seq - 1 positions. `segments` (default: those of
    `policy`) are the checkpointed [start, end) layer ranges."""
    if seq < 2:
        raise ValueError(f"seq must be at least 2 (got {seq})")
    segs = segments_for(policy, arch.layers, every) if segments is None else list(segments)
    positions = seq - 1
    kw = dict(batch=batch, positions=positions, param_dtype=param_dtype, autocast=autocast,
              attention=attention)
    act = activation_memory(arch, segments=segs, **kw)
    peak = step_peak(arch, segments=segs, allocator=allocator, **kw)
    return Prediction(activation_bytes=act.total, step_peak_bytes=peak.peak, activations=act,
                      peak=peak, layer=layer_activations(arch, **kw), positions=positions)
