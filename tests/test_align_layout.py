"""The preference forward (`pair_forward`): TRL's concatenated layout and the separate one give
the same log-probabilities on the real model, and the chosen-response NLL terms are TRL's, one
cross-entropy over tokens, checked against a loop over the tokens by hand."""

import math

import pytest
import torch

from llmbench.benches.align.common import PairExtra, pair_forward, pair_tensors
from llmbench.train.loop import build_model
from llmbench.train.policy import encode, response_logps
from llmbench.train.prefs import Pair

CPU = torch.device("cpu")
# Prompts and responses of different lengths in both halves, so that the concatenated batch pads
# some chosen rows and some rejected rows.
PAIRS = [Pair(b"12:", b"ab\n", b"abcdefgh\n"), Pair(b"12345:", b"abcdef\n", b"x\n"),
         Pair(b"1:", b"abcdefghijk\n", b"yy\n"), Pair(b"9876:", b"z\n", b"zzzz\n")]


@pytest.fixture(scope="module")
def model64():
    return build_model("tiny", seed=0, device="cpu").double().eval()


@pytest.mark.parametrize("swap", [False, True], ids=["chosen-wider", "rejected-wider"])
def test_layouts_agree_in_fp64(model64, swap):
    pairs = [Pair(p.prompt, p.rejected, p.chosen) if swap else p for p in PAIRS]
    ct, cm, rt, rm = pair_tensors(pairs, CPU)
    assert ct.shape[1] != rt.shape[1]  # the halves differ in width: one of them is padded
    with torch.no_grad():
        cat = pair_forward(model64, ct, cm, rt, rm, average=False, layout="concatenated")
        sep = pair_forward(model64, ct, cm, rt, rm, average=False, layout="separate")
        mean = pair_forward(model64, ct, cm, rt, rm, average=True, layout="concatenated")
        # Each half on its own, through the plain path (policy.response_logps).
        own = (response_logps(model64, ct, cm), response_logps(model64, rt, rm))
    for got in (cat, sep):
        assert got[0].dtype == torch.float64
        torch.testing.assert_close(got[0], own[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], own[1], rtol=1e-12, atol=1e-12)
        for prompt in (False, True):
            torch.testing.assert_close(got[2].nll(prompt=prompt), sep[2].nll(prompt=prompt),
                                       rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean[0], own[0] / cm.sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean[1], own[1] / rm.sum(-1), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(own[0], own[1])  # chosen and rejected not mixed up unseen


def test_layouts_agree_in_fp32_with_gradients():
    model = build_model("tiny", seed=1, device="cpu")
    ct, cm, rt, rm = pair_tensors(PAIRS, CPU)
    grads = []
    for layout in ("concatenated", "separate"):
        model.zero_grad(set_to_none=True)
        pc, pr, chosen = pair_forward(model, ct, cm, rt, rm, average=False, layout=layout)
        (pc.mean() - pr.mean() + chosen.nll(prompt=True)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        pair_forward(model, ct, cm, rt, rm, average=False, layout="nope")


# The worked example: prompts of 3, 5, 2, 6 bytes, responses of 2, 6, 9, 4.
PROMPTS = [b"abc", b"abcde", b"ab", b"abcdef"]
RESPONSES = [b"12", b"123456", b"123456789", b"1234"]


def logp(i: int, j: int) -> float:
    """Row i's log-probability of its label j (label j is the row's token j + 1): all differ."""
    return -(0.2 + 0.31 * i + 0.17 * j)


def by_hand() -> tuple[float, float, float]:
    """Three reductions of the same token NLLs, by a loop over the tokens: the mean over rows of
    each row's per-token mean over its response; one cross-entropy over every response token
    of the batch (TRL's DPO `sft` term, RPO); one over every prompt and response token (TRL's
    ORPO `nll_loss`: labels masked by the attention mask only)."""
    per_row, resp, resp_n, full, full_n = [], 0.0, 0, 0.0, 0
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        first = len(p) - 1  # label len(p) - 1 is the response's first token
        row = [-logp(i, j) for j in range(first, first + len(r))]
        per_row.append(sum(row) / len(r))
        resp, resp_n = resp + sum(row), resp_n + len(r)
        for j in range(len(p) + len(r) - 1):  # every token but the first is a label
            full, full_n = full + -logp(i, j), full_n + 1
    assert (resp_n, full_n) == (21, 33)
    return sum(per_row) / len(per_row), resp / resp_n, full / full_n


def test_nll_is_one_cross_entropy_over_tokens():
    tokens, mask = encode(PROMPTS, RESPONSES)
    table = torch.tensor([[logp(i, j) for j in range(tokens.shape[1] - 1)]
                          for i in range(len(PROMPTS))], dtype=torch.float64)
    extra = PairExtra(chosen_token_logps=table, chosen_mask=mask)
    sequence_mean, response_tokens, all_tokens = by_hand()
    assert extra.nll(prompt=False).item() == pytest.approx(response_tokens, rel=1e-12)
    assert extra.nll(prompt=True).item() == pytest.approx(all_tokens, rel=1e-12)
    # The three differ, so the test tells them apart (worked out by the loop above).
    assert (sequence_mean, response_tokens, all_tokens) == pytest.approx(
        (1.5362500, 1.6623810, 1.4154545), abs=5e-7)
    # Padding labels, whatever their log-prob, count in neither.
    padded = table.masked_fill(torch.ones_like(mask).cumsum(-1) > 14, -1e3)
    assert PairExtra(padded, mask).nll(prompt=True).item() == pytest.approx(all_tokens)


def test_nll_through_the_model_is_the_cross_entropy():
    """On the real model: the chosen half's NLL is torch's cross-entropy over the labels."""
    model = build_model("tiny", seed=2, device="cpu").double().eval()
    ct, cm, rt, rm = pair_tensors(PAIRS, CPU)
    with torch.no_grad():
        _, _, chosen = pair_forward(model, ct, cm, rt, rm, average=True)
        logits = model(ct[:, :-1])
    labels = ct[:, 1:]
    lengths = [len(p.prompt) + len(p.chosen) for p in PAIRS]
    full = torch.stack([torch.arange(labels.shape[1]) < n - 1 for n in lengths])
    for mask, prompt in ((cm.bool(), False), (full, True)):
        expected = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
        assert chosen.nll(prompt=prompt).item() == pytest.approx(expected.item(), rel=1e-12)
    assert not math.isclose(chosen.nll(prompt=True).item(), chosen.nll(prompt=False).item())
