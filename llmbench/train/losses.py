"""Alignment losses as plain functions of log-probabilities (public API).

Each takes per-sequence (or per-token) tensors and returns per-example losses plus the figures
the training loops log, under the names TRL users know. Sequence log-probabilities are sums over
response tokens only (`sequence_logps` masks the prompt and padding); IPO, ORPO and SimPO use
the per-token average instead (`average=True`).

References: DPO (Rafailov et al. 2023, eq. 7), cDPO label smoothing (Mitchell 2023), robust DPO
(Chowdhury et al. 2024), IPO (Azar et al. 2023, eq. 17), hinge (SLiC, Zhao et al. 2023), ORPO
(Hong et al. 2024), SimPO (Meng et al. 2024), KTO (Ethayarajh et al. 2024), reward models
(Bradley-Terry, as in Ouyang et al. 2022; margin as in Llama 2), PPO (Schulman et al. 2017) with
GAE (Schulman et al. 2016), KL estimators k1/k3 (Schulman 2020, "Approximating KL divergence").
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "ipo", "hinge", "robust"]
DPO_LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge", "robust")
# Loss types defined on per-token average log-probabilities rather than sums.
AVERAGED_LOSS_TYPES = frozenset({"ipo"})


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) at every position: logits (batch, seq, vocab) predict labels (batch, seq)
    position by position (already shifted).

    Computed in the logits' precision where that is fp32 or wider (fp64 stays fp64, for exact
    checks); fp16 and bf16 logits are upcast to fp32 first, as a log-softmax over a vocabulary
    needs."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def sequence_sum(token: torch.Tensor, mask: torch.Tensor, *,
                 average: bool = False) -> torch.Tensor:
    """Per row: the sum of `token` where `mask` is 1, or with `average` its mean over those
    positions (an empty row gives 0)."""
    mask = mask.to(token.dtype)
    total = (token * mask).sum(-1)
    return total / mask.sum(-1).clamp_min(1) if average else total


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, *,
                   average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence's labelled tokens where `mask` is 1.

    logits (batch, seq, vocab) predict labels (batch, seq) position by position (already
    shifted); mask (batch, seq) is 1 on response tokens and 0 on prompt and padding. The
    precision follows the logits' (`token_logps`): fp64 stays fp64, fp16 / bf16 become fp32.
    """
    return sequence_sum(token_logps(logits, labels), mask, average=average)


def token_nll(token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One negative log-likelihood over every token of the batch where `mask` is 1:
    -sum(log p * mask) / sum(mask), a cross-entropy over the batch's tokens (a long sequence
    weighs more than a short one), not the mean of per-sequence means.

    TRL's chosen-response NLL terms are this: ORPO's `nll_loss` (one cross-entropy over the
    chosen half of the batch) and DPO's `sft` loss, which RPO's `rpo_alpha` weighs."""
    mask = mask.to(token.dtype)
    return -(token * mask).sum() / mask.sum().clamp_min(1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float = 0.1, loss_type: DPOLossType = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(losses, chosen_rewards, rejected_rewards), rewards being beta * log(pi / pi_ref).

    With logits = (pi_c - pi_r) - (ref_c - ref_r):
      sigmoid: -log s(b z) (1 - e) - log s(-b z) e      (e: label smoothing; 0 is plain DPO)
      robust:  (-log s(b z) (1 - e) + log s(-b z) e) / (1 - 2e)
      hinge:   max(0, 1 - b z)
      ipo:     (z - 1 / (2 b))^2, on per-token average log-probs

    Label smoothing on sigmoid is cDPO (Mitchell 2023, eq. 3): the preference label is taken
    as flipped with probability e. That is what TRL's DPOTrainer did with `label_smoothing` up
    to 0.24; the rewritten DPOTrainer of TRL 1.x (trl/trainer/dpo_trainer.py, read at 1.1.0)
    ignores it for sigmoid and reads it for robust (the same formula as here), exo_pair and
    aot only, so `label_smoothing > 0` with sigmoid matches TRL <= 0.24, not TRL 1.x.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps
                                                              - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "robust":
        losses = ((-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                   + F.logsigmoid(-beta * logits) * label_smoothing) / (1 - 2 * label_smoothing))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r} (choose from "
                         f"{', '.join(DPO_LOSS_TYPES)})")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)),
                       torch.log1p(-torch.exp(x)))


def orpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              chosen_nll: torch.Tensor, *, beta: float = 0.1
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO: NLL on the chosen response minus beta * log sigmoid(log odds ratio).

    Inputs are per-token average log-probabilities (so odds are of a typical token):
    log odds(y) = log p - log(1 - p), the ratio is odds(chosen) / odds(rejected).
    `chosen_nll` is a scalar (TRL's: one cross-entropy over the chosen half, `token_nll`) or
    one per example; the mean of the losses is nll - beta * mean(log sigmoid(log odds)).
    Returns (losses, chosen_rewards, rejected_rewards, log_odds), rewards = beta * logp and
    log_odds the raw log odds ratio per pair. TRL logs its mean as `log_odds_chosen`, and the
    mean of log sigmoid(log_odds) (never positive) as `log_odds_ratio`.
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    log_odds = ((policy_chosen_logps - policy_rejected_logps)
                - (log1mexp(policy_chosen_logps) - log1mexp(policy_rejected_logps)))
    losses = chosen_nll - beta * F.logsigmoid(log_odds)
    return (losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach(),
            log_odds.detach())


def simpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, *,
               beta: float = 2.0, gamma: float = 0.5
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO: -log sigmoid(beta * avg_logp(chosen) - beta * avg_logp(rejected) - gamma), no
    reference model. Returns (losses, chosen_rewards, rejected_rewards)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    chosen = beta * policy_chosen_logps
    rejected = beta * policy_rejected_logps
    return -F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             kl: torch.Tensor | float, *, beta: float = 0.1, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO: per example, with r = log(pi / pi_ref) and z0 the KL reference point,
    desirable: w_d (1 - sigmoid(beta (r - z0))); undesirable: w_u (1 - sigmoid(beta (z0 - r))).
    Returns (losses, rewards = beta * r)."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    r = policy_logps - ref_logps
    z0 = torch.as_tensor(kl, dtype=r.dtype, device=r.device).clamp_min(0).detach()
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable.bool(), good, bad), beta * r.detach()


def reward_model_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                      margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected - margin), per pair."""
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


# ------------------------------------------------------------------ PPO pieces


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp_min(1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked elements; with shift_mean=False the mean is added back
    (used for rewards, where the sign matters)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    white = (x - mean) * torch.rsqrt(var + 1e-8)
    return white if shift_mean else white + mean


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
               kind: Literal["k1", "k3"] = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    k1 = log pi - log pi_ref (unbiased, can be negative); k3 = (r - 1) - log r with
    r = pi_ref / pi (unbiased, never negative, lower variance)."""
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r} (k1 or k3)")


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens (batch, seq).

    delta_t = r_t + gamma V_{t+1} - V_t;  A_t = delta_t + gamma lam A_{t+1}; returns = A + V.
    Positions where mask is 0 contribute nothing and end the recursion."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    steps = values.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, advantages + values


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                    advantages: torch.Tensor, mask: torch.Tensor, *, clip: float = 0.2
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate: mean of max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = pi / pi_old.
    Returns (loss, {"policy/clipfrac", "policy/approxkl", "val/ratio"})."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    stats = {
        "policy/clipfrac": masked_mean((clipped > unclipped).float(), mask).detach(),
        "policy/approxkl": 0.5 * masked_mean(log_ratio**2, mask).detach(),
        "val/ratio": masked_mean(ratio, mask).detach(),
    }
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, *, clip: float = 0.2
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * mean of max((V - R)^2, (clip(V, V_old +- eps) - R)^2).
    Returns (loss, clip fraction)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_err, clipped_err), mask)
    return loss, masked_mean((clipped_err > unclipped_err).float(), mask).detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax distribution."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
