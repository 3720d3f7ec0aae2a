"""torch.nn.functional.scaled_dot_product_attention, pinned to one backend at a time.

SDPA's `is_causal` is top-left aligned (query i sees keys 0..i), which differs from the
bottom-right alignment every llmbench implementation uses as soon as seq_q != seq_k. So: square
problems pass `is_causal` (the flash backend takes no mask), one query row needs no mask (it sees
every key), leading rows that see no key are not computed (zeros: a fully masked row would be
NaN on some backends), and any other causal or windowed problem passes an explicit boolean mask.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llmbench.core.errors import CaseUnavailable, one_line
from llmbench.kernels.standard import band_mask, require_causal_window, skip_keyless_rows

BACKENDS = {
    "sdpa": None,  # torch's own choice of backend
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}

# How torch says no backend can take the input: on the CPU, "No viable backend for
# scaled_dot_product_attention was found."; on CUDA, "No available kernel. Aborting execution."
# after one warning per backend ("Flash attention kernel not used because:") and its reasons.
_REFUSALS = ("No viable backend", "No available kernel")
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)")


def refusal_reasons(messages: Iterable[str]) -> str:
    """torch's warnings before a refusal, as one line: each backend's header with its reasons,
    without the C++ source locations, and without the backends the pin switched off."""
    sections: list[tuple[str, list[str]]] = []
    for message in messages:
        text = one_line(_TRIGGERED.sub("", str(message)))
        if not text or "has been runtime disabled" in text:
            continue
        if text.endswith("not used because:"):
            sections.append((text, []))
        elif sections:
            sections[-1][1].append(text)
        else:
            sections.append(("", [text]))
    return "; ".join(" ".join([head, *body]).strip() for head, body in sections if body)


def make(name: str) -> Callable[..., torch.Tensor]:
    backend = BACKENDS[name]

    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float,
             window: int | None) -> torch.Tensor:
        sq, sk = q.shape[2], k.shape[2]
        mask = None
        if (causal and sq != sk) or window is not None:
            # An explicit boolean mask (True = attend), bottom-right aligned; None when it
            # would mask nothing (one query row sees every key).
            banned = band_mask(sq, sk, causal=causal, window=window, device=q.device)
            mask = None if banned is None else ~banned
            causal = False
        gqa = k.shape[1] != q.shape[1]
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                  scale=scale, enable_gqa=gqa)
        with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
            warnings.simplefilter("always")
            try:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                      is_causal=causal, scale=scale,
                                                      enable_gqa=gqa)
            except RuntimeError as exc:
                if not any(refusal in str(exc) for refusal in _REFUSALS):
                    raise
                why = refusal_reasons(str(w.message) for w in caught) or one_line(str(exc))
                raise CaseUnavailable(f"torch refuses {name} for this input: {why}") from None

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                  scale: float | None = None, window: int | None = None,
                  **_: object) -> torch.Tensor:
        """q: (batch, heads, seq_q, dim); k, v: (batch, kv_heads, seq_k, dim). Causal is
        bottom-right aligned (query i sees keys 0..i + seq_k - seq_q), as in every llmbench
        implementation; `window`: a left sliding window (with causal)."""
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        require_causal_window(causal, window)
        return skip_keyless_rows(sdpa, q, k, v, causal=causal, scale=scale, window=window)

    attention.__name__ = name.replace("-", "_")
    return attention


def predicted_math_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """The math backend: the score matrix, its softmax, a float mask built from a bool one for
    causal (torch's own for a square problem, ours otherwise), K/V repeated per query head for
    GQA, and the output."""
    mask = p.mask_elements * (1 + p.elem_bytes)
    repeat = p.kv_bytes * (p.groups - 1) if p.groups > 1 else 0
    if p.mode == "fwd":
        return 2 * p.score_bytes + mask + repeat + p.q_bytes
    return 3 * p.score_bytes + mask + 2 * repeat + p.q_bytes + p.grad_bytes


def predicted_fused_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Fused kernels keep only the output and the log-sum-exp; the backward pass adds the
    gradients, an fp32 dQ accumulator and, for GQA, per-query-head dK/dV before the sum."""
    extra = p.q_bytes + p.lse_bytes
    if p.mode == "fwd+bwd":
        extra += p.grad_bytes + p.q_bytes * 4 // p.elem_bytes + p.lse_bytes
        if p.groups > 1:
            extra += p.kv_bytes * p.groups
    return extra
