import json
import os
import re
import signal
import subprocess
import sys
import time

import jsonschema
import pytest
import typer

from llmbench.cli.app import app
from tests.conftest import ROOT, assert_bad_input, run_cli, run_cli_inprocess
from tests.processes import interruptible

SMALL = ["--seq", "64", "--heads", "2", "--head-dim", "16", "--max-time", "0.2", "-q"]


def test_help_is_fast_and_imports_no_torch():
    code = ("import sys, time; t = time.perf_counter(); sys.argv = ['llmbench', '--help']\n"
            "from llmbench.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "print('elapsed', time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "attention" in out.stdout and "env" in out.stdout
    t0 = time.perf_counter()
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert time.perf_counter() - t0 < 1.0 + 0.5  # interpreter start included; budget 1 s


def test_subcommand_help_imports_no_torch():
    code = ("import sys; sys.argv = ['llmbench', 'attention', '--help']\n"
            "from llmbench.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--kv-heads" in out.stdout


def test_version():
    from llmbench import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"llmbench {__version__}"


BAD = [
    (["attention", "--block-m", "96"], "--block-m: must be a power of two"),
    (["attention", "--stages", "0"], "--stages: must be from 1 to 8, got 0"),
    (["attention", "--window", "8", "--no-causal"], "--window is a left sliding window"),
    (["attention", "--varlen", "0,4"], "lengths must be positive"),
    (["attention", "--seq", "0"], "--seq must be positive, got 0"),
    (["attention", "--seq", "-4"], "--seq must be positive"),
    (["attention", "--seq", "lots"], "--seq: 'lots' is not an integer"),
    (["attention", "--seq", "4096:1024"], "runs backwards"),
    (["attention", "--heads", "8", "--kv-heads", "3"], "--kv-heads: kv_heads 3 does not divide"),
    (["attention", "--impl", "magic"], "--impl: unknown impl 'magic'"),
    (["attention", "--dtype", "fp8"], "'fp8' is not one of"),
    (["attention", "--batch", "0"], "--batch: Input should be greater than 0"),
    (["attention", "--head-dim", "-1"], "--head-dim"),
    (["attention", "--impl", "flash-attn", "--head-dim", "512", "--device", "cpu"],
     "--impl flash-attn: flash-attn supports head dims up to 256, got 512"),
    (["attention", "--mode", "bwd"], "'bwd' is not one of"),
    (["attention", "--profile", "sm99"], "unknown profile 'sm99'"),
    (["attention", "--profile", "/nonexistent/p.toml"], "profile file not found"),
    (["attention", "--json", "."], "is a directory"),
    (["attention", "--frobnicate"], "No such option"),
    (["nope"], "No such command"),
    (["env", "--head-dim", "0"], "--head-dim: must be positive"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = run_cli_inprocess(*args, timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llmbench: error: ")
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_cuda_without_gpu_is_bad_input(hw):
    if hw.device == "cuda":
        pytest.skip("a GPU is present")
    proc = run_cli("attention", "--device", "cuda")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("llmbench: error: --device cuda: no usable CUDA GPU")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_malformed_profile_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "profiles" / "sm80.toml").read_text().replace(
        "num_stages = 3", "num_stages = 0", 1))
    proc = run_cli("env", "--profile", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"llmbench: error: {bad}: attention[0].num_stages: must be "
                                   "from 1 to 8, got 0")


def test_attention_json_to_stdout_and_file(tmp_path):
    from llmbench.core.results import json_schema

    out = tmp_path / "r.json"
    proc = run_cli("attention", *SMALL, "--impl", "standard,sdpa-flash,tiled,flash-attn",
                   "--format", "json", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    written = json.loads(out.read_text())
    assert printed == written
    jsonschema.validate(written, json_schema())
    statuses = {c["params"]["impl"]: c["status"] for c in written["cases"]}
    assert statuses == {"standard": "ok", "sdpa-flash": "ok", "tiled": "ok",
                        "flash-attn": "unavailable"}
    assert written["benchmark"] == "attention"
    assert written["config"]["seqs"] == [64]


def test_attention_table():
    proc = run_cli("attention", *SMALL, "--seq", "128", "--impl", "standard,tiled")
    assert proc.returncode == 0, proc.stderr
    for text in ("impl", "peak mem", "max err", "standard", "tiled", "speed-up",
                 "memory k", "profile"):
        assert text in proc.stdout


def test_env_json_and_table():
    proc = run_cli("env", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["env"]["profile"] == report["profile"]["name"]
    impls = {i["name"]: i for i in report["implementations"]}
    assert impls["standard"]["available"]
    assert set(impls) >= {"standard", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn",
                          "sdpa-math", "flash-attn", "tiled"}
    for i in impls.values():
        assert i["available"] or i["reason"]
    table = run_cli("env")
    assert "profile" in table.stdout and "attention implementations" in table.stdout


def test_schema_command():
    proc = run_cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert "cases" in schema["properties"]


def test_ctrl_c_keeps_finished_cases(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "attention", "--seq", "64,128,256,512,1024",
         "--impl", "standard,tiled", "--heads", "2", "--head-dim", "16", "--max-time", "0.5",
         "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=interruptible)
    try:
        first = proc.stderr.readline()  # "[1/10] standard/seq=64/fwd: ok ..."
        assert first.startswith("[1/10]"), first
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    doc = json.loads(out.read_text())
    assert 1 <= len(doc["cases"]) < 10
    assert all(c["status"] == "ok" for c in doc["cases"])
    # The case that was running is not left behind as a process.
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", "llmbench.core.isolate", "-g", str(proc.pid)],
                               capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def _flags(name):
    command = typer.main.get_command(app).commands[name]
    return sorted(opt for p in command.params for opt in p.opts + p.secondary_opts
                  if opt.startswith("-"))


def test_flags_are_pinned():
    """Flags are the CLI's contract: change this list only on purpose."""
    assert _flags("attention") == sorted([
        "--seq", "--impl", "--batch", "--heads", "--kv-heads", "--head-dim", "--dtype",
        "--causal", "--no-causal", "--mode", "--device", "--seed", "--window", "--varlen",
        "--kv-seq", "--block-m", "--block-n", "--warps", "--stages", "--interpret",
        "--max-time", "--profile", "--timeout", "--isolate", "--no-isolate", "--trace",
        "--memory-snapshot", "--json", "--format", "--quiet", "-q", "--fail-on"])
    assert _flags("env") == sorted(["--head-dim", "--device", "--dtype", "--profile", "--json",
                                    "--format", "--quiet", "-q"])
    assert _flags("schema") == ["--quiet", "-q"]
    assert _flags("kvcache") == sorted([
        "--model", "--config", "--layers", "--heads", "--kv-heads", "--head-dim", "--context",
        "--seq", "--batch", "--dtype", "--memory", "--measure", "--no-measure", "--measure-seq",
        "--measure-layers", "--impl", "--device", "--seed", "--max-time", "--profile",
        "--timeout", "--isolate", "--no-isolate", "--trace", "--memory-snapshot", "--json",
        "--format", "--quiet", "-q", "--fail-on", "--window"])


TRAINING_COMMON = ["--model", "--hf-config", "--layers", "--attention", "--batch", "--seq",
                   "--lr", "--device", "--seed", "--max-time", "--profile", "--timeout",
                   "--isolate", "--no-isolate", "--trace", "--memory-snapshot", "--json",
                   "--format", "--quiet", "-q", "--fail-on"]


def test_training_flags_are_pinned():
    assert _flags("amp") == sorted(TRAINING_COMMON + [
        "--variants", "--steps", "--loss-tolerance", "--demo"])
    assert _flags("checkpoint") == sorted(TRAINING_COMMON + ["--policies", "--every",
                                                             "--param-dtype"])
    assert _flags("optim") == sorted(TRAINING_COMMON + [
        "--optimizers", "--precision", "--compare-decay", "--weight-decay", "--decay-steps"])
    assert _flags("accum") == sorted(TRAINING_COMMON + ["--micro"])
    assert _flags("precision") == sorted(["--formats", "--trace", "--memory-snapshot", "--json",
                                          "--format", "--quiet", "-q", "--fail-on"])
    assert _flags("schedule") == sorted([
        "--kinds", "--lr", "--total", "--warmup", "--min-lr-ratio", "--num-cycles", "--at",
        "--trace", "--memory-snapshot", "--json", "--format", "--quiet", "-q", "--fail-on"])


TRAINING_BAD = [
    (["optim", "--optimizers", "rmsprop"], "--optimizers: unknown optimizer 'rmsprop'"),
    (["optim", "--model", "13q"], "--model: unknown model '13q'"),
    (["optim", "--precision", "fp8"], "'fp8' is not one of"),
    (["checkpoint", "--every", "0"], "--every: Input should be greater than or equal to 1"),
    (["checkpoint", "--policies", "half"], "--policies: unknown policy 'half'"),
    (["checkpoint", "--layers", "0"], "--layers must be positive"),
    (["amp", "--variants", "fp8"], "--variants"),
    (["amp", "--steps", "2"], "--steps: Input should be greater than or equal to 5"),
    (["amp", "--model", "huge"], "--model: unknown model 'huge'"),
    (["accum", "--batch", "32", "--micro", "5"], "--micro 5 does not divide --batch 32"),
    (["schedule", "--warmup", "2000"], "--warmup: warmup 2000 is longer than total 1000"),
    (["schedule", "--kinds", "step"], "--kinds: unknown schedule 'step'"),
    (["schedule", "--min-lr-ratio", "2"], "--min-lr-ratio"),
    (["schedule", "--at", "x"], "--at: 'x' is not an integer"),
    (["precision", "--formats", "fp4"], "--formats: unknown format 'fp4'"),
]


@pytest.mark.parametrize("args, message", TRAINING_BAD)
def test_training_bad_input(args, message):
    proc = run_cli_inprocess(*args, "--format", "json", timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmbench: error: "), proc.stderr
    assert message in lines[0]


def test_schedule_and_precision_json():
    proc = run_cli("schedule", "--total", "100", "--warmup", "10", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    curve = doc["cases"][0]["metrics"]["lr_curve"]
    assert len(curve) == 101 and curve[10] == pytest.approx(3e-4)
    table = run_cli("schedule", "--kinds", "cosine,linear", "--at", "0,50,100", "--total", "100",
                    "--warmup", "10")
    assert "cosine lr" in table.stdout and "linear lr" in table.stdout and "│" in table.stdout
    proc = run_cli("precision", "--formats", "fp16,bf16", "--format", "json")
    names = [c["name"] for c in json.loads(proc.stdout)["cases"]]
    assert names == ["fp16", "bf16"]


def test_optim_analytic_table_for_a_preset():
    proc = run_cli("optim", "--model", "llama-3-8b")
    assert proc.returncode == 0, proc.stderr
    assert "8,030,261,248 parameters" in proc.stdout
    assert "16 B/param" in proc.stdout


def test_align_flags_are_pinned():
    assert _flags("align") == sorted([
        "--task", "--data", "--model", "--hf-config", "--layers", "--attention", "--sft-steps",
        "--steps",
        "--batch", "--lr", "--beta",
        "--loss-type", "--label-smoothing", "--rpo-alpha", "--layout", "--precompute-ref",
        "--simpo-gamma", "--cpo-alpha", "--desirable-weight", "--undesirable-weight",
        "--reward-model",
        "--temperature", "--kl-coef", "--kl-estimator", "--ppo-epochs", "--eval-samples",
        "--device", "--seed", "--profile", "--timeout", "--isolate", "--no-isolate", "--trace",
        "--memory-snapshot", "--json", "--format", "--quiet", "-q", "--fail-on"])


ALIGN_BAD = [
    (["align", "dpo", "--steps", "0"], "--steps: Input should be greater than 0"),
    (["align", "dpo", "--beta", "0"], "--beta: Input should be greater than 0"),
    (["align", "dpo", "--loss-type", "nope"], "'nope' is not one of"),
    (["align", "dpo", "--task", "odd"], "'odd' is not one of"),
    (["align", "grpo"], "'grpo' is not one of"),
    (["align", "dpo", "--data", "/nonexistent/prefs.jsonl"], "no such data file"),
]


@pytest.mark.parametrize("args, message", ALIGN_BAD)
def test_align_bad_input(args, message):
    assert_bad_input(run_cli_inprocess(*args, timeout=120), message)


def test_align_malformed_data_names_the_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    proc = run_cli("align", "dpo", "--data", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"llmbench: error: {path}:2: missing 'chosen'"


def test_tune_flags_are_pinned():
    group = typer.main.get_command(app).commands["tune"]
    command = group.commands["attention"]
    flags = sorted(opt for p in command.params for opt in p.opts + p.secondary_opts
                   if opt.startswith("-"))
    assert flags == sorted(["--head-dims", "--seq", "--batch", "--heads", "--dtype", "--mode",
                            "--block-m", "--block-n", "--warps", "--stages", "--interpret",
                            "--compile-only", "--arch", "--grid", "--jobs", "-j",
                            "--write-profile", "--device", "--max-time", "--profile",
                            "--timeout", "--trace", "--memory-snapshot", "--json", "--format",
                            "--quiet", "-q", "--fail-on"])


def test_ci_flags_are_pinned():
    quiet = ["--quiet", "-q"]
    assert _flags("run") == sorted(["--fail-on", "--out", "--overwrite", *quiet])
    assert _flags("compare") == sorted(["--threshold", "--alpha", "--format", "--markdown",
                                        "--junit", "--all", *quiet])
    assert _flags("export") == sorted(["--out", "--format", *quiet])
    assert _flags("report") == sorted(["--html", "--png", "--title", "--history",
                                       "--window", "--db", *quiet])


def test_example_workflow_is_valid_yaml_with_the_steps():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((ROOT / "examples" / "ci" / "gpu-regression.yml").read_text())
    steps = flow["jobs"]["bench"]["steps"]
    text = " ".join(str(s.get("run", "")) for s in steps)
    assert "llmbench run suites/ci-gpu.toml --out results" in text
    assert "llmbench compare baseline results --format markdown --junit compare.xml" in text
    assert (ROOT / "suites" / "ci-gpu.toml").exists()
    # main's runs go into the history store, carried as an artifact, and gate on its check
    assert 'llmbench history add results --commit "$GITHUB_SHA"' in text
    assert "llmbench history check" in text and "llmbench history export" in text
    uploads = [s for s in steps if "upload-artifact" in str(s.get("uses", ""))]
    assert any(s["with"]["name"] == "llmbench-history" for s in uploads)


def test_example_workflow_installs_the_projects_torch_and_flash_attn_for_real():
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((ROOT / "examples" / "ci" / "gpu-regression.yml").read_text())
    runs = [str(s.get("run", "")) for s in flow["jobs"]["bench"]["steps"]]
    text = "\n".join(runs)
    # The torch the README and .ci/run pin, from a CUDA index of PyTorch's.
    pin = re.search(r"pip install (torch==[\d.]+) ", (ROOT / "README.md").read_text()).group(1)
    torch_lines = [line for line in text.splitlines() if "pip install torch" in line]
    assert torch_lines and all(pin in line for line in torch_lines), torch_lines
    assert all(re.search(r"--index-url https://download\.pytorch\.org/whl/cu1[2-9]\d", line)
               for line in torch_lines), torch_lines
    # flash-attn builds against that torch: --no-build-isolation, and no silent fallback.
    flash = [line for line in text.splitlines() if "flash-attn" in line and "pip" in line]
    assert flash and all("--no-build-isolation" in line for line in flash), flash
    assert "||" not in text


DIST_COMMON = ["--nproc", "--backend", "--device", "--iters", "--warmup", "--timeout",
               "--profile", "--trace", "--memory-snapshot", "--json", "--format", "--quiet",
               "-q", "--fail-on"]


def test_distributed_flags_are_pinned():
    assert _flags("comm") == sorted(DIST_COMMON + ["--collectives", "--sizes", "--dtype",
                                                  "--windows"])
    assert _flags("ddp") == sorted(DIST_COMMON + [
        "--strategies", "--model", "--hf-config", "--layers", "--attention", "--batch", "--seq",
        "--lr", "--seed", "--zero-models", "--zero-scheme", "--zero-ranks"])


def test_a_case_in_error_fails_the_run_after_writing_it(tmp_path):
    """CI gates on exit codes: a run whose case ended in `error` exits 1, and its results are
    written first."""
    out = tmp_path / "r.json"
    proc = run_cli("attention", "--seq", "64", "--heads", "2", "--head-dim", "16", "--impl",
                   "standard", "--timeout", "0.1", "--json", str(out), "-q")
    assert proc.returncode == 1, proc.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert case["status"] == "error" and case["reason"].startswith("timed out after 0.1 s")
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("llmbench: error: 1 of 1 case(s) ended in error (first: "
                    f"standard/seq=64/fwd: error: {case['reason']}); --fail-on never records "
                    "without failing")
    assert "standard" in proc.stdout  # the table was printed too
    # --fail-on never records the same without failing; an oom-only gate still fails on error.
    quiet = run_cli("attention", "--seq", "64", "--heads", "2", "--head-dim", "16", "--impl",
                    "standard", "--timeout", "0.1", "--json", str(out), "-q", "--fail-on",
                    "never")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(out.read_text())["cases"][0]["status"] == "error"
    bad = run_cli("attention", "--fail-on", "sometimes")
    assert bad.returncode == 2 and "--fail-on" in bad.stderr


def test_every_benchmark_command_takes_fail_on():
    """One exit-code rule for every command that runs cases."""
    for name in ("attention", "kvcache", "amp", "checkpoint", "optim", "accum", "precision",
                 "schedule", "align", "comm", "ddp", "run"):
        assert "--fail-on" in _flags(name), name
    tune = typer.main.get_command(app).commands["tune"].commands["attention"]
    assert "--fail-on" in [opt for p in tune.params for opt in p.opts]


def test_no_private_imports_of_typer():
    import pathlib

    sources = pathlib.Path(ROOT, "llmbench").rglob("*.py")
    offenders = [str(p) for p in sources
                 if re.search(r"^\s*(from|import) typer\._", p.read_text(), re.M)]
    assert offenders == []


def test_results_that_cannot_be_written_are_kept_and_the_run_fails(tmp_path, monkeypatch):
    """A full disk when --json is written (faked: os.replace of that file fails with ENOSPC):
    one line naming the path and the reason, the table still printed, the document kept where
    the line says, the old file untouched, exit 1."""
    import errno

    from llmbench.core.results import load_document

    target = tmp_path / "r.json"
    target.write_text("old")
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst) == str(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    proc = run_cli_inprocess("schedule", "--total", "500", "-q", "--json", str(target),
                             env={"LLMBENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1
    line = proc.stderr.strip()
    prefix = f"llmbench: error: cannot write {target}: No space left on device; the results " \
             "are kept in "
    assert "\n" not in line and line.startswith(prefix), proc.stderr
    kept = load_document(line.removeprefix(prefix))
    assert kept.benchmark == "schedule" and "cosine" in proc.stdout  # the table was shown
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json")] == []


def test_when_no_file_can_be_written_the_document_goes_to_stdout(tmp_path):
    """A real operating-system refusal: the run's file-size limit (RLIMIT_FSIZE, 1 KiB) fails
    every write of the document, at --json and where it would be kept; it is printed after
    the table instead, and the run exits 1."""
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal's kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    target = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "llmbench", "schedule", "--total", "500", "-q", "--json",
         str(target)],
        capture_output=True, text=True, timeout=120, preexec_fn=small_files,
        env={**os.environ, "LLMBENCH_CACHE": str(tmp_path / "cache"),
             "TMPDIR": str(tmp_path / "tmp"), "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        f"llmbench: error: cannot write {target}: File too large; no file could be written: "
        "the results document is printed on stdout above")
    table, _, document = proc.stdout.partition("\n{")
    assert "cosine" in table
    assert json.loads("{" + document)["benchmark"] == "schedule"
    assert not target.exists()


def test_a_json_path_that_cannot_be_a_file_is_bad_input_before_anything_runs(tmp_path):
    (tmp_path / "file").write_text("")
    proc = run_cli_inprocess("attention", "--seq", "64", "--json",
                             str(tmp_path / "file" / "r.json"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"llmbench: error: --json {tmp_path}/file/r.json: cannot "
                                  "make its folder: ")
