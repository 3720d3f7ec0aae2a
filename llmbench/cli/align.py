"""`llmbench align METHOD`: the alignment loops."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from llmbench.cli.common import (
    FailOnOption,
    FormatOption,
    IsolateOption,
    JsonOption,
    ProfileOption,
    QuietOption,
    TimeoutOption,
    build_config,
    run_and_emit,
)
from llmbench.models.sizes import SIZES

_DATA = "Data and model"
_PREF = "DPO / ORPO"
_PPO = "PPO / RLHF"


def align(
    method: Annotated[Literal["sft", "rm", "dpo", "orpo", "ppo", "rlhf"], typer.Argument(
        help="sft | rm | dpo | orpo | ppo | rlhf")],
    task: Annotated[Literal["even", "sorted", "reverse"], typer.Option(
        help="The synthetic preference task: responses of only even digits / the prompt's "
        "digits sorted / the prompt reversed.", rich_help_panel=_DATA)] = "even",
    data: Annotated[str | None, typer.Option(
        help="A JSONL file of {prompt, chosen, rejected} text records instead of the task.",
        rich_help_panel=_DATA)] = None,
    model: Annotated[str, typer.Option(help=f"Built-in model size: {', '.join(SIZES)}.",
                                       rich_help_panel=_DATA)] = "tiny",
    sft_steps: Annotated[int, typer.Option(
        help="Steps of the reference policy's SFT stage (cached).", rich_help_panel=_DATA)
    ] = 300,
    steps: Annotated[int | None, typer.Option(
        help="Training steps (PPO: iterations). [default: 200; ppo, rlhf: 60]")] = None,
    batch: Annotated[int | None, typer.Option(
        help="Pairs (rm, dpo, orpo), sequences (sft) or prompts (ppo) per step. [default: 16; "
        "sft, ppo: 32]")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate. [default: sft, rm 1e-3; dpo, orpo 5e-4; ppo 3e-4]")] = None,
    beta: Annotated[float, typer.Option(help="DPO's beta; ORPO's lambda.",
                                        rich_help_panel=_PREF)] = 0.1,
    loss_type: Annotated[Literal["sigmoid", "ipo", "hinge", "robust"], typer.Option(
        help="DPO loss.", rich_help_panel=_PREF)] = "sigmoid",
    label_smoothing: Annotated[float, typer.Option(
        help="DPO label smoothing (cDPO, robust).", rich_help_panel=_PREF)] = 0.0,
    rpo_alpha: Annotated[float, typer.Option(
        help="DPO: add this times the chosen responses' NLL (RPO; TRL's rpo_alpha).",
        rich_help_panel=_PREF)] = 0.0,
    precompute_ref: Annotated[bool, typer.Option(
        "--precompute-ref", help="DPO: compute the reference's log-probs once, free it, and "
        "measure the memory saved (runs both).", rich_help_panel=_PREF)] = False,
    reward_model: Annotated[bool, typer.Option(
        "--reward-model", help="PPO: score with the reward model `align rm` trains (cached) "
        "instead of the task's rule.", rich_help_panel=_PPO)] = False,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.",
                                               rich_help_panel=_PPO)] = 0.7,
    kl_coef: Annotated[float, typer.Option(help="Per-token KL penalty coefficient.",
                                           rich_help_panel=_PPO)] = 0.05,
    kl_estimator: Annotated[Literal["k1", "k3"], typer.Option(
        help="KL estimator of the penalty.", rich_help_panel=_PPO)] = "k1",
    ppo_epochs: Annotated[int, typer.Option(help="PPO epochs per batch.",
                                            rich_help_panel=_PPO)] = 4,
    eval_samples: Annotated[int, typer.Option(
        help="Held-out prompts sampled for the rule figures.")] = 256,
    device: Annotated[Literal["cpu", "cuda"] | None, typer.Option(
        help="[default: cuda when a usable GPU is present, else cpu]")] = None,
    seed: Annotated[int, typer.Option(help="Seed of data, weights and sampling.")] = 0,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    isolate: IsolateOption = True,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Alignment loops: what SFT, a reward model, DPO, ORPO, PPO and RLHF cost, and that they work.

    Every method starts from the same reference policy (a short SFT on a 50/50 mix of rule-
    following and rule-breaking responses, cached) and reports step time, tokens/s, peak memory,
    memory per model role, held-out preference accuracy and the rule satisfaction of sampled
    generations before and after, with the whole metric history in the JSON.
    """
    from llmbench.benches.align import AlignConfig

    cfg = build_config(
        AlignConfig, method=method, task=task, data=data, model=model, sft_steps=sft_steps,
        steps=steps, batch=batch, lr=lr, beta=beta, loss_type=loss_type,
        label_smoothing=label_smoothing, rpo_alpha=rpo_alpha, precompute_ref=precompute_ref,
        reward_model=reward_model, temperature=temperature, kl_coef=kl_coef,
        kl_estimator=kl_estimator, ppo_epochs=ppo_epochs, eval_samples=eval_samples,
        device=device, seed=seed)
    run_and_emit("align", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                 fail_on=fail_on, timeout=timeout, isolate=isolate)
