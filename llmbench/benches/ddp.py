"""`llmbench ddp`: what data parallelism costs per step and per rank, measured and predicted.

Every rank trains the same built-in model (or --hf-config architecture; same seed) on its own
synthetic batch with AdamW.

- ddp: DistributedDataParallel. The step, the step inside `no_sync()` (the same compute with
  no gradient all-reduce) and an all_reduce of the gradients' bytes alone. Steps are timed one
  by one (a step is long beside its dispatch, and a sample is the slowest rank's step: the
  step ends when that rank does); the lone all_reduce as `llmbench comm` times collectives
  (nccl-tests' windows of back-to-back calls after a barrier, averaged over the ranks). The exposed
  communication is step - no_sync; its share of the step is what the backward pass did not
  hide behind computation.
- fsdp: FSDP2 (`fully_shard` on every block and the root): parameters, gradients and
  optimizer states sharded, i.e. ZeRO stage 3.

For both, per rank: the peak memory a step adds above what the rank already holds
(`llmbench.core.memory.measure_peak`), the absolute peak over that step (CUDA: the caching
allocator's max allocated and max reserved bytes; CPU: the process's resident-set high-water
mark), and the model-state bytes it holds (weights + gradients + optimizer states, counted from
its tensors) next to ZeRO's formula for the matching stage (`llmbench.train.zero`, plus torch's
4-byte step counter per parameter tensor). The absolute figures include the model states, so
FSDP's sharding shows in them; the added peak does not. Correctness: after one backward pass
the (reduced) gradients must equal those of one process computing the loss over the global
batch (every rank's batch), accumulated one rank's batch at a time (`reference_gradients`).

The summary holds ZeRO's per-rank model-state memory for stages 0-3, for the built-in model
as run here and for presets such as llama-3-8b.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from llmbench.benches.distributed import GROUP_PANEL, Backend, DistConfig, DistributedBenchmark
from llmbench.benches.training import (
    MODEL_PANEL,
    TrainingCase,
    TrainingConfig,
    case_params,
    resolve_device,
    run_args,
)
from llmbench.core.benchmark import CasePlan, PlanContext
from llmbench.core.declare import ERROR_FLOOR, RECORD, Metric, Opt
from llmbench.core.flags import BATCH, flag_like
from llmbench.core.hardware import HardwareInfo
from llmbench.core.results import CaseResult
from llmbench.core.timing import lockstep_policy
from llmbench.models.presets import PRESETS
from llmbench.train import zero

STRATEGIES = ("ddp", "fsdp")
AR_WINDOWS = 3  # timed windows of the gradients' all_reduce
ZERO_STAGE = {"ddp": 0, "fsdp": 3}
RUN_SCHEME = zero.StateBytes(4, 4, 8, "fp32 weights, gradients, AdamW m and v (as run here)")


class DDPConfig(TrainingConfig, DistConfig):
    batch: Annotated[int, Field(gt=0), flag_like(BATCH, help="Per rank per step.",
                                                 panel=MODEL_PANEL)] = 8
    warmup: Annotated[int, Field(ge=0), Opt("Untimed steps first.", panel=GROUP_PANEL)] = 3
    iters: Annotated[int, Field(ge=1), Opt(
        "Timed steps per strategy; every rank takes exactly as many.", panel=GROUP_PANEL)] = 10
    strategies: Annotated[list[Literal["ddp", "fsdp"]], Opt(
        "ddp (DistributedDataParallel), fsdp (FSDP2 fully_shard).", default_text="both")
    ] = list(STRATEGIES)
    zero_models: Annotated[list[str], Opt(
        f"Also show ZeRO's per-rank memory for these presets ({', '.join(PRESETS)}).")
    ] = ["llama-3-8b"]
    zero_scheme: Annotated[Literal["mixed", "fp32", "bf16"], Opt(
        "Bytes per parameter of the presets' rows: mixed (2+2+12, the ZeRO paper's), fp32 "
        "(4+4+8), bf16 (2+2+4).")] = "mixed"
    zero_ranks: Annotated[list[int] | None, Opt("Rank counts of the ZeRO table, e.g. 8,64.",
                                                default_text="this run's")] = None

    @field_validator("zero_models")
    @classmethod
    def _presets(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in PRESETS:
                raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return list(dict.fromkeys(v))

    @field_validator("strategies")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("no strategies given")
        return list(dict.fromkeys(v))

    @field_validator("zero_ranks")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(n < 1 for n in v):
            raise ValueError("rank counts must be at least 1")
        return v


class DDPCase(TrainingCase):
    """A case's params (`case_params`): one strategy on the group's ranks."""

    strategy: Literal["ddp", "fsdp"]
    nproc: int
    backend: Backend


class ZeroRow(BaseModel):
    """One row of the ZeRO table: a model's per-rank model-state bytes at stages 0-3."""

    model_config = RECORD

    model: str
    params: int
    scheme: str
    ranks: int
    bytes_per_param: list[int]
    bytes_per_rank: dict[str, float]


class DDPSummary(BaseModel):
    model_config = RECORD

    params: int = 0
    zero: list[ZeroRow] = []
    zero_formula: str | None = None


def zero_rows(params: int, name: str, scheme: str | zero.StateBytes, label: str,
              ranks: list[int]) -> list[dict[str, Any]]:
    s = zero.SCHEMES[scheme] if isinstance(scheme, str) else scheme
    return [{"model": name, "params": params, "scheme": label, "ranks": n,
             "bytes_per_param": [s.weights, s.grads, s.optimizer],
             "bytes_per_rank": {str(stage): zero.per_rank_bytes(params, n, stage, s)
                                for stage in zero.STAGES}}
            for n in ranks]


class DDPBenchmark(DistributedBenchmark[DDPConfig]):
    name = "ddp"
    help = """Data-parallel training steps: time, communication, memory, ZeRO.

    The built-in model, or an --hf-config architecture. Per strategy: step time, the step
    without gradient sync (DDP's no_sync) and the share of the step that communication adds, an
    all_reduce of the gradients alone, peak memory per rank, the model-state bytes each rank
    holds next to ZeRO's formula (DDP = stage 0, FSDP = stage 3), and the gradients checked
    against one process training on the global batch.
    """
    renderer = "llmbench.report.dist:render_ddp"
    no_plot = "two strategies and a ZeRO table: nothing to draw a line through"
    config_type = DDPConfig
    params_type = DDPCase
    summary_type = DDPSummary
    metrics = (
        Metric("tokens_per_s", "tok/s", "higher", "tokens per second over all ranks",
               derived=True),
        Metric("no_sync_time_ms", "ms", "lower", "the step inside no_sync() (no gradient sync)"),
        Metric("allreduce_time_ms", "ms", "lower", "an all_reduce of the gradients alone"),
        Metric("comm_exposed_ms", "ms", "lower", "step time - no_sync step time",
               derived=True),
        Metric("comm_share_pct", "%", "lower", "comm_exposed_ms as a share of the step",
               derived=True),
        Metric("gradient_bytes", "B", "info", "bytes of every fp32 gradient (global sizes)"),
        Metric("peak_memory_bytes", "B", "lower", "the largest rank's step peak above its state"),
        Metric("peak_allocated_bytes", "B", "lower", "the largest rank's max allocated (CUDA)"),
        # Absolute, and left over from the cases before (the allocator's cache, the process's
        # resident set): information; peak_memory_bytes gates the step.
        Metric("peak_reserved_bytes", "B", "info", "the largest rank's max reserved (CUDA)"),
        Metric("peak_rss_bytes", "B", "info", "the largest rank's resident-set peak (CPU)"),
        Metric("model_state_bytes", "B", "lower",
               "the largest rank's weights + gradients + optimizer state"),
        Metric("*_bytes_per_rank", "B", "info", "the figure of each rank"),
        Metric("predicted_state_bytes", "B", "info", "ZeRO's formula for model_state_bytes"),
        Metric("zero_stage", "1", "info", "the ZeRO stage of the strategy"),
        Metric("grad_max_abs_error", "abs", "lower",
               "max |gradient - one process's on the global batch|", family="error",
               floor=ERROR_FLOOR),
        Metric("grad_rel_error", "rel", "lower",
               "grad_max_abs_error / the reference's max |gradient|", family="error",
               derived=True),
    )
    case_target = "llmbench.benches.ddp:run_case"

    def resolve(self, config: DDPConfig, hw: HardwareInfo) -> DDPConfig:
        device = resolve_device(config, hw)
        group = self.group_settings(config, hw, device)
        return config.model_copy(update={
            **group, "device": device,
            "timing": lockstep_policy(warmup=config.warmup, iters=config.iters),
            "zero_ranks": config.zero_ranks or [group["nproc"]]})

    def plan(self, config: DDPConfig, ctx: PlanContext) -> list[CasePlan]:
        return [CasePlan(name=s,
                         params=case_params(config, strategy=s, nproc=config.nproc,
                                            backend=config.backend),
                         run_args=run_args(config))
                for s in config.strategies]

    def summarize(self, config: DDPConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        from llmbench.benches.optim import parameter_count

        params = config.hf_params() if config.hf is not None else parameter_count(config.model)
        rows = zero_rows(params, config.model_name, RUN_SCHEME, "4+4+8 (fp32 AdamW)",
                         config.zero_ranks)
        scheme = zero.SCHEMES[config.zero_scheme]
        label = f"{scheme.weights}+{scheme.grads}+{scheme.optimizer} ({config.zero_scheme})"
        for name in config.zero_models:
            rows += zero_rows(PRESETS[name].params, name, config.zero_scheme, label,
                              config.zero_ranks)
        return cases, {"params": params, "zero": rows,
                       "zero_formula": "stage 0 (w+g+K)Ψ; 1 (w+g)Ψ + KΨ/N; 2 wΨ + (g+K)Ψ/N; "
                                       "3 (w+g+K)Ψ/N (Rajbhandari et al., 2020)"}


# ------------------------------------------------------------------ one case, on every rank


def _local_bytes(t: Any) -> int:
    """Bytes of this rank's part of a tensor (a DTensor's local shard)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def _full(t: Any) -> Any:
    """The whole tensor (a DTensor's gather: a collective)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _fully_shard() -> Any:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        try:
            from torch.distributed._composable.fsdp import fully_shard
        except ImportError:
            import torch

            from llmbench.core.errors import CaseUnavailable
            raise CaseUnavailable(f"FSDP2 (fully_shard) is not in torch {torch.__version__}; "
                                  "it needs torch 2.4 or later") from None
    return fully_shard


def shard_model(model: Any, device: str) -> Any:
    """FSDP2 (`fully_shard`) on every block and on the root, over all the group's ranks, on a
    mesh built for `device` ("cpu" or "cuda"). Without `mesh=`, fully_shard builds its mesh for
    the host's accelerator and moves the parameters there, even under `--device cpu`."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from llmbench.train.loop import device_of

    shard = _fully_shard()
    mesh = init_device_mesh(device_of(device).type, (dist.get_world_size(),))
    for block in model.layers:
        shard(block, mesh=mesh)
    shard(model, mesh=mesh)
    return model


def reference_gradients(params: dict[str, Any], seed: int, batches: list[Any]) -> list[Any]:
    """The gradients of one process's mean loss over all `batches` (equal-sized, one per rank),
    accumulated one batch at a time: the sum over r of grad(lm_loss(batch_r) / N). Each rank's
    loss is the mean over its batch, and DDP and FSDP average the ranks' gradients, so theirs
    is (1/N) sum_r grad(mean_r) -- the same, and, with equal batch sizes, the gradient of the
    mean over the global batch. One batch's activations are alive at a time, as in training,
    where a forward pass over the concatenated batches would hold N times as many."""
    from llmbench.train.case import model_of
    from llmbench.train.loop import device_of, lm_loss

    reference = model_of(params, seed)  # the case's model (params: its case_params)
    for tokens in batches:
        (lm_loss(reference, tokens.to(device_of(params["device"]))) / len(batches)).backward()
    return [q.grad for q in reference.parameters()]


def absolute_peaks(fn: Any, device: str) -> tuple[Any, dict[str, int]]:
    """Run `fn()`; return its result and this process's absolute peaks during it, not minus
    what was held before: CUDA, the caching allocator's max allocated and max reserved bytes
    (peak statistics reset first); CPU, the resident-set high-water mark (Linux)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = fn()
        torch.cuda.synchronize()
        return result, {"allocated": int(torch.cuda.max_memory_allocated()),
                        "reserved": int(torch.cuda.max_memory_reserved())}
    from llmbench.core.memory import rss_high_water

    result, hwm = rss_high_water(fn)
    return result, {} if hwm is None else {"rss": hwm}


# Absolute per-rank peaks: the metric each one is reported as (with a `_per_rank` list).
ABSOLUTE_METRICS = {"allocated": "peak_allocated_bytes", "reserved": "peak_reserved_bytes",
                    "rss": "peak_rss_bytes"}


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    """One strategy's case on every rank: the gradients checked against one process on the
    global batch, then one step measured for memory and the steps timed in lock step."""
    from llmbench.core.memory import measure_peak
    from llmbench.dist import group
    from llmbench.train.optimizers import STEP_BYTES

    p = payload["params"]
    n, strategy = group.world_size(), p["strategy"]
    wrapped, optimizer, tokens, timing, errors = _wrapped_and_checked(payload)

    def step() -> object:
        return _train_step(wrapped, optimizer, tokens)

    with group.collective():
        step()
        # One step measured twice over: what it adds above the rank's state, and absolute.
        (_, absolute), peak = measure_peak(lambda: absolute_peaks(step, p["device"]),
                                           device=p["device"])
        params = list(wrapped.parameters())
        grad_bytes = sum(q.numel() * 4 for q in params)  # every fp32 gradient (global sizes)
        slowest, metrics = _timed_steps(strategy, wrapped, optimizer, tokens, step, timing,
                                        p["device"], grad_bytes)
        per_rank = group.gather({"peak": peak.peak_bytes,
                                 "state": _state_bytes(params, optimizer),
                                 "absolute": absolute, **errors})
    stage = ZERO_STAGE[strategy]
    numel = sum(q.numel() for q in params)  # a DTensor reports its global size
    predicted = zero.per_rank_bytes(numel, n, stage, RUN_SCHEME) + STEP_BYTES * len(params)
    return {
        **metrics,
        "time_ms": slowest.model_dump(),
        "tokens_per_s": n * p["batch"] * p["seq"] / (slowest.median / 1e3),
        "gradient_bytes": grad_bytes,
        "peak_memory_bytes": max(r["peak"] for r in per_rank),
        "peak_memory_bytes_per_rank": [float(r["peak"]) for r in per_rank],
        **_absolute_metrics(per_rank),
        "model_state_bytes": max(r["state"] for r in per_rank),
        "model_state_bytes_per_rank": [float(r["state"]) for r in per_rank],
        "predicted_state_bytes": predicted,
        "zero_stage": stage,
        "grad_max_abs_error": max(r["error"] for r in per_rank),
        "grad_rel_error": max(r["rel"] for r in per_rank),
    }


def _train_step(wrapped: Any, optimizer: Any, tokens: Any) -> object:
    from llmbench.train.loop import train_step

    return train_step(wrapped, optimizer, tokens)


def _wrapped_and_checked(payload: dict[str, Any]) -> tuple[Any, Any, Any, Any, dict[str, float]]:
    """The model wrapped by the case's strategy, its AdamW, this rank's batch and timing, and
    its first gradient's max abs and relative error against one process on the global batch
    (`reference_gradients`)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from llmbench.dist import group
    from llmbench.train.case import setup
    from llmbench.train.data import synthetic_batches
    from llmbench.train.loop import lm_loss

    p = payload["params"]
    n, rank = group.world_size(), group.rank()
    with group.local():
        s = setup(payload, seed_offset=rank)  # same weights everywhere, this rank's own batch
        model, tokens = s.model, s.batches[0]
        if p["strategy"] == "fsdp":
            _fully_shard()  # torch without FSDP2: unavailable, agreed on by every rank
        # The reference: one process, the loss over every rank's batch (the batches `setup`
        # makes on each rank), its gradient accumulated one batch at a time.
        expected = reference_gradients(p, payload["seed"], [
            synthetic_batches(vocab=model.cfg.vocab_size, batch=p["batch"], seq=p["seq"],
                              count=1, seed=payload["seed"] + 1 + r)[0] for r in range(n)])
    with group.collective():  # DDP broadcasts rank 0's weights and checks shapes across ranks
        if p["strategy"] == "ddp":
            wrapped = DistributedDataParallel(
                model, device_ids=[torch.cuda.current_device()] if p["device"] == "cuda"
                else None)
        else:
            wrapped = shard_model(model, p["device"])
        lm_loss(wrapped, tokens).backward()
        grads = [_full(q.grad) for q in wrapped.parameters()]
    with group.local():
        diff = max(float((g - e).abs().max()) for g, e in zip(grads, expected, strict=True))
        scale = max(float(e.abs().max()) for e in expected)
        optimizer = torch.optim.AdamW(wrapped.parameters(), lr=s.lr)
        del grads, expected
    return wrapped, optimizer, tokens, s.timing, {"error": diff,
                                                  "rel": diff / scale if scale else 0.0}


def _state_bytes(params: list[Any], optimizer: Any) -> int:
    """Weights, gradients and optimizer states this rank holds (its shards under FSDP)."""
    import torch

    return (sum(_local_bytes(q) for q in params)
            + sum(_local_bytes(q.grad) for q in params if q.grad is not None)
            + sum(_local_bytes(v) for q in params for v in optimizer.state.get(q, {}).values()
                  if isinstance(v, torch.Tensor)))


def _timed_steps(strategy: str, wrapped: Any, optimizer: Any, tokens: Any, step: Any,
                 timing: Any, device: str, grad_bytes: int) -> tuple[Any, dict[str, Any]]:
    """(the slowest rank's step times, DDP's extra figures): under DDP a synced and an
    unsynced step in turn, so drift hits both alike, and the gradients' all_reduce alone,
    timed as `llmbench comm` times it (nccl-tests' windows)."""
    import torch

    from llmbench.core.timing import TimeStats, measure, measure_interleaved, measure_windows
    from llmbench.dist import group
    from llmbench.train.loop import device_of

    if strategy != "ddp":
        return group.slowest_calls(measure(step, device=device, policy=timing).samples), {}

    def no_sync_step() -> object:
        with wrapped.no_sync():
            return _train_step(wrapped, optimizer, tokens)

    both = measure_interleaved({"sync": step, "no_sync": no_sync_step}, device=device,
                               warmup=timing.min_warmup_runs, iters=timing.max_runs)
    slowest = group.slowest_calls(both["sync"].samples)
    no_sync = group.slowest_calls(both["no_sync"].samples)
    flat = torch.zeros(grad_bytes // 4, device=device_of(device))
    ar = measure_windows(lambda: torch.distributed.all_reduce(flat), device=device,
                         warmup=timing.min_warmup_runs, ops=timing.max_runs,
                         windows=AR_WINDOWS, barrier=group.barrier)
    allreduce = TimeStats.from_samples(group.mean_across_ranks(ar.samples)[0])
    exposed = slowest.median - no_sync.median
    from llmbench.core import tracing

    tracing.after_timing(step, device)  # --trace: one more synced step, on every rank
    return slowest, {"no_sync_time_ms": no_sync.model_dump(),
                     "allreduce_time_ms": allreduce.model_dump(),
                     "comm_exposed_ms": exposed,
                     "comm_share_pct": 100.0 * exposed / slowest.median}


def _absolute_metrics(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The absolute peaks every rank reported: the largest, and one per rank."""
    out: dict[str, Any] = {}
    for key, name in ABSOLUTE_METRICS.items():
        if all(key in r["absolute"] for r in per_rank):
            out[name] = max(r["absolute"][key] for r in per_rank)
            out[f"{name}_per_rank"] = [float(r["absolute"][key]) for r in per_rank]
    return out
