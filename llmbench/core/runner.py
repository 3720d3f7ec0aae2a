"""Run a benchmark's cases one by one, each isolated, and assemble the result document."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from llmbench import __version__
from llmbench.core import gpu_state, hardware, memory, tracing
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import unknown_keys
from llmbench.core.errors import one_line
from llmbench.core.hardware import HardwareInfo
from llmbench.core.isolate import Outcome, run_inline, run_isolated
from llmbench.core.profiles import ProfileChoice, select_profile
from llmbench.core.results import CaseResult, EnvInfo, ResultDocument, ToolInfo
from llmbench.core.units import format_bytes


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    isolate: bool = Field(True, description="run each case in its own spawned process")
    timeout_s: float = Field(600.0, gt=0, description="per-case time limit (isolated cases)")
    memory_headroom: float = Field(
        0.95, gt=0, le=1, description="a case may use this fraction of the memory free now")
    profile: str | None = Field(None, description="profile name or TOML path; default: detect")
    trace_dir: str | None = Field(
        None, description="write a torch.profiler trace of one extra call per case here")
    memory_snapshot_dir: str | None = Field(
        None, description="CUDA: write an allocator snapshot of one extra call per case here")


class Progress(Protocol):
    def begin(self, total: int) -> None: ...
    def case_started(self, plan: CasePlan) -> None: ...
    def case_progress(self, plan: CasePlan, fields: dict[str, Any]) -> None: ...
    def case_finished(self, result: CaseResult) -> None: ...
    def end(self) -> None: ...


class CaseExecutor(Protocol):
    """Runs planned cases somewhere other than one process per case (the ranks of a process
    group). Entered before the first case and left after the last, even on Ctrl-C."""

    def __enter__(self) -> CaseExecutor: ...
    def __exit__(self, *exc: object) -> None: ...
    def run(self, plan: CasePlan,
            on_progress: Callable[[dict[str, Any]], None] | None) -> Outcome: ...


ExecutorFactory = Callable[[Benchmark, BaseModel, list[CasePlan], str], CaseExecutor]


class Interrupted(Exception):  # noqa: N818 - it is a control-flow signal, like KeyboardInterrupt
    """Ctrl-C during a run; `document` holds the cases that finished."""

    def __init__(self, document: ResultDocument) -> None:
        super().__init__("interrupted")
        self.document = document


def build_env(hw: HardwareInfo, choice: ProfileChoice, device: str) -> EnvInfo:
    gpu = hw.gpu if device == "cuda" else None
    return EnvInfo(
        device=device,
        gpu_name=gpu.name if gpu else None,
        compute_capability=".".join(map(str, gpu.compute_capability)) if gpu else None,
        gpu_memory_bytes=gpu.memory_total_bytes if gpu else None,
        sm_count=gpu.sm_count if gpu else None,
        driver=hw.driver,
        cuda=hw.torch_cuda,
        cuda_driver=hw.cuda_driver,
        cudnn=hw.cudnn,
        torch=hw.torch,
        triton=hardware.package_version("triton"),
        flash_attn=hardware.package_version("flash_attn"),
        cpu_model=hw.cpu.model,
        cores=hw.cpu.usable_cores,
        cpu_isa=hw.cpu.isa,
        ram_bytes=hw.cpu.ram_total_bytes,
        git_commit=hardware.git_commit(),
        profile=choice.profile.name,
        profile_source=choice.profile.source,
        profile_reason=choice.reason,
        memory_method="cuda-allocator" if device == "cuda" else memory.cpu_method(),
        **gpu_state.process_settings(),
        **(gpu_state.gpu_settings(gpu.uuid) if gpu else dict.fromkeys(gpu_state.GPU_FIELDS)),
    )


def _result(plan: CasePlan, outcome: Outcome) -> CaseResult:
    metrics: dict[str, Any] = {}
    if outcome.status == "ok" and isinstance(outcome.value, dict):
        metrics = dict(outcome.value)
    trace = metrics.pop(tracing.KEY, None)  # what --trace found: the case's, not a metric
    if plan.predicted_memory_bytes is not None:
        metrics.setdefault("predicted_memory_bytes", plan.predicted_memory_bytes)
    return CaseResult(name=plan.name, params=plan.params, status=outcome.status,
                      reason=outcome.reason, metrics=metrics, trace=trace)


def run_case(bench: Benchmark, plan: CasePlan, options: RunOptions, device: str,
             on_progress: Callable[[dict[str, Any]], None] | None = None,
             executor: CaseExecutor | None = None, gpu_uuid: str | None = None) -> CaseResult:
    """Run one case. On a CUDA device its process samples the GPU at the case's start and end
    (`gpu_state.run_sampled`), except under an `executor`."""
    if plan.unavailable:
        return _result(plan, Outcome("unavailable", reason=plan.unavailable))
    if plan.required_memory_bytes:
        free = hardware.available_memory_bytes(device)
        if free is not None and plan.required_memory_bytes > free * options.memory_headroom:
            return _result(plan, Outcome("skipped", reason=(
                f"needs about {format_bytes(plan.required_memory_bytes)}, "
                f"{format_bytes(free)} free on {device}")))
    payload, target = plan.payload(), plan.target or bench.case_target
    trace = payload.pop(tracing.KEY, None)  # read where the case is called: the outermost
    if plan.params.get("device", device) == "cuda":
        target, payload = gpu_state.sampled(target, payload, gpu_uuid)
    if trace is not None:
        payload = {**payload, tracing.KEY: trace}
    if executor is not None:
        outcome = executor.run(plan, on_progress)
    elif options.isolate and bench.isolated:
        outcome = run_isolated(target, payload, timeout_s=options.timeout_s,
                               on_progress=on_progress)
    else:
        outcome = run_inline(target, payload, on_progress=on_progress)
    return _result(plan, outcome)


def _traced(plans: list[CasePlan], options: RunOptions, device: str) -> list[CasePlan]:
    """The plans, each carrying its --trace / --memory-snapshot request in its run_args (so
    that every executor sends it along); the directories made and checked first (UsageError)."""
    if not (options.trace_dir or options.memory_snapshot_dir):
        return plans
    snapshots = None
    if options.memory_snapshot_dir:
        tracing.check_snapshot_device(device)
        snapshots = tracing.writable_dir(options.memory_snapshot_dir, "--memory-snapshot")
    traces = (tracing.writable_dir(options.trace_dir, "--trace") if options.trace_dir
              else None)
    return [dataclasses.replace(plan, run_args={
                **plan.run_args,
                tracing.KEY: tracing.request(name, trace_dir=traces, snapshot_dir=snapshots)})
            for plan, name in zip(plans, tracing.stems(p.name for p in plans), strict=True)]


# Set to 1 (the test suite does) to turn a metric a benchmark reports without declaring it
# into an error of its case: a metric `compare` cannot judge is caught where it is added.
STRICT_METRICS = "LLMBENCH_STRICT_METRICS"


def undeclared_metrics(bench: Benchmark, case: CaseResult) -> list[str]:
    return [name for name in case.metrics if bench.metric(name) is None]


def _declared_only(bench: Benchmark, case: CaseResult) -> CaseResult:
    problem = _params_problem(bench, case.params)
    names = undeclared_metrics(bench, case) if case.status == "ok" else []
    if names:
        problem = (f"undeclared metric(s) {', '.join(names)}: declare them in "
                   f"{type(bench).__name__}.metrics")
    if problem is None:
        return case
    return case.model_copy(update={"status": "error", "reason": problem})


def _params_problem(bench: Benchmark, params: dict[str, Any]) -> str | None:
    """Why `params` do not match the benchmark's declared params type, or None."""
    if bench.params_type is None:
        return None
    unknown = unknown_keys(bench.params_type, params)
    if unknown:
        return (f"undeclared param(s) {', '.join(unknown)}: declare them in "
                f"{bench.params_type.__name__}")
    try:
        bench.params_type.model_validate(params)
    except ValueError as exc:
        return f"params do not match {bench.params_type.__name__}: {one_line(str(exc))}"
    return None


def _check_summary(bench: Benchmark, summary: dict[str, Any]) -> None:
    if bench.summary_type is None or not summary:
        return
    unknown = unknown_keys(bench.summary_type, summary)
    if unknown:
        raise RuntimeError(f"undeclared summary field(s) {', '.join(unknown)}: declare them "
                           f"in {bench.summary_type.__name__}")
    bench.summary_type.model_validate(summary)


def run_benchmark(bench: Benchmark, config: BaseModel, *, options: RunOptions | None = None,
                  progress: Progress | None = None, hw: HardwareInfo | None = None,
                  executor: ExecutorFactory | None = None) -> ResultDocument:
    """Plan, run and summarize. Ctrl-C raises `Interrupted` carrying the finished cases.

    `executor(bench, config, plans, device)`: where the cases run instead of one (isolated)
    process each, such as the ranks of a torch.distributed group.
    """
    options = options or RunOptions()
    hw = hw or hardware.detect()
    config = bench.resolve(config, hw)
    device = bench.device_of(config, hw)
    choice = select_profile(hw, options.profile, device)
    ctx = PlanContext(hw=hw, profile=choice.profile, device=device)
    plans = _traced(bench.plan(config, ctx), options, device)
    env = build_env(hw, choice, device)

    def document(cases: list[CaseResult]) -> ResultDocument:
        cases, summary = bench.summarize(config, cases, ctx)
        if os.environ.get(STRICT_METRICS) == "1":
            cases = [_declared_only(bench, c) for c in cases]
            _check_summary(bench, summary)
        return ResultDocument(tool=ToolInfo(version=__version__), benchmark=bench.name,
                              env=env, config=config.model_dump(mode="json"), cases=cases,
                              summary=summary)

    done: list[CaseResult] = []
    if progress:
        progress.begin(len(plans))
    try:
        with (executor(bench, config, plans, device) if executor
              else contextlib.nullcontext()) as running:
            for plan in plans:
                if progress:
                    progress.case_started(plan)
                on_progress = ((lambda fields, p=plan: progress.case_progress(p, fields))
                               if progress else None)
                result = run_case(bench, plan, options, device, on_progress, running,
                                  gpu_uuid=hw.gpu.uuid if hw.gpu else None)
                done.append(result)
                if progress:
                    progress.case_finished(result)
    except KeyboardInterrupt:
        if progress:
            progress.end()
        raise Interrupted(document(done)) from None
    if progress:
        progress.end()
    return document(done)
