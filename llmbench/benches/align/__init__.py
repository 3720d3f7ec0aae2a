"""`llmbench align sft | rm | dpo | orpo | simpo | kto | ppo | rlhf`: short, real alignment loops.

Each method is one case (its own process): it starts from the reference policy (a short SFT on
a 50/50 mix of rule-following and rule-breaking responses, cached), trains for `steps` steps,
and reports what it cost (step time, tokens/s, peak memory, bytes per model role, how many
models it holds) and whether behaviour moved (held-out preference accuracy, the rule
satisfaction of sampled generations, before and after), with the whole metric history.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.benches.training import (
    STEP_ROOFLINE,
    Attention,
    HFConfigSpec,
    Layers,
    RooflineUsed,
    built_in_size,
    checked_hf_config,
    hf_params,
)
from llmbench.core import roofline
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt
from llmbench.core.errors import UsageError
from llmbench.core.flags import BATCH, LR, MODEL, Device, Seed, flag_like
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.results import CaseResult
from llmbench.models.sizes import SIZES

Method = Literal["sft", "rm", "dpo", "orpo", "simpo", "kto", "ppo", "rlhf"]
METHODS: tuple[str, ...] = ("sft", "rm", "dpo", "orpo", "simpo", "kto", "ppo", "rlhf")
# steps, batch (pairs, unpaired examples, sequences or prompts), learning rate
DEFAULTS: dict[str, tuple[int, int, float]] = {
    "sft": (200, 32, 1e-3), "rm": (200, 16, 1e-3), "dpo": (200, 16, 5e-4),
    "orpo": (200, 16, 5e-4), "simpo": (200, 16, 1e-4), "kto": (200, 32, 5e-4),
    "ppo": (60, 32, 3e-4), "rlhf": (60, 32, 3e-4)}
# The KL penalty's coefficient where it is not TRL's 0.05: rlhf's learned reward is exploitable
# (at 0.05 and seed 0 the policy reached learned reward 3.6 with samples of stray bytes, rule
# satisfaction 55% -> 0%, KL 22 nats; at 0.2, seeds 0 and 2: 55% -> 100%, 56% -> 98%).
KL_COEF: dict[str, float] = {"rlhf": 0.2}


_DATA = "Data and model"
_PREF = "DPO / ORPO"
_SIMPO_KTO = "SimPO / KTO"
_PPO = "PPO / RLHF"


class AlignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Annotated[Method, Opt("sft | rm | dpo | orpo | simpo | kto | ppo | rlhf",
                                  argument=True)]
    task: Annotated[Literal["even", "sorted", "reverse"], Opt(
        "The synthetic preference task: responses of only even digits / the prompt's digits "
        "sorted / the prompt reversed.", panel=_DATA)] = "even"
    data: Annotated[str | None, Opt(
        "A JSONL file of {prompt, chosen, rejected} text records instead of the task; kto "
        "also takes unpaired {prompt, completion, label} records (label true: desirable).",
        panel=_DATA)] = None
    model: Annotated[str, flag_like(MODEL, help=f"Trained here: a built-in size "
                                    f"({', '.join(SIZES)}).", panel=_DATA)] = "tiny"
    hf_config: HFConfigSpec = None
    layers: Layers = None
    attention: Attention = "sdpa"
    sft_steps: Annotated[int, Field(gt=0), Opt(
        "Steps of the reference policy's SFT stage (cached).", panel=_DATA)] = 300
    steps: Annotated[int | None, Field(gt=0), Opt(
        "Training steps (PPO: iterations).", default_text="200; ppo, rlhf: 60")] = None
    batch: Annotated[int | None, Field(gt=0), flag_like(
        BATCH, help="Pairs (rm, dpo, orpo, simpo), unpaired examples (kto), sequences (sft) or "
        "prompts (ppo) per step.", default_text="16; sft, kto, ppo: 32")] = None
    lr: Annotated[float | None, Field(gt=0), flag_like(
        LR, default_text="sft, rm 1e-3; dpo, orpo, kto 5e-4; ppo 3e-4; simpo 1e-4")] = None
    beta: Annotated[float, Field(gt=0), Opt(
        "DPO's beta (the scale of the implicit reward beta * log pi/pi_ref; IPO's tau); "
        "ORPO's lambda, the weight of its odds-ratio term (TRL names both beta); SimPO's "
        "and KTO's beta, the scale of their rewards.", panel=_PREF)] = 0.1
    loss_type: Annotated[Literal["sigmoid", "ipo", "hinge", "robust"], Opt(
        "DPO loss.", panel=_PREF)] = "sigmoid"
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5), Opt(
        "DPO label smoothing e, the chance a preference is flipped: sigmoid becomes cDPO, "
        "(1 - e) * -log s(b z) + e * -log s(-b z), as TRL <= 0.24 ran it (TRL 1.x ignores it "
        "for sigmoid); robust: the unbiased loss of robust DPO.", panel=_PREF)] = 0.0
    rpo_alpha: Annotated[float, Field(ge=0), Opt(
        "DPO: add this times the chosen responses' NLL, one cross-entropy over the batch's "
        "chosen response tokens (RPO; TRL's rpo_alpha, in TRL 1.x loss_type sft).",
        panel=_PREF)] = 0.0
    layout: Annotated[Literal["concatenated", "separate"], Opt(
        "DPO, ORPO, SimPO: how a batch's chosen and rejected rows go through the model: "
        "concatenated (TRL's: both padded to the longer, stacked, one forward, split) or "
        "separate (one forward each). Same log-probs; time and memory may differ.",
        panel=_PREF)] = "concatenated"
    precompute_ref: Annotated[bool, Opt(
        "DPO: compute the reference's log-probs once, free it, and measure the memory saved "
        "(runs both).", panel=_PREF, negatable=False)] = False
    simpo_gamma: Annotated[float, Field(ge=0), Opt(
        "SimPO's target reward margin gamma: the loss is -log s(beta * (chosen - rejected) - "
        "gamma) on per-token average log-probs, no reference (TRL's simpo_gamma).",
        panel=_SIMPO_KTO)] = 0.5
    cpo_alpha: Annotated[float, Field(ge=0), Opt(
        "SimPO: add this times the chosen responses' NLL (CPO-SimPO; TRL's cpo_alpha, which "
        "TRL's SimPO sets to 0).", panel=_SIMPO_KTO)] = 0.0
    desirable_weight: Annotated[float, Field(gt=0), Opt(
        "KTO: the weight of the desirable examples' losses (TRL's desirable_weight).",
        panel=_SIMPO_KTO)] = 1.0
    undesirable_weight: Annotated[float, Field(gt=0), Opt(
        "KTO: the weight of the undesirable examples' losses (TRL's undesirable_weight).",
        panel=_SIMPO_KTO)] = 1.0
    reward_model: Annotated[bool, Opt(
        "PPO: score with the reward model `align rm` trains (cached) instead of the task's "
        "rule.", panel=_PPO, negatable=False)] = False
    temperature: Annotated[float, Field(gt=0), Opt("Sampling temperature.", panel=_PPO)] = 0.7
    kl_coef: Annotated[float | None, Field(ge=0), Opt(
        "Per-token KL penalty coefficient (TRL's PPO default is 0.05; against a learned reward "
        "model the policy finds what it overrates at 0.05, so rlhf holds it nearer).",
        default_text="0.05; rlhf 0.2", panel=_PPO)] = None
    kl_estimator: Annotated[Literal["k1", "k3"], Opt("KL estimator of the penalty.",
                                                     panel=_PPO)] = "k1"
    ppo_epochs: Annotated[int, Field(gt=0), Opt("PPO epochs per batch.", panel=_PPO)] = 4
    train_pairs: int = Field(2048, gt=1)
    heldout_pairs: int = Field(256, gt=0)
    eval_samples: Annotated[int, Field(gt=0), Opt(
        "Held-out prompts sampled for the rule figures.")] = 256
    device: Device = None
    seed: Seed = 0

    @field_validator("model")
    @classmethod
    def _size(cls, v: str) -> str:
        return built_in_size(v)

    @field_validator("hf_config")
    @classmethod
    def _buildable(cls, v: str | None) -> str | None:
        return checked_hf_config(v)


class AlignCase(BaseModel):
    """A case's params: the resolved config (steps, batch and lr filled in, the device chosen)."""

    model_config = RECORD

    method: Method
    task: Literal["even", "sorted", "reverse"]
    data: str | None
    model: str
    hf_config: str | None = None
    layers: int | None = None
    attention: Literal["sdpa", "standard", "flex"] = "sdpa"
    sft_steps: int
    steps: int
    batch: int
    lr: float
    beta: float
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"]
    label_smoothing: float
    rpo_alpha: float
    # Results written before the option ran dpo and orpo with two forwards.
    layout: Literal["concatenated", "separate"] = "separate"
    precompute_ref: bool
    # Results written before simpo and kto ran have none of these.
    simpo_gamma: float = 0.5
    cpo_alpha: float = 0.0
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    reward_model: bool
    temperature: float
    kl_coef: float
    kl_estimator: Literal["k1", "k3"]
    ppo_epochs: int
    train_pairs: int
    heldout_pairs: int
    eval_samples: int
    device: Literal["cpu", "cuda"]
    seed: int


class PrecomputeRefSaved(BaseModel):
    """What --precompute-ref saved: dpo's figures minus dpo/precompute-ref's."""

    model_config = RECORD

    peak: float
    models: float


class AlignSummary(BaseModel):
    model_config = RECORD

    task: str | None = None
    data: str | None = None
    precompute_ref_saved_bytes: PrecomputeRefSaved | None = None
    roofline: RooflineUsed = Field(default_factory=dict)


class AlignBenchmark(Benchmark[AlignConfig]):
    name = "align"
    help = """\
    Alignment loops: what SFT, a reward model, DPO, ORPO, SimPO, KTO, PPO and RLHF cost, and that
    they work.

    Every method starts from the same reference policy (a short SFT on a 50/50 mix of rule-
    following and rule-breaking responses, cached) and reports step time, tokens/s, peak memory,
    memory per model role, held-out preference accuracy and the rule satisfaction of sampled
    generations before and after, with the whole metric history in the JSON.
    """
    run_options = ("profile", "timeout", "isolate")
    renderer = "llmbench.report.align:render"
    plot = "llmbench.report.plots:align"
    config_type = AlignConfig
    params_type = AlignCase
    summary_type = AlignSummary
    metrics = (
        *STEP_ROOFLINE,
        Metric("tokens_per_s", "tok/s", "higher", "training tokens per second", derived=True),
        Metric("peak_memory_bytes", "B", "lower", "peak memory of the training loop"),
        Metric("memory/*_bytes", "B", "lower",
               "bytes held by a model role, the optimizers' state or precomputed log-probs"),
        Metric("models_held", "1", "info", "models held while training"),
        Metric("eval/accuracy", "1", "higher", "the reward model's held-out pair accuracy"),
        # The cached reward model's figure (align rm gates it as eval/accuracy), not PPO's.
        Metric("eval/reward_model_accuracy", "1", "info",
               "held-out pair accuracy of the reward model PPO scores with"),
        Metric("eval/reward_margin", "1", "info",
               "the reward model's mean held-out reward margin"),
        Metric("eval/*_before", "1", "info", "a held-out figure of the reference, before"),
        Metric("eval/*_after", "1", "info", "a held-out figure of the trained policy"),
        Metric("eval/*_gain", "1", "info", "after - before", derived=True),
        Metric("loss_at_step0", "nats", "info", "the loss at the first step"),
        Metric("objective/*", "1", "info", "PPO's KL and scores: last, mean, first and last"),
        Metric("rollout/host_reads", "1", "info", "device-to-host reads of one rollout"),
        Metric("rollout/tokens_sampled", "1", "info", "tokens sampled by one rollout"),
        Metric("reward_model_from_cache", "1", "info", "1: the reward model came from the cache"),
        Metric("history/*", "1", "info", "a logged figure at every logged step (TRL's names)"),
    )
    case_target = "llmbench.benches.align:run_case"

    def resolve(self, config: AlignConfig, hw: HardwareInfo) -> AlignConfig:
        device = usable_device(config.device, hw)
        if config.data is not None:
            from llmbench.train.prefs import check_data

            # a malformed file is bad input, before anything runs
            check_data(config.data, method=config.method)
            if config.method == "ppo" and not config.reward_model:
                raise UsageError("--data has no rule to score generations: use ppo with "
                                 "--reward-model, or rlhf")
        steps, batch, lr = DEFAULTS[config.method]
        kl_coef = config.kl_coef if config.kl_coef is not None else KL_COEF.get(
            config.method, 0.05)
        return config.model_copy(update={
            "device": device, "steps": config.steps or steps, "batch": config.batch or batch,
            "lr": config.lr or lr, "kl_coef": kl_coef})

    def plan(self, config: AlignConfig, ctx: PlanContext) -> list[CasePlan]:
        params = {**config.model_dump(mode="json"), **hf_params(config.hf_config)}
        plans = [CasePlan(name=config.method, params=params)]
        if config.method == "dpo" and config.precompute_ref:
            # Both, so that the memory the precomputation saves is measured, not assumed.
            plans = [CasePlan(name="dpo", params={**params, "precompute_ref": False}),
                     CasePlan(name="dpo/precompute-ref", params=params)]
        return plans

    def summarize(self, config: AlignConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        summary: dict[str, Any] = {"task": config.task if config.data is None else None,
                                   "data": config.data}
        by = {c.name: c for c in cases if c.ok}
        if "dpo" in by and "dpo/precompute-ref" in by:
            a, b = by["dpo"].metrics, by["dpo/precompute-ref"].metrics
            summary["precompute_ref_saved_bytes"] = {
                "peak": a["peak_memory_bytes"] - b["peak_memory_bytes"],
                "models": a.get("memory/reference_bytes", 0)
                - b.get("memory/reference_logps_bytes", 0)}
        # fp32 steps (the methods train in fp32); a step counted by train.traffic.Tally
        cases, summary["roofline"] = roofline.apply(cases, ctx, "flops_per_step",
                                                    lambda c: "fp32")
        return cases, summary


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    from llmbench.benches.align.common import make_run

    run = make_run(payload)
    method = run.p("method")
    if method == "sft":
        from llmbench.benches.align.sft import run_sft

        return run_sft(run)
    if method == "rm":
        from llmbench.benches.align.rm import run_rm

        return run_rm(run)
    if method in ("dpo", "orpo"):
        from llmbench.benches.align.pairs import run_dpo, run_orpo

        return run_dpo(run) if method == "dpo" else run_orpo(run)
    if method == "simpo":
        from llmbench.benches.align.simpo import run_simpo

        return run_simpo(run)
    if method == "kto":
        from llmbench.benches.align.kto import run_kto

        return run_kto(run)
    from llmbench.benches.align.ppo import run_ppo

    return run_ppo(run, with_reward_model=method == "rlhf" or run.p("reward_model"))
