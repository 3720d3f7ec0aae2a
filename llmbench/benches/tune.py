"""`llmbench tune attention`: measure llmbench's Triton kernel over tile configs, keep the best.

The space is block_m x block_n x num_warps x num_stages; configs whose shared memory would not
fit the device (the profile's shared_memory_per_block_kib) are pruned before running. Each
config is an ordinary attention case (isolated, timed by the core, checked against fp64), so a
config that fails to compile or is wrong shows as such. The winners per head dim become a
profile TOML that `--profile PATH` accepts.

On a CPU, tuning means nothing (the kernel is compiled for a GPU); `interpret` runs a functional
dry run of two configs at a tiny shape through Triton's interpreter instead.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmbench.benches.attention import AttentionBenchmark, AttentionConfig
from llmbench.benches.base import Benchmark, CasePlan, PlanContext
from llmbench.core.errors import UsageError
from llmbench.core.hardware import HardwareInfo
from llmbench.core.profiles import AttentionTile, Profile, ProfileError, load_profile
from llmbench.core.results import CaseResult
from llmbench.core.timing import TimingPolicy

DRY_RUN_CONFIGS = [(16, 16, 1, 1), (32, 16, 2, 1)]


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    head_dims: list[int] = Field(default_factory=lambda: [64, 128], min_length=1)
    seq: int = Field(4096, gt=0)
    batch: int = Field(4, gt=0)
    heads: int = Field(16, gt=0)
    dtype: Literal["fp32", "fp16", "bf16"] = "bf16"
    causal: bool = True
    mode: Literal["fwd", "fwd+bwd"] = "fwd"
    block_m: list[int] = Field(default_factory=lambda: [32, 64, 128])
    block_n: list[int] = Field(default_factory=lambda: [32, 64, 128])
    num_warps: list[int] = Field(default_factory=lambda: [4, 8])
    num_stages: list[int] = Field(default_factory=lambda: [1, 2, 3, 4])
    interpret: bool = False
    device: Literal["cpu", "cuda"] | None = None
    timing: TimingPolicy = Field(default_factory=lambda: TimingPolicy(max_time_s=2.0))

    @field_validator("head_dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or max(v) > 256:
            raise ValueError("head dims must be from 1 to 256")
        return sorted(set(v))

    def space(self) -> list[tuple[int, int, int, int]]:
        if self.interpret:
            return DRY_RUN_CONFIGS
        return list(itertools.product(self.block_m, self.block_n, self.num_warps,
                                      self.num_stages))


def check_space(config: TuneConfig) -> None:
    """Every value of the search space must make a valid tile (one-line error otherwise)."""
    flags = {"block_m": "--block-m", "block_n": "--block-n", "num_warps": "--warps",
             "num_stages": "--stages"}
    for bm, bn, w, s in itertools.product(config.block_m, config.block_n, config.num_warps,
                                          config.num_stages):
        try:
            AttentionTile(head_dim=(1, 256), block_m=bm, block_n=bn, num_warps=w, num_stages=s)
        except ValueError as exc:
            err = exc.errors()[0]
            raise UsageError(f"{flags[str(err['loc'][0])]}: "
                             f"{err['msg'].removeprefix('Value error, ')}") from None


def shared_memory_bytes(bm: int, bn: int, stages: int, head_dim: int, elem: int) -> int:
    """What the kernel keeps in shared memory: the Q tile and, per pipeline stage, a K and a V
    tile (the head dim padded to a power of two)."""
    d = max(16, 1 << (head_dim - 1).bit_length())
    return elem * d * (bm + 2 * stages * bn)


class TuneBenchmark(Benchmark[TuneConfig]):
    name = "tune"
    config_type = TuneConfig
    case_target = "llmbench.benches.attention:run_case"

    def resolve(self, config: TuneConfig, hw: HardwareInfo) -> TuneConfig:
        check_space(config)
        device = config.device or hw.device
        if config.interpret:
            import os

            os.environ["TRITON_INTERPRET"] = "1"
            return config.model_copy(update={
                "device": "cpu", "dtype": "fp32", "seq": 64, "batch": 1, "heads": 2,
                "head_dims": [32], "timing": TimingPolicy(max_time_s=0.5, min_runs=2,
                                                          min_time_s=0.0)})
        if device != "cuda":
            raise UsageError("tuning times the Triton kernel on a CUDA GPU, and none is usable "
                             "here; --interpret runs a functional dry run of two configs at a "
                             "tiny shape on the CPU")
        return config.model_copy(update={"device": device})

    def plan(self, config: TuneConfig, ctx: PlanContext) -> list[CasePlan]:
        attention = AttentionBenchmark()
        limit = (ctx.profile.shared_memory_per_block_kib or 0) * 1024
        elem = 4 if config.dtype == "fp32" else 2
        plans = []
        for d in config.head_dims:
            base = AttentionConfig(impls=["triton"], seqs=[config.seq], batch=config.batch,
                                   heads=config.heads, head_dim=d, dtype=config.dtype,
                                   causal=config.causal, mode=config.mode,
                                   device=config.device, timing=config.timing,
                                   check_rows=64, check_seq=128).model_copy(
                update={"kv_heads": config.heads})
            for bm, bn, w, s in config.space():
                if limit and shared_memory_bytes(bm, bn, s, d, elem) > limit:
                    continue  # would not launch: more shared memory than a block gets
                tile = AttentionTile(head_dim=(1, 256), block_m=bm, block_n=bn, num_warps=w,
                                     num_stages=s)
                case = attention._case(base, ctx, tile, "triton", config.seq, None)
                plans.append(CasePlan(
                    name=f"d={d}/bm={bm}/bn={bn}/w={w}/s={s}", params=case.params,
                    run_args=case.run_args, predicted_memory_bytes=case.predicted_memory_bytes,
                    required_memory_bytes=case.required_memory_bytes,
                    unavailable=case.unavailable))
        return plans

    def summarize(self, config: TuneConfig, cases: list[CaseResult],
                  ctx: PlanContext) -> tuple[list[CaseResult], dict[str, Any]]:
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
        planned = {(c.params["head_dim"], c.params.get("block_m"), c.params.get("block_n"),
                    c.params.get("num_warps"), c.params.get("num_stages")) for c in cases}
        winners = {str(d): {k: c.params[k] for k in ("block_m", "block_n", "num_warps",
                                                     "num_stages")}
                   | {"throughput_tflops": c.metrics["throughput_tflops"]}
                   for d, c in sorted(best.items())}
        return out, {"winners": winners, "base_profile": ctx.profile.name,
                     "configs_run": len(planned),
                     "configs_pruned": len(config.space()) * len(config.head_dims)
                     - len(planned)}


def tuned_profile_toml(base: Profile, winners: dict[str, dict[str, Any]], *,
                       name: str | None = None) -> str:
    """A profile TOML: `base` with its attention tiles replaced by the winners; head dim d
    covers the range above the previous tuned head dim, the last up to 256 (or base's end)."""
    if not winners:
        raise UsageError("no config ran successfully: nothing to write")
    dims = sorted(int(d) for d in winners)
    top = max(dims[-1], base.attention[-1].head_dim[1])
    lines = [f'# Written by `llmbench tune attention` from profile "{base.name}".',
             f'name = "{name or base.name + "-tuned"}"', f'kind = "{base.kind}"',
             f'description = "{base.description} (tuned)"']
    if base.compute_capability:
        lines.append(f"compute_capability = {list(base.compute_capability)}")
    if base.shared_memory_per_block_kib:
        lines.append(f"shared_memory_per_block_kib = {base.shared_memory_per_block_kib}")
    low = 1
    for i, d in enumerate(dims):
        w = winners[str(d)]
        high = top if i == len(dims) - 1 else d
        lines += ["", "[[attention]]", f"head_dim = [{low}, {high}]",
                  f"block_m = {w['block_m']}", f"block_n = {w['block_n']}",
                  f"num_warps = {w['num_warps']}", f"num_stages = {w['num_stages']}",
                  f"# measured {w['throughput_tflops']:.4g} TFLOP/s at head dim {d}"]
        low = high + 1
    lines += ["", "[peak]"]
    peak = base.peak.model_dump()
    for key, value in peak.items():
        if key == "devices":
            continue
        if isinstance(value, dict):
            if key == "flops_per_cycle":
                continue
            lines.append(f"{key} = {{ {', '.join(f'{k} = {v}' for k, v in value.items())} }}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif value is not None:
            lines.append(f"{key} = {value}")
    for isa, table in (peak.get("flops_per_cycle") or {}).items():
        lines += ["", f"[peak.flops_per_cycle.{isa}]"]
        lines += [f"{k} = {v}" for k, v in table.items()]
    for dev in peak.get("devices") or []:
        lines += ["", "[[peak.devices]]", f'match = "{dev["match"]}"']
        if dev.get("memory_gbps"):
            lines.append(f"memory_gbps = {dev['memory_gbps']}")
        lines.append(f"tflops = {{ {', '.join(f'{k} = {v}' for k, v in dev['tflops'].items())} }}")
    return "\n".join(lines) + "\n"


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
