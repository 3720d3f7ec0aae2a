"""Every JSON document llmbench writes validates against `llmbench schema`: each command that
takes --json, run once at its smallest and fastest (inline, tiny shapes, --max-time 0.05);
the commands listed from the command line, so a new one without an entry here fails.

comm and ddp run one after the other in one background process, each as the one rank of a
launch (the environment torchrun gives a rank: no launcher) on gloo, while the rest run here.
tune (no --no-isolate) and align run their parsed command inline, the document written as the
command writes it; align with 16 held-out pairs instead of 256 (a config field, not a flag:
its evaluation is most of its time). The attention, kvcache and schedule documents of the
session's tiny run are validated as they are.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys

import jsonschema
import pytest
import typer

from llmbench.cli.app import app
from tests.conftest import ROOT, run_cli_inprocess

FAST = ["--no-isolate", "--device", "cpu", "--max-time", "0.05", "-q"]
TINY = ["--model", "tiny", "--layers", "1", "--seq", "16"]

# Command -> its arguments here (in-process unless named in LAUNCHED or INLINE).
ARGS: dict[str, list[str]] = {
    "env": ["--device", "cpu"],
    "accum": [*TINY, "--batch", "2", "--micro", "1", *FAST],
    "align": ["sft", "--layers", "1", "--steps", "2", "--sft-steps", "2", "--batch", "2",
              "--eval-samples", "2", "--device", "cpu"],
    "amp": [*TINY, "--variants", "fp32", "--steps", "5", "--batch", "1", *FAST],
    "attention": [],  # the tiny run's
    "checkpoint": ["--model", "tiny", "--layers", "1", "--seq", "16", "--policies", "none",
                   "--batch", "1", *FAST],
    "comm": ["--collectives", "broadcast", "--sizes", "1KiB", "--iters", "2", "--windows", "2",
             "--warmup", "1", "-q"],
    "ddp": [*TINY, "--strategies", "ddp", "--iters", "1", "--warmup", "0", "--batch", "1",
            "--device", "cpu", "-q"],
    "estimate": ["--model", "tiny", "-q"],
    "kvcache": ["--model", "mistral-7b", "--no-measure", "--memory", "1GiB", "-q"],  # a window
    "optim": [*TINY, "--optimizers", "sgd", "--batch", "1", *FAST],
    "peak": ["--square", "32", "--hidden", "32", "--tokens", "32", "--stream-size", "64KiB",
             "--device", "cpu", "--max-time", "0.05", "-q"],
    "precision": ["--formats", "fp16", "-q"],
    "schedule": [],  # the tiny run's
    "tune attention": ["--interpret"],
}
FROM_TINY_RUN = {"attention": "attention.json", "schedule": "schedule.json",
                 "kvcache-falcon": "kvcache.json"}
LAUNCHED = ("comm", "ddp")
INLINE = {"tune attention": {}, "align": {"heldout_pairs": 16}}  # name -> config updates

# One process, each command as rank 0 of a one-rank launch on its own port, in turn.
RANKS = """
import json, os, sys
from llmbench.cli.app import main
codes = []
for port, argv in json.loads(sys.argv[1]):
    os.environ["MASTER_PORT"] = str(port)
    try:
        main(argv)
    except SystemExit as exc:
        codes.append(exc.code or 0)
sys.exit(max(codes))
"""


def _commands_with_json(group=None, words=()):
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands_with_json(command, (*words, name))
        elif any("--json" in getattr(p, "opts", []) for p in command.params):
            yield " ".join((*words, name))


def _free_ports(n: int) -> list[int]:
    """`n` different ports free now (held open together, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _launch(commands: tuple[str, ...], out) -> subprocess.Popen:
    """`llmbench COMMAND ... --json OUT/COMMAND.json` for each command, in one process, each
    as rank 0 of a one-rank launch."""
    runs = [(port, [c, *ARGS[c], "--json", str(out / f"{c}.json")])
            for port, c in zip(_free_ports(len(commands)), commands, strict=True)]
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1"}
    return subprocess.Popen([sys.executable, "-c", RANKS, json.dumps(runs)], cwd=ROOT, env=env,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _inline(words: list[str], path, update: dict) -> None:
    """The parsed command run inline, its document written as the command writes it."""
    from llmbench.cli.commands import parse
    from llmbench.core.results import write_document
    from llmbench.core.runner import RunOptions, run_benchmark

    bench, config, _ = parse(words)
    config = config.model_copy(update=update)
    write_document(run_benchmark(bench(), config, options=RunOptions(isolate=False)), path)


@pytest.fixture(scope="module")
def documents(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("documents")
    cache = {"LLMBENCH_CACHE": str(out / "cache")}  # align's reference policy
    launched = _launch(LAUNCHED, out)
    failures = {}
    # Every training case collects garbage before measuring memory; a full collection walks
    # every object alive (torch's and its compiler's tables: seconds each). Those are kept out
    # of it while the commands run.
    gc.freeze()
    try:
        for name, args in ARGS.items():
            if name in LAUNCHED or name in FROM_TINY_RUN:
                continue
            path = out / f"{name.replace(' ', '-')}.json"
            if name in INLINE:
                saved = dict(os.environ)
                os.environ.update(cache)
                try:
                    _inline([*name.split(), *args], path, INLINE[name])
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                continue
            proc = run_cli_inprocess(*name.split(), *args, "--json", str(path), env=cache)
            if proc.returncode != 0:
                failures[name] = proc.stderr.strip()[-500:]
    finally:
        gc.unfreeze()
    _, err = launched.communicate(timeout=300)
    if launched.returncode != 0:
        failures[" and ".join(LAUNCHED)] = err.strip()[-500:]
    assert not failures, failures
    docs = {name: json.loads((out / f"{name.replace(' ', '-')}.json").read_text())
            for name in ARGS if name not in FROM_TINY_RUN}
    docs.update({name: json.loads((tiny_run / file).read_text())
                 for name, file in FROM_TINY_RUN.items()})
    return docs


@pytest.fixture(scope="module")
def validator():
    proc = run_cli_inprocess("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_command_that_writes_a_document_is_here():
    assert set(_commands_with_json()) == set(ARGS)


@pytest.mark.parametrize("name", [*ARGS, "kvcache-falcon"])
def test_document_validates_against_llmbench_schema(name, documents, validator):
    doc = documents[name]
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"[:300]
              for e in validator.iter_errors(doc)]
    assert not errors, errors
    if name == "env":
        assert "benchmark" not in doc and doc["tool"]["name"] == "llmbench"
    else:
        assert doc["benchmark"] == name.split()[0].split("-")[0]
        failed = [(c["name"], c["status"], c["reason"]) for c in doc["cases"]
                  if c["status"] != "ok"]
        assert not failed


def test_the_schema_rejects_broken_documents(documents, validator):
    env = {k: v for k, v in documents["env"].items() if k != "implementations"}
    assert not validator.is_valid(env)  # an environment report without its implementations
    assert not validator.is_valid({**documents["env"], "tool": {"name": "other"}})
    results = json.loads(json.dumps(documents["precision"]))
    results["cases"][0]["status"] = "exploded"
    assert not validator.is_valid(results)
    assert not validator.is_valid({k: v for k, v in documents["precision"].items()
                                   if k != "cases"})


def test_the_windowed_kvcache_fields_are_in_the_document(documents):
    summary = documents["kvcache"]["summary"]
    assert summary["window"]["tokens"] == 4096
    published = next(r for r in summary["analytic"] if r["published"])
    assert published["windowed_total_bytes"] == 2 * 32 * 8 * 128 * 2 * 4096
    assert published["windowed_max_context"] is None  # 512 MiB fits in 1 GiB: any context


def test_one_rank_broadcast_reports_busbw_equal_to_algbw(documents):
    (case,) = documents["comm"]["cases"]
    m = case["metrics"]
    assert documents["comm"]["config"]["nproc"] == 1 and m["bus_factor"] == 1.0
    assert m["busbw_gb_per_s"] == m["algbw_gb_per_s"] > 0
