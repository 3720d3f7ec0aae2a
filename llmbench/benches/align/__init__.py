"""`llmbench align sft | rm | dpo | orpo | ppo | rlhf`: short, real alignment loops.

Each method is one case (its own process): it starts from the reference policy (a short SFT on
a 50/50 mix of rule-following and rule-breaking responses, cached), trains for `steps` steps,
and reports what it cost (step time, tokens/s, peak memory, bytes per model role, how many
models it holds) and whether behaviour moved (held-out preference accuracy, the rule
satisfaction of sampled generations, before and after), with the whole metric history.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo, usable_device
from llmbench.core.results import CaseResult
from llmbench.models.sizes import SIZES

Method = Literal["sft", "rm", "dpo", "orpo", "ppo", "rlhf"]
METHODS: tuple[str, ...] = ("sft", "rm", "dpo", "orpo", "ppo", "rlhf")
# steps, batch (pairs, sequences or prompts), learning rate
DEFAULTS: dict[str, tuple[int, int, float]] = {
    "sft": (200, 32, 1e-3), "rm": (200, 16, 1e-3), "dpo": (200, 16, 5e-4),
    "orpo": (200, 16, 5e-4), "ppo": (60, 32, 3e-4), "rlhf": (60, 32, 3e-4)}


class AlignConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    task: Literal["even", "sorted", "reverse"] = "even"
    data: str | None = Field(None, description="a JSONL file of prompt/chosen/rejected records")
    model: str = "tiny"
    steps: int | None = Field(None, gt=0, description="None: the method's default")
    batch: int | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    beta: float = Field(0.1, gt=0, description="DPO's beta, ORPO's lambda")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    rpo_alpha: float = Field(0.0, ge=0, description="DPO: weight of an NLL term on chosen "
                             "responses (RPO, TRL's rpo_alpha); 0 is plain DPO")
    precompute_ref: bool = False
    reward_model: bool = Field(False, description="ppo: score with a learned reward model")
    temperature: float = Field(0.7, gt=0, description="sampling temperature (TRL's default)")
    kl_coef: float = Field(0.05, ge=0)
    kl_estimator: Literal["k1", "k3"] = "k1"
    ppo_epochs: int = Field(4, gt=0)
    sft_steps: int = Field(300, gt=0, description="steps of the reference's SFT stage")
    train_pairs: int = Field(2048, gt=1)
    heldout_pairs: int = Field(256, gt=0)
    eval_samples: int = Field(256, gt=0)
    device: Literal["cpu", "cuda"] | None = None
    seed: int = 0

    @field_validator("model")
    @classmethod
    def _size(cls, v: str) -> str:
        if v not in SIZES:
            raise ValueError(f"unknown model size {v!r} (choose from {', '.join(SIZES)})")
        return v


class AlignBenchmark(Benchmark[AlignConfig]):
    name = "align"
    config_type = AlignConfig
    case_target = "llmbench.benches.align:run_case"

    def resolve(self, config: AlignConfig, hw: HardwareInfo) -> AlignConfig:
        device = usable_device(config.device, hw)
        if config.data is not None:
            from llmbench.train.prefs import load_jsonl

            load_jsonl(config.data)  # a malformed file is bad input, before anything runs
            if config.method == "ppo" and not config.reward_model:
                raise UsageError("--data has no rule to score generations: use ppo with "
                                 "--reward-model, or rlhf")
        steps, batch, lr = DEFAULTS[config.method]
        return config.model_copy(update={
            "device": device, "steps": config.steps or steps, "batch": config.batch or batch,
            "lr": config.lr or lr})

    def plan(self, config: AlignConfig, ctx: PlanContext) -> list[CasePlan]:
        params = config.model_dump(mode="json")
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
    from llmbench.benches.align.ppo import run_ppo

    return run_ppo(run, with_reward_model=method == "rlhf" or run.p("reward_model"))
