"""Each loss against values worked out by hand from the papers' formulas."""

import math

import pytest
import torch

from llmbench.train.losses import (
    dpo_loss,
    gae,
    kl_penalty,
    kto_loss,
    log1mexp,
    masked_mean,
    masked_whiten,
    orpo_loss,
    ppo_policy_loss,
    ppo_value_loss,
    reward_model_loss,
    sequence_logps,
    simpo_loss,
    token_nll,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(x):
    return math.log1p(math.exp(x))


def test_dpo_policy_equal_to_reference_is_ln2():
    logps = t(-3.0, -10.0, -0.5)
    losses, cr, rr = dpo_loss(logps, logps - 1, logps, logps - 1)
    assert torch.allclose(losses, torch.full((3,), math.log(2), dtype=torch.float64))
    assert torch.equal(cr, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(rr, torch.zeros(3, dtype=torch.float64))


def test_dpo_sigmoid_by_hand():
    # z = (pc - pr) - (rc - rr) = (-1 + 3) - 0 = 2; beta 0.5: -log sigmoid(1) = log(1 + e^-1)
    losses, cr, rr = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.5)
    assert losses.item() == pytest.approx(softplus(-1.0))
    assert (cr.item(), rr.item()) == (pytest.approx(0.5), pytest.approx(-0.5))


def test_dpo_label_smoothing_robust_hinge():
    args = (t(-1.0), t(-3.0), t(-2.0), t(-2.0))  # z = 2
    cdpo, _, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.1)
    assert cdpo.item() == pytest.approx(0.9 * softplus(-1.0) + 0.1 * softplus(1.0))
    robust, _, _ = dpo_loss(*args, beta=0.5, loss_type="robust", label_smoothing=0.1)
    assert robust.item() == pytest.approx((0.9 * softplus(-1.0) - 0.1 * softplus(1.0)) / 0.8)
    hinge, _, _ = dpo_loss(*args, beta=0.2, loss_type="hinge")
    assert hinge.item() == pytest.approx(1 - 0.4)
    hinge, _, _ = dpo_loss(*args, beta=0.5, loss_type="hinge")
    assert hinge.item() == 0.0


def test_ipo_on_per_token_averages():
    # Two responses of 2 and 4 tokens: IPO compares per-token average log-probs.
    logits = torch.zeros(2, 5, 3, dtype=torch.float64)  # uniform: log p = -ln 3 per token
    labels = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.float64)
    total = sequence_logps(logits, labels, mask)
    avg = sequence_logps(logits, labels, mask, average=True)
    assert total.tolist() == pytest.approx([-2 * math.log(3), -4 * math.log(3)])
    assert avg.tolist() == pytest.approx([-math.log(3), -math.log(3)])
    # Chosen = the 2-token response, rejected = the 4-token one; on averages z = 0 at the
    # reference, so the loss is (0 - 1 / (2 beta))^2; on sums it would not be.
    losses, _, _ = dpo_loss(avg[:1], avg[1:], avg[:1], avg[1:], beta=0.1, loss_type="ipo")
    assert losses.item() == pytest.approx(25.0)
    moved, _, _ = dpo_loss(avg[:1] + 1, avg[1:], avg[:1], avg[1:], beta=0.1, loss_type="ipo")
    assert moved.item() == pytest.approx((1 - 5) ** 2)


def test_sequence_logps_masks_prompt_and_padding():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [5.0, 5.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[0.0, 1.0, 0.0]])  # only the middle token is response
    expected = 2.0 - math.log(math.exp(2.0) + 1.0)
    assert sequence_logps(logits, labels, mask).item() == pytest.approx(expected)


def test_sequence_logps_follows_the_logits_precision():
    # p(label) = e^a / (e^a + e^b) with a - b = 1e-9: its log differs from -ln 2 by 5e-10,
    # which fp64 keeps and fp32 (eps 1.2e-7 around 0.69) rounds away.
    logits = torch.tensor([[[1e-9, 0.0]]], dtype=torch.float64)
    labels, mask = torch.tensor([[0]]), torch.tensor([[1.0]])
    exact = -math.log(2) + 0.5e-9
    got = sequence_logps(logits, labels, mask)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(exact, rel=1e-14, abs=0)
    assert sequence_logps(logits.float(), labels, mask).item() == pytest.approx(-math.log(2),
                                                                                rel=1e-7)
    for narrow in (torch.float16, torch.bfloat16, torch.float32):
        assert sequence_logps(logits.to(narrow), labels, mask).dtype == torch.float32


def test_token_nll_weighs_tokens_not_sequences():
    token = t(-1.0, -2.0, -3.0, -4.0).view(2, 2)
    mask = t(1.0, 0.0, 1.0, 1.0).view(2, 2)  # one token in row 0, two in row 1
    assert token_nll(token, mask).item() == pytest.approx((1 + 3 + 4) / 3)  # not (1 + 3.5) / 2
    assert token_nll(token, torch.zeros_like(mask)).item() == 0.0


def test_orpo_with_one_nll_for_the_batch():
    # TRL's ORPO loss: nll - beta * mean(log sigmoid(log odds)), the nll one scalar.
    pc, pr = t(math.log(0.5), math.log(0.25)), t(math.log(0.25), math.log(0.5))
    losses, _, _, log_odds = orpo_loss(pc, pr, t(0.9).squeeze(), beta=0.2)
    assert log_odds.tolist() == pytest.approx([math.log(3), -math.log(3)])
    expected = 0.9 - 0.2 * (math.log(0.75) + math.log(0.25)) / 2
    assert losses.mean().item() == pytest.approx(expected)


def test_orpo_by_hand():
    # Per-token probabilities 1/2 (chosen) and 1/4 (rejected): odds 1 and 1/3, ratio 3.
    pc, pr = t(math.log(0.5)), t(math.log(0.25))
    nll = t(0.7)
    losses, cr, rr, log_odds = orpo_loss(pc, pr, nll, beta=0.1)
    assert log_odds.item() == pytest.approx(math.log(3))
    assert losses.item() == pytest.approx(0.7 - 0.1 * math.log(0.75))
    assert cr.item() == pytest.approx(0.1 * math.log(0.5))


def test_orpo_is_stable_near_probability_one():
    losses, _, _, log_odds = orpo_loss(t(-1e-10), t(-30.0), t(0.0))
    assert torch.isfinite(losses).all() and torch.isfinite(log_odds).all()
    assert log1mexp(t(-1e-10)).item() == pytest.approx(math.log(1e-10), rel=1e-6)
    assert log1mexp(t(-50.0)).item() == pytest.approx(-math.exp(-50), rel=1e-6)


def test_reward_model_loss_by_hand():
    assert reward_model_loss(t(2.0), t(0.0)).item() == pytest.approx(softplus(-2.0))
    assert reward_model_loss(t(2.0), t(0.0), margin=1.0).item() == pytest.approx(softplus(-1.0))


def test_simpo_by_hand():
    losses, cr, rr = simpo_loss(t(-1.0), t(-2.0), beta=2.0, gamma=0.5)
    assert losses.item() == pytest.approx(softplus(-1.5))
    assert (cr.item(), rr.item()) == (-2.0, -4.0)


def test_kto_by_hand():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    losses, rewards = kto_loss(t(-1.0, -1.0), t(-2.0, -2.0), torch.tensor([True, False]), 0.5,
                               beta=0.1)
    assert losses.tolist() == pytest.approx([1 - sig(0.05), 1 - sig(-0.05)])
    assert rewards.tolist() == pytest.approx([0.1, 0.1])


def test_kl_estimators_by_hand():
    assert kl_penalty(t(-1.0), t(-2.0), "k1").item() == pytest.approx(1.0)
    assert kl_penalty(t(-1.0), t(-2.0), "k3").item() == pytest.approx(math.exp(-1))
    assert kl_penalty(t(-2.0), t(-1.0), "k3").item() == pytest.approx(math.e - 2)  # >= 0
    with pytest.raises(ValueError):
        kl_penalty(t(0.0), t(0.0), "k2")


def test_gae_by_hand():
    rewards = t(0.0, 0.0, 1.0).unsqueeze(0)
    values = t(0.5, 0.5, 0.5).unsqueeze(0)
    mask = torch.ones(1, 3, dtype=torch.float64)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    d2 = 1.0 - 0.5
    d1 = 0.0 + 0.5 - 0.5
    d0 = 0.0 + 0.5 - 0.5
    a2 = d2
    a1 = d1 + 0.95 * a2
    a0 = d0 + 0.95 * a1
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.5, a2 + 0.5])
    # A masked-out tail contributes nothing.
    adv2, _ = gae(torch.cat([rewards, t(5.0).view(1, 1)], 1),
                  torch.cat([values, t(9.0).view(1, 1)], 1),
                  torch.cat([mask, t(0.0).view(1, 1)], 1))
    assert adv2[0, :3].tolist() == pytest.approx([a0, a1, a2]) and adv2[0, 3] == 0


def test_ppo_policy_loss_by_hand():
    old = t(0.0, 0.0)
    new = t(math.log(1.5), math.log(0.9))  # ratios 1.5 (clipped to 1.2) and 0.9
    adv = t(1.0, -1.0)
    loss, stats = ppo_policy_loss(new, old, adv, torch.ones(2), clip=0.2)
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(0.9, 0.9) = 0.9
    assert loss.item() == pytest.approx((-1.2 + 0.9) / 2)
    assert stats["policy/clipfrac"].item() == pytest.approx(0.5)
    assert stats["val/ratio"].item() == pytest.approx(1.2)


def test_ppo_value_loss_by_hand():
    loss, clipfrac = ppo_value_loss(t(2.0), t(0.0), t(2.0), torch.ones(1), clip=0.2)
    # unclipped error 0; clipped value 0.2: error 3.24; max -> 3.24; times 0.5
    assert loss.item() == pytest.approx(0.5 * 1.8**2)
    assert clipfrac.item() == 1.0


def test_masked_whiten_and_mean():
    x = t(1.0, 2.0, 3.0, 100.0)
    mask = t(1.0, 1.0, 1.0, 0.0)
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert w[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="unknown DPO loss type"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), loss_type="nope")
