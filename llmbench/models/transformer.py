"""One compact decoder-only transformer, the model every training benchmark uses.

Llama-style: token embedding, RoPE (rotate-half convention), pre-norm RMSNorm, SwiGLU MLP, no
biases, optional weight tying. Attention has `n_heads` query heads and `n_kv_heads` key/value
heads (MHA when equal, MQA when 1, GQA between) and runs through any implementation of
`llmbench.kernels` ("sdpa" lets torch pick its backend). Decoding uses a preallocated KV cache;
prefill, chunked prefill and one-token decoding all call the configured implementation with its
bottom-right aligned causal mask. Training can checkpoint activations per segment of layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmbench import kernels


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vocab_size: int = Field(256, gt=0)
    dim: int = Field(128, gt=0, description="width of the residual stream")
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="None: n_heads (MHA)")
    head_dim: int | None = Field(None, gt=0, description="None: dim // n_heads")
    hidden_dim: int | None = Field(None, gt=0, description="SwiGLU width; None: ~8/3 dim")
    multiple_of: int = Field(32, gt=0, description="round the SwiGLU width up to this")
    max_seq_len: int = Field(2048, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    tie_embeddings: bool = True
    attention: str = Field("sdpa", description="an implementation name from llmbench.kernels")

    @field_validator("n_kv_heads")
    @classmethod
    def _divides(cls, v: int | None, info: ValidationInfo) -> int | None:
        heads = info.data.get("n_heads")
        if v is not None and heads and heads % v:
            raise ValueError(f"n_kv_heads {v} does not divide n_heads {heads}")
        return v

    @field_validator("attention")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in kernels.IMPLS:
            raise ValueError(f"unknown attention {v!r} (choose from {', '.join(kernels.IMPLS)})")
        return v

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim:
            return self.hidden_dim
        hidden = int(2 * 4 * self.dim / 3)  # SwiGLU keeps the 4x MLP's parameter count
        return self.multiple_of * math.ceil(hidden / self.multiple_of)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) \
            * self.weight


def rope_tables(seq: int, head_dim: int, theta: float,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq, head_dim): frequency theta^(-2i/d) for the pair (i, i + d/2)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq, device=device).float(), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, head_dim); cos/sin: (seq, head_dim). Rotate-half convention."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    return x * cos + rotated * sin


class KVCache:
    """Preallocated keys and values per layer: (batch, kv_heads, max_seq, head_dim) each.

    Its size is exactly 2 * layers * kv_heads * head_dim * max_seq * batch * bytes per element.
    """

    def __init__(self, n_layers: int, batch: int, kv_heads: int, max_seq: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None) -> None:
        shape = (batch, kv_heads, max_seq, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.max_seq = max_seq
        self.length = 0  # tokens written so far (the longest prefix filled)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (batch, kv_heads, n, head_dim) at positions start..start+n; return the
        cache up to start+n."""
        end = start + k.shape[2]
        if end > self.max_seq:
            raise ValueError(f"KV cache holds {self.max_seq} positions, asked for {end}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        if layer == len(self.k) - 1:
            self.length = max(self.length, end)
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    @property
    def nbytes(self) -> int:
        """Bytes held by the cache's tensors, counted from the tensors themselves."""
        return sum(t.untyped_storage().nbytes() for t in self.k + self.v)

    @staticmethod
    def analytic_bytes(*, layers: int, kv_heads: int, head_dim: int, seq: int, batch: int,
                       bytes_per_element: int) -> int:
        return 2 * layers * kv_heads * head_dim * seq * batch * bytes_per_element


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_size
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, self.kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, self.kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * self.head_dim, cfg.dim, bias=False)
        self.impl = kernels.get(cfg.attention)
        self.fn = self.impl.load()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, start: int = 0) -> torch.Tensor:
        b, s, _ = x.shape
        q = apply_rope(self.wq(x).view(b, s, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(b, s, self.kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(b, s, self.kv_heads, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (batch, heads, seq, head_dim)
        if cache is not None:
            k, v = cache.update(layer, k, v, start)
        out = self._attend(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(b, s, -1))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The configured implementation, causal, in its own layout, whatever the shape: a full
        block (s_q == s_k), one new token against the cache, or a chunk after cached tokens.
        Every implementation aligns the causal mask bottom-right: query i, at absolute position
        i + s_k - s_q (start + i), sees keys 0..start + i."""
        if self.impl.layout == "bshd":
            out = self.fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
            return out.transpose(1, 2)
        return self.fn(q, k, v, causal=True)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0, start: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, start)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.max_seq_len, cfg.head_size, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.checkpoint_segments: list[tuple[int, int]] = []
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):  # GPT-2: scale residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ running

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None,
                start: int = 0) -> torch.Tensor:
        """tokens (batch, seq) -> logits (batch, seq, vocab). With `cache`, the tokens are at
        positions start..start+seq and their keys/values are written into it."""
        return self.output(self.features(tokens, cache, start))

    def features(self, tokens: torch.Tensor, cache: KVCache | None = None,
                 start: int = 0) -> torch.Tensor:
        """The final normalized hidden states (batch, seq, dim), what the output layer reads
        (and what reward and value heads read)."""
        s = tokens.shape[1]
        if start + s > self.cfg.max_seq_len:
            raise ValueError(f"positions up to {start + s} exceed max_seq_len "
                             f"{self.cfg.max_seq_len}")
        cos, sin = self.rope_cos[start:start + s], self.rope_sin[start:start + s]
        h = self.tok_embeddings(tokens)
        if cache is None and self.checkpoint_segments and torch.is_grad_enabled():
            h = self._checkpointed(h, cos, sin)
        else:
            for i, layer in enumerate(self.layers):
                h = layer(h, cos, sin, cache, i, start)
        return self.norm(h)

    def _checkpointed(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        covered = {i: seg for seg in self.checkpoint_segments for i in range(*seg)}
        i = 0
        while i < len(self.layers):
            if i in covered:
                a, b = covered[i]
                h = checkpoint(self._run_layers, h, cos, sin, a, b, use_reentrant=False)
                i = b
            else:
                h = self.layers[i](h, cos, sin)
                i += 1
        return h

    def _run_layers(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, a: int,
                    b: int) -> torch.Tensor:
        for layer in self.layers[a:b]:
            h = layer(h, cos, sin)
        return h

    def set_checkpointing(self, segments: Sequence[tuple[int, int]]) -> None:
        """Recompute the activations of each [start, end) run of layers in the backward pass
        instead of keeping them (torch.utils.checkpoint, use_reentrant=False). [] turns it off."""
        segs = sorted((int(a), int(b)) for a, b in segments)
        for (a, b), nxt in zip(segs, segs[1:] + [(len(self.layers), 0)], strict=False):
            if not 0 <= a < b <= len(self.layers) or b > nxt[0]:
                raise ValueError(f"checkpoint segments must be disjoint [start, end) ranges "
                                 f"within {len(self.layers)} layers, got {segs}")
        self.checkpoint_segments = segs

    def segment_tail(self) -> nn.Linear:
        """The first layer's last projection (w2): what a checkpointed segment does not run
        again (torch's early stop; train.traffic)."""
        return self.layers[0].ffn.w2

    def new_cache(self, batch: int, max_seq: int | None = None, *,
                  dtype: torch.dtype | None = None) -> KVCache:
        p = next(self.parameters())
        return KVCache(self.cfg.n_layers, batch, self.cfg.kv_heads,
                       max_seq or self.cfg.max_seq_len, self.cfg.head_size,
                       dtype or p.dtype, p.device)

    # ------------------------------------------------------------------ sizes

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied embedding counts once)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_embeddings.weight.numel()
        return n

    def flops_per_token(self, seq: int, *, training: bool = True) -> float:
        """PaLM (Chowdhery et al. 2022, appendix B): 6N + 12 * L * H * Q * T per trained token,
        where N counts the parameters that take part in matmuls (the input embedding is a
        lookup, so it is left out unless tied to the output layer), L layers, H query heads,
        Q head dim, T the sequence length. Forward only is a third of it."""
        n = self.num_parameters()
        if not self.cfg.tie_embeddings:
            n -= self.tok_embeddings.weight.numel()
        cfg = self.cfg
        total = 6 * n + 12 * cfg.n_layers * cfg.n_heads * cfg.head_size * seq
        return total if training else total / 3
