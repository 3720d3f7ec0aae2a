"""What every alignment loop shares, on the child side: the run's context, the metric history
(TRL's names), step timing, divergence checks, and the held-out evaluations."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from llmbench.core import progress, tracing
from llmbench.core.memory import PeakMemory, measure_peak
from llmbench.core.timing import TimeStats, stopwatch
from llmbench.models.transformer import Transformer
from llmbench.train.loop import require_trainable
from llmbench.train.losses import sequence_sum, token_nll
from llmbench.train.policy import (
    encode,
    generate,
    label_logps,
    prompts_and_responses,
    sequence_label_mask,
)
from llmbench.train.prefs import DIGITS, PAD, Pair, PrefData, load_data, rule_score
from llmbench.train.reference import sft_key, sft_reference


class Diverged(RuntimeError):  # noqa: N818 - reads as a status: "Diverged: at step 3 ..."
    """The loss stopped being a finite number."""


@dataclass
class Run:
    """One alignment run inside its case process. Its random streams (`rng`, `gen`, `sampler`)
    are the method's own: a cacheable stage (the reference, the reward model) never draws from
    them, nor leaves torch's or Python's global ones moved (train.reference.stage_rng), so a
    run's draws do not depend on what came from the cache."""

    params: dict[str, Any]
    device: str
    data: PrefData
    rng: random.Random
    gen: torch.Generator  # CPU draws: minibatch orders
    sampler: torch.Generator | None = None  # on `dev`, for generation (`gen` itself on a CPU)
    history: dict[str, list[float]] = field(default_factory=dict)
    step_ms: list[float] = field(default_factory=list)
    tokens_per_step: list[int] = field(default_factory=list)
    clock: Any = None
    traffic: dict[str, Any] = field(default_factory=dict)  # a step's FLOPs and bytes

    @property
    def dev(self) -> torch.device:
        return torch.device("cuda:0" if self.device == "cuda" else "cpu")

    def p(self, key: str) -> Any:
        return self.params[key]

    # ------------------------------------------------------------ the loop's bookkeeping

    def start_step(self) -> None:
        self.clock.start()

    def end_step(self, tokens: int) -> None:
        self.step_ms.append(self.clock.stop_ms())
        self.tokens_per_step.append(tokens)

    def log(self, step: int, total: int, **metrics: float) -> None:
        """Record `metrics` at `step` in the history and show them live."""
        self.history.setdefault("step", []).append(step)
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
            self.history.setdefault(key, []).append(float(value))
        shown = {k: metrics[k] for k in ("loss", "objective/scores") if k in metrics}
        progress.report(step=step, total=total, **shown)

    def should_log(self, step: int, total: int) -> bool:
        every = max(1, total // 25)
        return step % every == 0 or step == total - 1

    @staticmethod
    def check(step: int, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise Diverged(f"at step {step} the loss is {value}: training stopped")

    def update(self, step: int, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Check that the loss is finite, then one optimizer step on its gradients."""
        self.check(step, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timing_metrics(self) -> dict[str, Any]:
        if not self.step_ms:
            return {}
        stats = TimeStats.from_samples(self.step_ms[1:] or self.step_ms)  # step 0 warms up
        tokens = sum(self.tokens_per_step) / len(self.tokens_per_step)
        return {"time_ms": stats.model_dump(), "tokens_per_s": tokens / (stats.median / 1e3)}

    def sample_pairs(self, n: int) -> list[Pair]:
        return [self.rng.choice(self.data.train) for _ in range(n)]


def make_run(payload: dict[str, Any]) -> Run:
    p = payload["params"]
    require_trainable(p.get("attention") or "sdpa", p["device"])
    torch.manual_seed(p["seed"])
    data = load_data(task=p["task"], data=p["data"], train=p["train_pairs"],
                     heldout=p["heldout_pairs"], seed=p["seed"])
    run = Run(params=p, device=p["device"], data=data, rng=random.Random(f"run-{p['seed']}"),
              gen=torch.Generator().manual_seed(p["seed"]))
    # Tokens are sampled where the model is, so that a token costs no device-to-host copy; on
    # a CPU that is `gen` itself, which keeps a CPU run's draws (and results) for a seed.
    run.sampler = run.gen if run.dev.type == "cpu" else \
        torch.Generator(device=run.dev).manual_seed(p["seed"])
    run.clock = stopwatch(p["device"])
    return run


SFT_BATCH, SFT_LR = 32, 1e-3  # the reference SFT's


def _reference_args(run: Run) -> dict[str, Any]:
    return {"size": run.p("model"), "seed": run.p("seed"), "steps": run.p("sft_steps"),
            "batch": SFT_BATCH, "lr": SFT_LR, "device": run.device,
            "hf_config": run.p("hf_config"), "layers": run.p("layers"),
            "attention": run.p("attention") or "sdpa"}


def reference_policy(run: Run) -> Transformer:
    """The reference (train.reference.sft_reference): trained on its own random streams, so
    that the run's (`rng`, `gen`, `sampler`, torch's global one) are the same afterwards
    whether it came from the cache or not."""
    progress.report(stage="reference SFT")
    model, cached = sft_reference(run.data, **_reference_args(run))
    run.history["reference_from_cache"] = [float(cached)]
    return model


def reference_key(run: Run) -> dict[str, Any]:
    """The reference's cache key: a model trained from it (the reward model) keys by it."""
    return sft_key(run.data, **_reference_args(run))


def pair_tensors(pairs: list[Pair], dev: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen tokens and mask, rejected tokens and mask."""
    prompts = [p.prompt for p in pairs]
    ct, cm = encode(prompts, [p.chosen for p in pairs], dev)
    rt, rm = encode(prompts, [p.rejected for p in pairs], dev)
    return ct, cm, rt, rm


# How a preference batch goes through the model (AlignConfig.layout).
Layout = Literal["concatenated", "separate"]
LAYOUTS: tuple[str, ...] = ("concatenated", "separate")


@dataclass(frozen=True)
class PairExtra:
    """What a pair forward gives besides the two log-probabilities: the chosen rows'
    log-probability of every label (batch, T-1) and their response mask, for NLL terms."""

    chosen_token_logps: torch.Tensor
    chosen_mask: torch.Tensor

    def nll(self, *, prompt: bool) -> torch.Tensor:
        """The chosen half's NLL as TRL computes it: one cross-entropy over its tokens
        (`token_nll`), over the response tokens (prompt=False: DPO's `sft` term, RPO) or over
        prompt and response (prompt=True: ORPO's `nll_loss`)."""
        mask = sequence_label_mask(self.chosen_mask) if prompt else self.chosen_mask
        return token_nll(self.chosen_token_logps, mask)


def pair_forward(model: torch.nn.Module, ct: torch.Tensor, cm: torch.Tensor,
                 rt: torch.Tensor, rm: torch.Tensor, *, average: bool,
                 layout: Layout = "concatenated"
                 ) -> tuple[torch.Tensor, torch.Tensor, PairExtra]:
    """The log-probabilities of a batch's chosen and rejected responses (`pair_tensors`: right-
    padded rows and their response masks), sums or with `average` per-token means, and the
    chosen rows' per-label log-probabilities (`PairExtra`), in one of two layouts:

    - concatenated (TRL's `concatenated_forward`, DPO and ORPO trainers): both halves padded
      on the right to the longer width, stacked on the batch dimension, one forward, split;
    - separate: one forward per half.

    The model is causal and the padding comes after each row's tokens, so no real position
    sees it: the layouts give the same log-probabilities up to float rounding (the batched
    matrix products may sum in another order); tests/test_align_layout.py checks it in fp64.
    """
    if layout == "concatenated":
        n, width = ct.shape[0], max(ct.shape[1], rt.shape[1])
        rows = torch.cat([F.pad(ct, (0, width - ct.shape[1]), value=PAD),
                          F.pad(rt, (0, width - rt.shape[1]), value=PAD)])
        logps = label_logps(model, rows)
        tc, tr = logps[:n, :cm.shape[1]], logps[n:, :rm.shape[1]]  # each half's own width
    elif layout == "separate":
        tc, tr = label_logps(model, ct), label_logps(model, rt)
    else:
        raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return (sequence_sum(tc, cm, average=average), sequence_sum(tr, rm, average=average),
            PairExtra(tc, cm))


@torch.no_grad()
def pair_logps(model: Transformer, pairs: list[Pair], dev: torch.device, *, average: bool,
               chunk: int = 64, layout: Layout = "concatenated"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of every pair's chosen and rejected response (sum or per-token mean),
    `chunk` pairs per `pair_forward`."""
    was = model.training
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), chunk):
        pc, pr, _ = pair_forward(model, *pair_tensors(pairs[i:i + chunk], dev),
                                 average=average, layout=layout)
        chosen.append(pc)
        rejected.append(pr)
    model.train(was)
    return torch.cat(chosen), torch.cat(rejected)


def preference_eval(policy: Transformer, pairs: list[Pair], dev: torch.device,
                    ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None
                    ) -> dict[str, float]:
    """Held-out preference accuracy: how often the policy gives the chosen response a higher
    per-token log-probability than the rejected one; with the reference's (per-token)
    log-probabilities, also DPO's implicit-reward accuracy (log pi/pi_ref higher for chosen)."""
    pc, pr = pair_logps(policy, pairs, dev, average=True)
    out = {"preference_accuracy": float((pc > pr).float().mean())}
    if ref_logps is not None:
        rc, rr = ref_logps
        out["rewards/accuracies"] = float(((pc - rc) > (pr - rr)).float().mean())
    return out


def heldout_prompts(run: Run, n: int) -> torch.Tensor | None:
    """Equal-length held-out prompts for sampling (the synthetic tasks' prompts all are)."""
    if run.data.task is None:
        return None
    prompts = [p.prompt for p in run.data.heldout[:n]]
    return torch.tensor([list(p) for p in prompts], device=run.dev)


def rule_eval(run: Run, model: Transformer, *, n: int | None = None) -> dict[str, float]:
    """Sample responses to held-out prompts; the share that satisfies the rule and the mean
    rule score. Empty for a user's data (no rule)."""
    prompts = heldout_prompts(run, n or run.p("eval_samples"))
    if prompts is None:
        return {}
    rows, _ = generate(model, prompts, max_new=DIGITS + 1, temperature=run.p("temperature"),
                       generator=run.sampler)
    scores = rule_scores(run, rows, prompts.shape[1])
    return {"rule_satisfaction": sum(s == 1.0 for s in scores) / len(scores),
            "rule_score": sum(scores) / len(scores)}


def rule_scores(run: Run, rows: torch.Tensor, prompt_len: int) -> list[float]:
    """The task rule's score of each sampled row. Reads the rows to the host once: a sync on
    a GPU, and the only one a rollout makes (generation reads nothing back)."""
    return [rule_score(run.data.task, p, r) for p, r in prompts_and_responses(rows, prompt_len)]


def heldout_rule_and_prefs(run: Run, model: Transformer,
                           ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None
                           ) -> dict[str, float]:
    progress.report(stage="evaluating")
    return {**preference_eval(model, run.data.heldout, run.dev, ref_logps),
            **rule_eval(run, model)}


def role_metrics(roles: dict[str, torch.nn.Module], *optimizers: torch.optim.Optimizer,
                 precomputed: tuple[torch.Tensor, ...] | None = None) -> dict[str, Any]:
    """Bytes held per model role while training, and how many models that is."""
    from llmbench.train.optimizers import measured_state_bytes
    from llmbench.train.policy import module_bytes

    out: dict[str, Any] = {f"memory/{role}_bytes": module_bytes(m) for role, m in roles.items()}
    out["memory/optimizer_state_bytes"] = sum(
        measured_state_bytes(o, [p for g in o.param_groups for p in g["params"]])[0]
        for o in optimizers)
    if precomputed is not None:
        out["memory/reference_logps_bytes"] = sum(t.numel() * t.element_size()
                                                  for t in precomputed)
    out["models_held"] = len(roles)
    return out


def before_after(prefix: str, before: dict[str, float], after: dict[str, float]
                 ) -> dict[str, float]:
    out = {}
    for key in after:
        out[f"{prefix}{key}_before"] = before.get(key, float("nan"))
        out[f"{prefix}{key}_after"] = after[key]
        if key in before:
            out[f"{prefix}{key}_gain"] = after[key] - before[key]
    return out


def history_metrics(run: Run) -> dict[str, Any]:
    return {f"history/{k}": v for k, v in run.history.items()}


def pair_reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor,
                        logps: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> dict[str, torch.Tensor]:
    """A preference batch's logged figures (TRL's names): the mean rewards of the chosen and
    rejected responses, their margin and how often chosen wins; with the policy's
    log-probabilities (chosen, rejected), their means too."""
    out = {"rewards/chosen": chosen.detach().mean(), "rewards/rejected": rejected.detach().mean(),
           "rewards/margins": (chosen - rejected).detach().mean(),
           "rewards/accuracies": (chosen > rejected).float().mean()}
    if logps is not None:
        out["logps/chosen"] = logps[0].detach().mean()
        out["logps/rejected"] = logps[1].detach().mean()
    return out


def extra_step(run: Run, optimizer: torch.optim.Optimizer,
               loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One more training step of a method without its bookkeeping (no step time, no log):
    the call --trace profiles once every figure is taken."""
    return lambda: run.update(run.p("steps"), loss(), optimizer)


def train_and_eval(run: Run, loop: Callable[[], None], policy: Transformer,
                   ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                   step: Callable[[], object] | None = None
                   ) -> tuple[PeakMemory, dict[str, float]]:
    """Run the training `loop` once, measuring its peak memory; then the held-out figures of
    the trained `policy`; then, under --trace, one more training `step` (it moves the weights,
    so it comes after the evaluations)."""
    _, peak = measure_peak(loop, device=run.device)
    after = heldout_rule_and_prefs(run, policy, ref_logps)
    if step is not None:
        after_figures(run, step)
    return peak, after


def after_figures(run: Run, step: Callable[[], object]) -> None:
    """Once every figure is taken (a step moves the weights): one more `step` with its FLOPs
    and bytes counted (train.traffic.Tally, for the roofline; counting hooks every module
    call, so never in the timed steps), then, under --trace, one more traced."""
    from llmbench.train.traffic import Tally

    with Tally() as tally:
        step()
    run.traffic = tally.per_step(1)
    tracing.after_timing(step, run.device)


def train_results(run: Run, peak: PeakMemory, roles: dict[str, torch.nn.Module],
                  optimizers: tuple[torch.optim.Optimizer, ...], before: dict[str, float],
                  after: dict[str, float], *, extra: dict[str, Any] | None = None,
                  precomputed: tuple[torch.Tensor, ...] | None = None) -> dict[str, Any]:
    """A policy-training method's metrics: step timing, peak memory, memory per role, the
    held-out figures before and after, `extra`, and the metric history."""
    return {**run.timing_metrics(), "peak_memory_bytes": peak.peak_bytes, **run.traffic,
            **role_metrics(roles, *optimizers, precomputed=precomputed),
            **before_after("eval/", before, after), **(extra or {}), **history_metrics(run)}
