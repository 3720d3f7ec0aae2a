"""`llmbench tune attention`: search the Triton kernel's tile configs on this GPU, or check
without one which tiles fit which GPU (--compile-only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from llmbench.cli.common import (
    FailOnOption,
    FormatOption,
    JsonOption,
    ProfileOption,
    QuietOption,
    TimeoutOption,
    build_config,
    run_and_emit,
    split_list,
    stderr,
)
from llmbench.core.units import parse_int_list

tune_app = typer.Typer(help="Tune kernels for this device and write a profile.",
                       no_args_is_help=True)
_SPACE = "Search space"
_COMPILE = "Compile only (no GPU needed)"


@tune_app.command("attention")
def tune_attention(
    head_dims: Annotated[str | None, typer.Option(
        help="Head dims, e.g. 64,128. Default: 64,128 when timing; with --compile-only the "
        "top of every head-dim range the profile covers.")] = None,
    seq: Annotated[int, typer.Option(help="Sequence length of the timed shape.")] = 4096,
    batch: Annotated[int, typer.Option(help="Batch of the timed shape.")] = 4,
    heads: Annotated[int, typer.Option(help="Heads of the timed shape.")] = 16,
    dtype: Annotated[Literal["fp32", "fp16", "bf16"] | None, typer.Option(
        help="Default: bf16 on compute capability 8.0 and newer, else fp16.")] = None,
    mode: Annotated[Literal["fwd", "fwd+bwd"] | None, typer.Option(
        help="The forward pass, or forward + backward. Default: fwd when timing, fwd+bwd "
        "with --compile-only.")] = None,
    block_m: Annotated[str, typer.Option(help="Values of block_m to try.",
                                         rich_help_panel=_SPACE)] = "32,64,128",
    block_n: Annotated[str, typer.Option(help="Values of block_n to try.",
                                         rich_help_panel=_SPACE)] = "32,64,128",
    warps: Annotated[str, typer.Option(help="Values of num_warps to try.",
                                       rich_help_panel=_SPACE)] = "4,8",
    stages: Annotated[str, typer.Option(help="Values of num_stages to try.",
                                        rich_help_panel=_SPACE)] = "1,2,3,4",
    interpret: Annotated[bool, typer.Option(
        "--interpret", help="No GPU: a functional dry run of two configs at a tiny shape "
        "through Triton's interpreter on the CPU.")] = False,
    compile_only: Annotated[bool, typer.Option(
        "--compile-only", help="Compile the forward and backward kernels for GPU targets with "
        "Triton's bundled ptxas, time nothing, and report each tile's shared memory against "
        "the target's per-block limit, its registers and stack frame. Exit 1 when a profile's "
        "tile does not fit.", rich_help_panel=_COMPILE)] = False,
    arch: Annotated[list[str] | None, typer.Option(
        "--arch", help="Targets for --compile-only: sm75, sm80, sm86, sm89, sm90, sm100, "
        "sm120 (repeat or comma-separate). Default: all of them.",
        rich_help_panel=_COMPILE)] = None,
    grid: Annotated[bool, typer.Option(
        "--grid", help="With --compile-only: compile the search space (--block-m ... "
        "--stages) for every kernel instead of the profile's tiles; what does not fit is "
        "skipped.", rich_help_panel=_COMPILE)] = False,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", min=1, help="With --compile-only: compiles at once. Default: the CPUs "
        "this process may use.", rich_help_panel=_COMPILE)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the winners as a profile TOML that --profile accepts.",
        dir_okay=False)] = None,
    profile: ProfileOption = None,
    timeout: TimeoutOption = 600.0,
    json_path: JsonOption = None,
    fmt: FormatOption = "table",
    quiet: QuietOption = False,
    fail_on: FailOnOption = "error",
) -> None:
    """Time llmbench's Triton attention over block sizes, warps and stages; keep the best.

    Every config is first compiled for this GPU: one whose shared memory or registers exceed
    what the GPU gives a block is recorded as unavailable, with the figure, and not run. The
    table shows each config's TFLOP/s and share of the best; --out writes the winners per head
    dim into a profile TOML (the selected profile with its forward tiles replaced).

    --compile-only needs no GPU: it compiles each kernel for each target and says which tiles
    fit (the profile in force gives the tiles for its own target, each target's shipped
    profile the rest).
    """
    from llmbench.benches.tune import TuneConfig

    if out is not None and compile_only:
        from llmbench.core.errors import UsageError

        raise UsageError("--out writes timed winners; --compile-only times nothing")
    cfg = build_config(
        TuneConfig, head_dims=parse_int_list([head_dims], what="--head-dims")
        if head_dims else None, seq=seq, batch=batch, heads=heads, dtype=dtype, mode=mode,
        block_m=parse_int_list([block_m], what="--block-m"),
        block_n=parse_int_list([block_n], what="--block-n"),
        num_warps=parse_int_list([warps], what="--warps"),
        num_stages=parse_int_list([stages], what="--stages"), interpret=interpret,
        compile_only=compile_only, archs=split_list(arch), grid=grid)
    if jobs is None and compile_only:
        from llmbench.core.parallel import default_jobs

        jobs = default_jobs()

    def write_profile(doc: Any) -> None:
        from llmbench.benches.tune import tuned_profile_toml, write_tuned_profile
        from llmbench.core.profiles import load_profile, shipped_profiles

        base_name = doc.summary["base_profile"]
        source = doc.env.profile_source
        base = load_profile(source) if source else shipped_profiles()[base_name]
        write_tuned_profile(tuned_profile_toml(base, doc.summary["winners"]), str(out))
        stderr().print(f"wrote {out}: use it with --profile {out}", highlight=False)

    run_and_emit("tune", cfg, json_path=json_path, fmt=fmt, quiet=quiet, profile=profile,
                 fail_on=fail_on, timeout=timeout, isolate=True,
                 jobs=jobs if compile_only else None,
                 after=write_profile if out is not None else None)
