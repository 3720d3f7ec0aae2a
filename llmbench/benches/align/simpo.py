"""SimPO: preference pairs without a reference model, on length-normalized log-probabilities.

Per pair, with avg(y) = log pi(y|x) / |y| (the mean log-probability of a response token):

    loss = -log sigmoid(beta * avg(chosen) - beta * avg(rejected) - gamma)

(Meng et al. 2024, eq. 6), the implicit reward of a response being beta * avg(y) and gamma the
target margin between them. TRL runs it as its CPOTrainer with loss_type="simpo": the same
loss written -log sigmoid(beta * (avg(chosen) - avg(rejected) - gamma / beta)), defaults
beta 0.1 and simpo_gamma 0.5, and cpo_alpha (the weight of an NLL term on the chosen
responses; CPO-SimPO when positive) set to 0 for SimPO itself. Its logged figures are the ones
below: rewards/* (beta * avg), logps/* (the averages) and nll_loss.

Those defaults are ours too (--beta, --simpo-gamma, --cpo-alpha 0); the learning rate is lower
than DPO's (1e-4, not 5e-4): with nothing anchoring the policy to the reference, at 5e-4 the
synthetic task's policy pushes the rejected responses' per-token log-probability far down and
takes the chosen ones with it, and its samples stop following the rule while its held-out
preference accuracy reaches 100 %.
"""

from __future__ import annotations

from typing import Any

import torch

from llmbench.benches.align.common import Run, pair_forward, pair_reward_metrics, pair_tensors
from llmbench.benches.align.pairs import PairStep, run_reference_free
from llmbench.train.losses import simpo_loss


def simpo_batch(run: Run, policy: torch.nn.Module) -> PairStep:
    """One SimPO batch (the pair forward of --layout, as DPO's and ORPO's): its loss (plus
    cpo_alpha times the chosen NLL), the response masks and the logged figures."""
    ct, cm, rt, rm = pair_tensors(run.sample_pairs(run.p("batch")), run.dev)
    # per-token averages: the length normalization
    pc, pr, chosen = pair_forward(policy, ct, cm, rt, rm, average=True, layout=run.p("layout"))
    losses, chosen_r, rejected_r = simpo_loss(pc, pr, beta=run.p("beta"),
                                              gamma=run.p("simpo_gamma"))
    # TRL's nll_loss (CPOTrainer): one cross-entropy over the chosen responses' tokens (it
    # logs 0 while cpo_alpha is 0, skipping it; here it is the real figure either way).
    nll = chosen.nll(prompt=False)
    loss = losses.mean()
    if run.p("cpo_alpha"):
        loss = loss + run.p("cpo_alpha") * nll
    return loss, (cm, rm), lambda: {
        "nll_loss": nll.detach(), **pair_reward_metrics(chosen_r, rejected_r, (pc, pr))}


def run_simpo(run: Run) -> dict[str, Any]:
    """SimPO from the reference policy, with no reference model in training."""
    return run_reference_free(run, simpo_batch)
