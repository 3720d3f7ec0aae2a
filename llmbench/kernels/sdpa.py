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


def wrapper_mask_bytes(p) -> int:  # noqa: ANN001 - AttentionProblem
    """Bytes of the masks held while SDPA runs. Square causal problems pass `is_causal` (no
    mask of ours; the math backend builds its own, `predicted_math_extra_bytes`); other causal
    or windowed ones pass our boolean mask: the banned positions and their negation (M bytes
    each, M = rows x keys) and the additive mask SDPA converts it to (M elements of the
    input's dtype), 2M + M*e in all; 0 when nothing is masked (one query row)."""
    c = p.computed
    explicit = (p.causal and c.seq != c.kv_seq) or p.window is not None
    m = c.mask_elements if explicit else 0
    return m * (2 + p.elem_bytes)


def predicted_math_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """The math backend's peak above the inputs, phase by phase, from what torch allocates
    (torch.profiler's memory events, torch 2.13). The backend computes fp16/bf16 inputs in
    fp32 (f = 4 bytes an element; f = e otherwise). With M, Q, Z, KV as in
    `standard.predicted_extra_bytes` (r = the rows that see a key) and, in f bytes an element:

        S  = b*h*r*s_k*f   a score matrix         Qr = b*h*r*d*f    the rows of Q (scaled), output
        Xg = b*h*s_k*d*f   K (scaled) per query head    KVf = KV*f/e
        R  = Xg when GQA/MQA (enable_gqa repeats K and V to every query head), else 0
        U  = Qr + 2KVf, the fp32 copies of q, k and v, for fp16/bf16 inputs (else 0)
        Mm = the mask held during the call: ours (`wrapper_mask_bytes`), or for a square
             causal problem the additive mask the backend builds from its own tril, M*f
        W  = fp16/bf16 only: the probabilities and the output cast back, (S + Qr)*e/f

    Forward: max(U + Mm + Qr + 2R + Xg + S     scaled Q, K and V repeated, scaled K, scores
                 U + Mm + Qr + 2R + 2S + S/f + b*h*r   scores, probabilities, _safe_softmax's
                                               -inf test (a bool an element) and row test
                 U + Mm + 2Qr + 2R + S + W     probabilities, output
                 Qr*e/f + Z + Q                the zero rows concatenated, when there are any).
    Forward + backward: the scaled K stays (saved), so Xg adds to the last three call phases;
    with A = Qr + Xg + S + R + Q kept for the backward (scaled Q and K, probabilities, repeated
    V, output) and dO = Qr (dO in f, fp16/bf16 only):
        max(the call phases,  A + Qr*e/f + Z (zero rows),  A + dO + Xg + S (dV per head, dP),
            A - R + Xg + 2S (dS),  A - R + 2Xg + Qr (dQs, dKs),  Q + Qr + 3Xg (dK per head),
            Q + 2Qr + 2KVf (dQ),  2Q + 2KV + Qr*e/f (the zero rows' dQ, when any))."""
    c = p.computed
    e = p.elem_bytes
    f = 4 if e == 2 else e  # fp16/bf16 are computed in fp32

    def up(n: int) -> int:
        return n * f // e

    s, qr, xg = up(c.score_bytes), up(c.q_bytes), up(p.spread_bytes)
    q, kv = p.q_bytes, p.kv_bytes // 2
    z = q - c.q_bytes
    r = xg if p.groups > 1 else 0
    u = qr + 2 * up(kv) if f != e else 0
    w = c.score_bytes + c.q_bytes if f != e else 0
    own = p.causal and c.seq == c.kv_seq and p.window is None  # the backend's own causal mask
    mm = c.mask_elements * f if own else wrapper_mask_bytes(p)
    rows = c.batch * c.heads * c.seq
    keep = xg if p.mode == "fwd+bwd" else 0  # the scaled K, saved for the backward
    phases = [u + mm + qr + 2 * r + xg + s,
              u + mm + qr + 2 * r + 2 * s + s // f + rows + keep,
              u + mm + 2 * qr + 2 * r + s + w + keep]
    if p.mode == "fwd":
        return max(phases + ([c.q_bytes + z + q] if z else []))
    a = qr + xg + s + r + q
    d_out = qr if f != e else 0
    phases += [a + d_out + xg + s, a - r + xg + 2 * s, a - r + 2 * xg + qr, q + qr + 3 * xg,
               q + 2 * qr + 2 * up(kv)]
    if z:
        phases += [a + c.q_bytes + z, 2 * q + 2 * kv + c.q_bytes]
    return max(phases)


def predicted_fused_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """Fused CUDA kernels keep only the output and the log-sum-exp; the backward pass adds the
    gradients, an fp32 dQ accumulator and, for GQA, per-query-head dK/dV before the sum."""
    extra = p.q_bytes + p.lse_bytes
    if p.mode == "fwd+bwd":
        extra += p.grad_bytes + p.q_bytes * 4 // p.elem_bytes + p.lse_bytes
        if p.groups > 1:
            extra += p.kv_bytes * p.groups
    return extra


def predicted_sdpa_extra_bytes(p, tile=None) -> int:  # noqa: ANN001 - AttentionProblem
    """SDPA's flash backend (and torch's own pick): on the CPU, torch's CPU flash kernel
    (`predicted_cpu_flash_extra_bytes`); on CUDA, a fused kernel
    (`predicted_fused_extra_bytes`) plus the masks our wrapper passes it
    (`wrapper_mask_bytes`)."""
    if p.device == "cpu":
        return predicted_cpu_flash_extra_bytes(p)
    return predicted_fused_extra_bytes(p) + wrapper_mask_bytes(p)


def cpu_flash_splits(rows: int, keys: int) -> tuple[int, int]:
    """The (query, key) block sizes of torch's CPU flash kernel (aten/src/ATen/native/cpu/
    FlashAttentionKernel.cpp): 256 query rows from 768 rows on, 64 from 192, else 32; 512
    keys; neither more than the problem has."""
    q_split = 256 if rows >= 768 else 64 if rows >= 192 else 32
    return min(q_split, rows), min(512, keys)


def predicted_cpu_flash_extra_bytes(p, tile=None, threads: int | None = None) -> int:  # noqa: ANN001
    """torch's CPU flash kernel, phase by phase (torch 2.13, traced with torch.profiler's
    memory events; exact for fp32 and fp64, while fp16/bf16 go through micro-kernels whose own
    scratch, K and V packed for them, is not counted). With Qr, Q, Z, KV, M as in
    `standard.predicted_extra_bytes`, a = the accumulation dtype's bytes (8 for fp64, else 4),
    bq x bk its blocks (`cpu_flash_splits`), T its threads (torch.get_num_threads()) and Mm
    the mask we pass (`wrapper_mask_bytes`; the additive part, M*e, is saved for the backward
    when there is one):

        L    = b*h*r*a                               the log-sum-exp
        bufF = T*(bq*bk + 2*bq + bq*d)*a (+ T*bq*bk*e for fp16/bf16)   per-thread blocks
        bufB = T*(2*bq*bk + bq)*a (+ T*2*bq*bk*e for fp16/bf16)
        G    = Qr: dO made contiguous in the kernel's (b, s, h, d) layout (0 when r or h is 1)
        C    = the largest gradient AccumulateGrad copies back to its input's layout (the
               kernel writes (b, s, h, d)): dQ (when h, r > 1), dK or dV (when kv_heads,
               s_k > 1)

    Forward: max(Mm + Qr + L + bufF, Qr + Z + Q (the zero rows concatenated)).
    Forward + backward, with O = Q (+ Qr, the saved output of the rows, when there are zero
    rows): max(Mm + Qr + L + bufF,  Qr + L + M*e + Z + Q,  O + L + M*e + Qr + 2KV + G + bufB,
    Q + Qr + 2KV + C,  2Q + 2KV + Qr (the zero rows' dQ))."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    c = p.computed
    e, a = p.elem_bytes, 8 if p.elem_bytes == 8 else 4
    reduced = e == 2
    qr, q, kv, rows = c.q_bytes, p.q_bytes, p.kv_bytes // 2, c.seq
    z = q - qr
    bq, bk = cpu_flash_splits(rows, p.kv_seq)
    lse = c.batch * c.heads * rows * a
    buf_f = threads * ((bq * bk + 2 * bq + bq * p.head_dim) * a + (bq * bk * e if reduced else 0))
    mm = wrapper_mask_bytes(p)
    forward = mm + qr + lse + buf_f
    if p.mode == "fwd":
        return max(forward, qr + z + q if z else 0)
    saved_mask = mm // (2 + e) * e
    buf_b = threads * ((2 * bq * bk + bq) * a + (2 * bq * bk * e if reduced else 0))
    g = qr if rows > 1 and p.heads > 1 else 0
    copies = [qr if g and not z else 0, kv if p.kv_heads > 1 and p.kv_seq > 1 else 0]
    o = q + (qr if z else 0)
    phases = [forward, o + lse + saved_mask + qr + 2 * kv + g + buf_b,
              q + qr + 2 * kv + max(copies)]
    if z:
        phases += [qr + lse + saved_mask + z + q, 2 * q + 2 * kv + qr]
    return max(phases)
