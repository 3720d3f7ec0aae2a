"""`llmbench tune attention`: measure llmbench's Triton kernel over tile configs, keep the best;
or, with `compile_only`, compile the kernels for GPU targets that are not here and say whether
each tile fits.

Timing: the space is block_m x block_n x num_warps x num_stages for the forward tile (the
backward tiles stay the profile's). Every config's kernels are first compiled for this GPU
(`llmbench.kernels.triton_aot`, several at a time), and a config whose compiled shared memory
or registers exceed what the device gives a block is recorded as skipped, with the figure, and
not run. Each remaining config is an ordinary attention case (isolated, timed by the core,
checked against fp64). The winners per head dim become a profile TOML that `--profile PATH`
accepts.

Compile-only: one case per (target, head dim, kernel, tile), each compiling that kernel in its
own process for the target (no GPU needed) and reporting its shared memory against the
target's per-block limit, its registers and its stack frame. The tiles are the profile's for
that target (forward, and the dK/dV and dQ tiles of the backward), or with `grid` the search
space. A profile tile that does not fit is an `error` case; a grid tile that does not fit is
`skipped`.

On a CPU, tuning means nothing (the kernel is compiled for a GPU); `interpret` runs a functional
dry run of two configs at a tiny shape through Triton's interpreter instead.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.benches.attention import TILE_KEYS, AttentionBenchmark, AttentionConfig
from llmbench.core.benchmark import Benchmark, CasePlan, PlanContext
from llmbench.core.declare import RECORD, Metric, Opt, flag_of
from llmbench.core.errors import UsageError, first_problem
from llmbench.core.flags import BATCH, DTYPE, HEADS, SEQ, Device, flag_like
from llmbench.core.hardware import HardwareInfo, gpu_default_dtype
from llmbench.core.profiles import (
    AttentionTile,
    KernelTile,
    Profile,
    ProfileError,
    load_profile,
    peak_toml,
    shipped_profiles,
    tile_toml,
)
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy
from llmbench.kernels.triton_aot import ARCHS

DRY_RUN_CONFIGS = [(16, 16, 1, 1), (32, 16, 2, 1)]
FORWARD = ["fwd"]
BACKWARD = ["bwd_delta", "bwd_dkdv", "bwd_dq"]
COMPILE_TARGET = "llmbench.benches.tune:run_compile_case"


_SPACE = "Search space"
_COMPILE = "Compile only (no GPU needed)"


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    head_dims: Annotated[list[int] | None, Field(min_length=1), Opt(
        "Head dims, e.g. 64,128.", default_text="64,128 when timing; with --compile-only the "
        "top of every head-dim range the profile covers")] = None
    seq: Annotated[int, Field(gt=0), flag_like(SEQ, help="Of the timed shape.")] = 4096
    batch: Annotated[int, Field(gt=0), flag_like(BATCH, help="Of the timed shape.")] = 4
    heads: Annotated[int, Field(gt=0), flag_like(HEADS, help="Of the timed shape.")] = 16
    dtype: Annotated[Literal["fp32", "fp16", "bf16"] | None, flag_like(
        DTYPE, default_text="bf16 on compute capability 8.0 and newer, else fp16")] = None
    causal: bool = True
    mode: Annotated[Literal["fwd", "fwd+bwd"] | None, Opt(
        "The forward pass, or forward + backward.",
        default_text="fwd when timing, fwd+bwd with --compile-only")] = None
    block_m: Annotated[list[int], Opt("Values of block_m to try.", panel=_SPACE)] = [32, 64, 128]
    block_n: Annotated[list[int], Opt("Values of block_n to try.", panel=_SPACE)] = [32, 64, 128]
    num_warps: Annotated[list[int], Opt("Values of num_warps to try.", flag="--warps",
                                        panel=_SPACE)] = [4, 8]
    num_stages: Annotated[list[int], Opt("Values of num_stages to try.", flag="--stages",
                                         panel=_SPACE)] = [1, 2, 3, 4]
    interpret: Annotated[bool, Opt(
        "No GPU: a functional dry run of two configs at a tiny shape through Triton's "
        "interpreter on the CPU.", negatable=False)] = False
    compile_only: Annotated[bool, Opt(
        "Compile the forward and backward kernels for GPU targets with Triton's bundled "
        "ptxas, time nothing, and report each tile's shared memory against the target's "
        "per-block limit, its registers and stack frame. Exit 1 when a profile's tile does "
        "not fit.", panel=_COMPILE, negatable=False)] = False
    archs: Annotated[list[str] | None, Opt(
        f"Targets for --compile-only: {', '.join(ARCHS)}.", flag="--arch",
        default_text="all of them", panel=_COMPILE)] = None
    grid: Annotated[bool, Opt(
        "With --compile-only: compile the search space (--block-m ... --stages) for every "
        "kernel instead of the profile's tiles; what does not fit is skipped.",
        panel=_COMPILE, negatable=False)] = False
    jobs: Annotated[int | None, Field(ge=1), Opt(
        "With --compile-only: compiles at once.", short="-j",
        default_text="the CPUs this process may use", panel=_COMPILE)] = None
    write_profile: Annotated[Path | None, Opt(
        "Write the winners as a profile TOML that --profile accepts.")] = None
    device: Device = None
    timing: TimingPolicy = Field(default_factory=lambda: TimingPolicy(max_time_s=2.0))

    @field_validator("head_dims")
    @classmethod
    def _dims(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return None
        if min(v) < 1 or max(v) > 256:
            raise ValueError("head dims must be from 1 to 256")
        return sorted(set(v))

    @field_validator("archs")
    @classmethod
    def _archs(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        for arch in v:
            if arch not in ARCHS:
                extra = (" (llmbench's Triton kernel needs compute capability 7.5 or newer)"
                         if arch in ("sm70", "sm72") else "")
                raise ValueError(f"unknown target {arch!r}{extra}; choose from "
                                 f"{', '.join(ARCHS)}")
        if not v:
            raise ValueError("no target given")
        return list(dict.fromkeys(v))

    def space(self) -> list[tuple[int, int, int, int]]:
        if self.interpret:
            return DRY_RUN_CONFIGS
        return list(itertools.product(self.block_m, self.block_n, self.num_warps,
                                      self.num_stages))


class TuneCase(BaseModel):
    """A case's params: a timed config (an attention case of the Triton kernel, its forward
    tile the config tried) or, with compile_only, one kernel compiled for one target."""

    model_config = RECORD

    impl: str | None = None  # timed only, from here to kv_heads
    seq: int | None = None
    batch: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    arch: str | None = None  # compile-only: the target
    head_dim: int
    kernel: Literal["fwd", "bwd_delta", "bwd_dkdv", "bwd_dq"] | None = None  # compile-only
    dtype: Literal["fp32", "fp16", "bf16"]
    causal: bool
    mode: Literal["fwd", "fwd+bwd"] | None = None  # timed only, and device
    device: Literal["cpu", "cuda"] | None = None
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    dkdv: KernelTile | None = None  # timed: the profile's backward tiles
    dq: KernelTile | None = None
    tiles: Literal["profile", "grid"] | None = None  # compile-only: where the tile came from
    profile: str | None = None  # compile-only: the profile that gave the tiles


class TuneWinner(BaseModel):
    """The best forward tile at one head dim."""

    model_config = RECORD

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    throughput_tflops: float


class TuneTarget(BaseModel):
    """Compile-only: how the kernels compiled for one target fit."""

    model_config = RECORD

    profile: str
    dtype: Literal["fp32", "fp16", "bf16"]
    shared_memory_limit_bytes: int | None
    cases: int
    fit: int
    max_shared_memory_bytes: int


class TuneSummary(BaseModel):
    """Timed: the winners per head dim (str) and how many configs ran; compile-only: per
    target, how many kernels fit."""

    model_config = RECORD

    winners: dict[str, TuneWinner] = {}  # timed, from here to configs_pruned
    base_profile: str | None = None
    configs_run: int = 0
    configs_pruned: int = 0
    compile_only: bool = False  # compile-only from here on
    targets: dict[str, TuneTarget] = {}
    tiles: Literal["profile", "grid"] | None = None


def check_space(config: TuneConfig) -> None:
    """Every value of the search space must make a valid tile (one-line error otherwise)."""
    for bm, bn, w, s in itertools.product(config.block_m, config.block_n, config.num_warps,
                                          config.num_stages):
        try:
            AttentionTile(head_dim=(1, 256), block_m=bm, block_n=bn, num_warps=w, num_stages=s)
        except ValueError as exc:
            loc, msg = first_problem(exc)
            raise UsageError(f"{flag_of(TuneConfig, str(loc[0]))}: {msg}") from None


def backward_tiles(tile: AttentionTile) -> tuple[dict[str, int], dict[str, int]]:
    """The dK/dV and dQ tiles the profile gives with this forward tile (the forward tile where
    it gives none)."""
    tiles = tile.backward()
    return tiles.dkdv.launch(), tiles.dq.launch()


# What a timed tuning case reports: the attention case's figures (its target is attention's).
_ATTENTION_CASE_METRICS = (
    "throughput_tflops", "peak_memory_bytes", "predicted_memory_bytes", "input_memory_bytes",
    "max_abs_error", "grad_max_abs_error", "error_rows_checked", "grad_check_seq",
    "flops_per_call", "bytes_moved", "launched_tile")


def _tile_label(tile: dict[str, int]) -> str:
    return "bm={block_m}/bn={block_n}/w={num_warps}/s={num_stages}".format(**tile)


class TuneBenchmark(Benchmark[TuneConfig]):
    name = "tune"
    command = ("tune", "attention")
    group_help = "Tune kernels for this device and write a profile."
    help = """Time llmbench's Triton attention over block sizes, warps and stages; keep the best.

    Every config is first compiled for this GPU: one whose shared memory or registers exceed
    what the GPU gives a block is recorded as unavailable, with the figure, and not run. The
    table shows each config's TFLOP/s and share of the best; --write-profile writes the winners
    per head dim into a profile TOML (the selected profile with its forward tiles replaced).

    --compile-only needs no GPU: it compiles each kernel for each target and says which tiles
    fit (the profile in force gives the tiles for its own target, each target's shipped
    profile the rest).
    """
    run_options = ("max_time", "profile", "timeout")
    renderer = "llmbench.report.tune:render"
    no_plot = "one row per tile: the table ranks them"
    config_type = TuneConfig
    params_type = TuneCase
    summary_type = TuneSummary
    metrics = (
        *(m for m in AttentionBenchmark.metrics if m.name in _ATTENTION_CASE_METRICS),
        Metric("of_best_pct", "%", "higher", "TFLOP/s as a share of the best at its head dim",
               derived=True),
        # --compile-only
        Metric("shared_memory_bytes", "B", "lower", "shared memory the compiled kernel needs"),
        Metric("shared_memory_limit_bytes", "B", "info", "shared memory the target gives a block"),
        Metric("registers", "1", "lower", "registers per thread of the compiled kernel"),
        Metric("stack_frame_bytes", "B", "lower", "the compiled kernel's stack frame"),
        Metric("ptxas_release", "", "info", "the ptxas that compiled it"),
    )

    case_target = "llmbench.benches.attention:run_case"

    def jobs(self, config: TuneConfig) -> int | None:
        if not config.compile_only:
            return None
        from llmbench.core.parallel import default_jobs

        return config.jobs or default_jobs()

    def finish(self, config: TuneConfig, document: Any) -> str | None:
        if config.write_profile is None:
            return None
        from llmbench.core.profiles import load_profile, shipped_profiles

        source = document.env.profile_source
        base = (load_profile(source) if source
                else shipped_profiles()[document.summary["base_profile"]])
        write_tuned_profile(tuned_profile_toml(base, document.summary["winners"]),
                            str(config.write_profile))
        return f"wrote {config.write_profile}: use it with --profile {config.write_profile}"

    def resolve(self, config: TuneConfig, hw: HardwareInfo) -> TuneConfig:
        check_space(config)
        device = config.device or hw.device
        if config.compile_only:
            if config.write_profile is not None:
                raise UsageError("--write-profile writes timed winners; --compile-only times "
                                 "nothing")
            if config.interpret:
                raise UsageError("--compile-only compiles for GPU targets and --interpret runs "
                                 "on the CPU: choose one")
            return config.model_copy(update={
                "device": hw.device, "mode": config.mode or "fwd+bwd",
                "archs": config.archs or list(ARCHS)})
        if config.archs is not None or config.grid:
            raise UsageError("--arch and --grid go with --compile-only")
        if config.interpret:  # the cases' payloads carry it; no environment changes here
            return config.model_copy(update={
                "device": "cpu", "dtype": "fp32", "seq": 64, "batch": 1, "heads": 2,
                "head_dims": [32], "mode": config.mode or "fwd",
                "timing": TimingPolicy(max_time_s=0.5, min_runs=2, min_time_s=0.0)})
        if device != "cuda":
            raise UsageError("tuning times the Triton kernel on a CUDA GPU, and none is usable "
                             "here; --interpret runs a functional dry run of two configs at a "
                             "tiny shape on the CPU, and --compile-only checks which tiles fit "
                             "which GPU without one")
        from llmbench.core.hardware import default_dtype

        return config.model_copy(update={
            "device": device, "dtype": config.dtype or default_dtype(device, hw),
            "mode": config.mode or "fwd", "head_dims": config.head_dims or [64, 128]})

    def plan(self, config: TuneConfig, ctx: PlanContext) -> list[CasePlan]:
        if config.compile_only:
            return plan_compile(config, ctx)
        attention = AttentionBenchmark()
        dims = config.head_dims or [64, 128]
        misfits = {} if config.interpret else _compiled_misfits(config, ctx, dims)
        plans = []
        for d in dims:
            base = AttentionConfig(impls=["triton"], seqs=[config.seq], batch=config.batch,
                                   heads=config.heads, head_dim=d, dtype=config.dtype,
                                   causal=config.causal, mode=config.mode or "fwd",
                                   device=config.device, timing=config.timing,
                                   check_rows=64, check_seq=128,
                                   interpret=config.interpret).model_copy(
                update={"kv_heads": config.heads})
            profile_tile = ctx.profile.tile_for(d)
            for bm, bn, w, s in config.space():
                tile = AttentionTile(head_dim=(1, 256), block_m=bm, block_n=bn, num_warps=w,
                                     num_stages=s, dkdv=profile_tile.dkdv, dq=profile_tile.dq)
                case = attention._case(base, ctx, tile, "triton", config.seq, None)
                plans.append(CasePlan(
                    name=f"d={d}/bm={bm}/bn={bn}/w={w}/s={s}", params=case.params,
                    run_args=case.run_args, predicted_memory_bytes=case.predicted_memory_bytes,
                    required_memory_bytes=case.required_memory_bytes,
                    unavailable=case.unavailable))
                why = misfits.get((d, (bm, bn, w, s)))
                if why:  # compiled for this GPU: it would not launch
                    plans[-1] = CasePlan(name=plans[-1].name, params=case.params,
                                         unavailable=f"does not fit: {why}")
        return plans

    def summarize(self, config: TuneConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
        if config.compile_only:
            return summarize_compile(config, cases)
        best: dict[int, CaseResult] = {}
        for c in cases:
            if c.ok and (c.params["head_dim"] not in best or c.metrics["throughput_tflops"]
                         > best[c.params["head_dim"]].metrics["throughput_tflops"]):
                best[c.params["head_dim"]] = c
        out = []
        for c in cases:
            metrics = dict(c.metrics)
            top = best.get(c.params["head_dim"])
            if c.ok and top is not None:
                metrics["of_best_pct"] = (100.0 * metrics["throughput_tflops"]
                                          / top.metrics["throughput_tflops"])
            out.append(c.model_copy(update={"metrics": metrics}))
        pruned = sum(1 for c in cases if (c.reason or "").startswith("does not fit"))
        winners = {str(d): {k: c.params[k] for k in TILE_KEYS}
                   | {"throughput_tflops": c.metrics["throughput_tflops"]}
                   for d, c in sorted(best.items())}
        return out, {"winners": winners, "base_profile": ctx.profile.name,
                     "configs_run": len(cases) - pruned, "configs_pruned": pruned}


# ------------------------------------------------------------------- compiling, no GPU needed


def _target_profile(arch: str, ctx: PlanContext) -> Profile:
    """The tiles for a target: the profile in force when it is that target's, else the shipped
    profile of that target."""
    cc = ARCHS[arch]
    if ctx.profile.kind == "cuda" and ctx.profile.compute_capability == cc:
        return ctx.profile
    shipped = shipped_profiles()
    if arch not in shipped:
        raise UsageError(f"no shipped profile for {arch}")
    return shipped[arch]


def shared_limit_bytes(arch: str) -> int:
    """What one block of the target may use (the shipped profile's figure for that target)."""
    kib = shipped_profiles()[arch].shared_memory_per_block_kib
    if not kib:
        raise UsageError(f"profile {arch} gives no shared_memory_per_block_kib")
    return kib * 1024


def _compile_plan(*, arch: str, head_dim: int, kernel: str, dtype: str, causal: bool,
                  tile: dict[str, int], dkdv: dict[str, int], dq: dict[str, int],
                  source: str, profile: str, limit: int,
                  cc: tuple[int, int] | None = None) -> CasePlan:
    if kernel == "bwd_delta":  # its own fixed tile (imports Triton, not torch)
        from llmbench.kernels.triton_flash_kernels import DELTA_TILE as shown
    else:
        shown = {"fwd": tile, "bwd_dkdv": dkdv, "bwd_dq": dq}[kernel]
    params: dict[str, Any] = {"arch": arch, "head_dim": head_dim, "kernel": kernel,
                              "dtype": dtype, "causal": causal, **shown, "tiles": source,
                              "profile": profile}
    return CasePlan(
        name=f"{arch}/d={head_dim}/{kernel}/{_tile_label(shown)}", params=params,
        run_args={"cc": list(cc or ARCHS[arch]), "tile": tile, "dkdv": dkdv, "dq": dq,
                  "shared_memory_limit_bytes": limit},
        target=COMPILE_TARGET)


def plan_compile(config: TuneConfig, ctx: PlanContext) -> list[CasePlan]:
    kernels = FORWARD + (BACKWARD if config.mode == "fwd+bwd" else [])
    plans = []
    for arch in config.archs or list(ARCHS):
        profile = _target_profile(arch, ctx)
        limit = shared_limit_bytes(arch)
        dtype = config.dtype or gpu_default_dtype(ARCHS[arch])
        dims = config.head_dims or [min(256, t.head_dim[1]) for t in profile.attention]
        for d in dims:
            ptile = profile.tile_for(d)
            fwd, (dkdv, dq) = ptile.launch(), backward_tiles(ptile)
            common = {"arch": arch, "head_dim": d, "dtype": dtype, "causal": config.causal,
                      "profile": profile.name, "limit": limit}
            if not config.grid:
                for kernel in kernels:
                    plans.append(_compile_plan(kernel=kernel, tile=fwd, dkdv=dkdv, dq=dq,
                                               source="profile", **common))
                continue
            for bm, bn, w, s in config.space():
                cand = {"block_m": bm, "block_n": bn, "num_warps": w, "num_stages": s}
                for kernel in kernels:
                    if kernel == "bwd_delta":
                        continue  # no tile of its own to search
                    plans.append(_compile_plan(
                        kernel=kernel, tile=cand if kernel == "fwd" else fwd,
                        dkdv=cand if kernel == "bwd_dkdv" else dkdv,
                        dq=cand if kernel == "bwd_dq" else dq, source="grid", **common))
    return plans


def summarize_compile(config: TuneConfig,
                      cases: list[CaseResult]) -> tuple[list[CaseResult], dict[str, Any]]:
    """A tile that compiled but would not launch: `error` for the profile's tiles (what ships
    must fit), `skipped` for the search space (pruned, as tuning would)."""
    out = []
    for c in cases:
        metrics = dict(c.metrics)
        why = metrics.pop("misfit", None)
        if c.ok and isinstance(why, str):
            status = "error" if c.params.get("tiles") == "profile" else "skipped"
            c = c.model_copy(update={"status": status, "reason": f"does not fit: {why}",
                                     "metrics": metrics})
        out.append(c)
    per_target: dict[str, Any] = {}
    for c in out:
        entry = per_target.setdefault(c.params["arch"], {
            "profile": c.params["profile"], "dtype": c.params["dtype"],
            "shared_memory_limit_bytes": None, "cases": 0, "fit": 0, "max_shared_memory_bytes": 0})
        entry["cases"] += 1
        entry["fit"] += c.ok
        shared = c.metrics.get("shared_memory_bytes")
        if isinstance(shared, int):
            entry["max_shared_memory_bytes"] = max(entry["max_shared_memory_bytes"], shared)
            entry["shared_memory_limit_bytes"] = c.metrics.get("shared_memory_limit_bytes")
    return out, {"compile_only": True, "targets": per_target,
                 "tiles": "grid" if config.grid else "profile"}


def run_compile_case(payload: dict[str, Any]) -> dict[str, Any]:
    """One compile, in its own process (no GPU needed)."""
    from llmbench.kernels.triton_aot import compile_kernel, misfit

    p = payload["params"]
    compiled = compile_kernel(kernel=p["kernel"], cc=tuple(payload["cc"]), dtype=p["dtype"],
                              head_dim=p["head_dim"], causal=p["causal"], tile=payload["tile"],
                              dkdv=payload["dkdv"], dq=payload["dq"])
    limit = int(payload["shared_memory_limit_bytes"])
    metrics: dict[str, Any] = {
        "shared_memory_bytes": compiled.shared_memory_bytes,
        "shared_memory_limit_bytes": limit,
        "registers": compiled.registers,
        "stack_frame_bytes": compiled.stack_frame_bytes,
        "ptxas_release": compiled.ptxas,
    }
    why = misfit(compiled, limit)
    if why:
        metrics["misfit"] = why
    return metrics


def _device_shared_limit(ctx: PlanContext) -> int:
    """What Triton checks a launch against on this GPU; the profile's figure if Triton's
    driver does not say."""
    try:
        import torch
        from triton.runtime import driver

        props = driver.active.utils.get_device_properties(torch.cuda.current_device())
        return int(props["max_shared_mem"])
    except Exception:  # noqa: BLE001 - fall back to the profile's figure
        kib = ctx.profile.shared_memory_per_block_kib
        if not kib:
            raise UsageError(f"profile {ctx.profile.name} gives no shared_memory_per_block_kib "
                             "and Triton cannot read this GPU's limit") from None
        return kib * 1024


def _compiled_misfits(config: TuneConfig, ctx: PlanContext,
                      dims: list[int]) -> dict[tuple[int, tuple[int, ...]], str]:
    """Compile every candidate forward tile (and the backward tiles it runs with) for this GPU,
    several at a time; (head dim, config) -> why it would not launch, for those that would not."""
    from llmbench.core.parallel import ParallelCases, default_jobs

    cc = ctx.hw.gpu.compute_capability if ctx.hw.gpu else (0, 0)
    limit = _device_shared_limit(ctx)
    kernels = FORWARD + (["bwd_dkdv", "bwd_dq"] if config.mode == "fwd+bwd" else [])
    plans, keys = [], []
    for d in dims:
        dkdv, dq = backward_tiles(ctx.profile.tile_for(d))
        for cand in config.space():
            tile = dict(zip(TILE_KEYS, cand, strict=True))
            for kernel in kernels:
                plan = _compile_plan(arch=f"sm{cc[0]}{cc[1]}", head_dim=d, kernel=kernel,
                                     dtype=config.dtype or "bf16", causal=config.causal,
                                     tile=tile, dkdv=dkdv, dq=dq, source="grid",
                                     profile=ctx.profile.name, limit=limit, cc=cc)
                plans.append(plan)
                keys.append((d, cand))
    out: dict[tuple[int, tuple[int, ...]], str] = {}
    with ParallelCases(COMPILE_TARGET, plans, jobs=default_jobs(), timeout_s=600) as running:
        for plan, key in zip(plans, keys, strict=True):
            outcome = running.run(plan)
            if outcome.status != "ok":
                out.setdefault(key, f"{plan.params['kernel']} does not compile: "
                               f"{outcome.reason}")
            elif outcome.value.get("misfit"):
                out.setdefault(key, f"{plan.params['kernel']} {outcome.value['misfit']}")
    return out


def tuned_profile_toml(base: Profile, winners: dict[str, dict[str, Any]], *,
                       name: str | None = None) -> str:
    """A profile TOML: `base` with its forward tiles replaced by the winners. Tuned head dim d
    covers the range above the previous tuned head dim, up to d, and keeps the backward tiles
    `base` gives at d (they fit every smaller head dim too); above the largest tuned head dim,
    `base`'s own tiles stay."""
    if not winners:
        raise UsageError("no config ran successfully: nothing to write")
    dims = sorted(int(d) for d in winners)
    lines = [f'# Written by `llmbench tune attention` from profile "{base.name}".',
             f'name = "{name or base.name + "-tuned"}"', f'kind = "{base.kind}"',
             f'description = "{base.description} (tuned)"']
    if base.compute_capability:
        lines.append(f"compute_capability = {list(base.compute_capability)}")
    if base.shared_memory_per_block_kib:
        lines.append(f"shared_memory_per_block_kib = {base.shared_memory_per_block_kib}")
    low = 1
    for d in dims:
        w = winners[str(d)]
        at_d = base.tile_for(d)
        tile = AttentionTile(head_dim=(low, d), **{k: w[k] for k in TILE_KEYS},
                             dkdv=at_d.dkdv, dq=at_d.dq)
        lines += ["", *tile_toml(tile),
                  f"# measured {w['throughput_tflops']:.4g} TFLOP/s at head dim {d}"]
        low = d + 1
    for kept in base.attention:
        if kept.head_dim[1] >= low:
            clipped = kept.model_copy(update={"head_dim": (max(low, kept.head_dim[0]),
                                                           kept.head_dim[1])})
            lines += ["", *tile_toml(clipped), f"# from profile {base.name}"]
    return "\n".join([*lines, "", *peak_toml(base.peak)]) + "\n"


def write_tuned_profile(text: str, path: str) -> None:
    """Validate the TOML by loading it, then write it atomically."""
    import tempfile
    from pathlib import Path

    from llmbench.core.results import write_atomic

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.toml"
        probe.write_text(text)
        try:
            load_profile(probe)
        except ProfileError as exc:  # a bug here, not bad input; say it plainly
            raise RuntimeError(f"the tuned profile does not validate: {exc}") from None
    write_atomic(text, path)
