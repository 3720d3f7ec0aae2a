"""Every benchmark is whole, from its one declaration: a command with its options, a renderer,
a plot (or a stated reason for none), declared metrics, an entry in the CPU suite and a README
section. A missing piece fails here, not in a user's run. And a new benchmark needs nothing
but its module: tests/example_bench.py runs through a command built from it alone."""

import json
import re
from pathlib import Path

import pytest
import tomllib
import typer

from llmbench import benches
from llmbench.cli.app import app
from llmbench.cli.commands import declared_options, register
from llmbench.core.declare import PlotSpec, option_of
from llmbench.report import renderer_of
from llmbench.report.plots import plotter_of
from tests.conftest import ROOT
from tests.example_bench import SquareBenchmark

NAMES = benches.names()
COMMANDS = typer.main.get_command(app).commands


def _command(bench):
    command = COMMANDS[bench.words()[0]]
    for word in bench.words()[1:]:
        command = command.commands[word]
    return command


@pytest.mark.parametrize("name", NAMES)
def test_every_benchmark_is_whole(name):
    bench = type(benches.get(name))
    assert bench.name == name and bench.help.strip(), "a name and the command's help"
    command = _command(bench)
    options = {o for p in command.params for o in [*getattr(p, "opts", []),
                                                   *getattr(p, "secondary_opts", [])]}
    assert {"--json", "--format", "--fail-on", "-q", "--trace", "--memory-snapshot"} <= options
    for field_name, field in bench.config_type.model_fields.items():
        opt = option_of(field)
        if opt is not None and not opt.argument:
            assert (opt.flag or "--" + field_name.replace("_", "-")) in options, field_name
    assert callable(renderer_of(name))
    assert (bench.plot is None) != (bench.no_plot is None), "a plot, or a stated reason for none"
    if isinstance(bench.plot, str):
        assert callable(plotter_of(name))
    assert bench.metrics, "the metrics its cases report, declared"
    suite = tomllib.loads(Path(ROOT, "suites", "ci-cpu.toml").read_text())
    assert bench.words()[0] in {b["command"] for b in suite["bench"]}
    readme = Path(ROOT, "README.md").read_text()
    assert re.search(rf"^#+ .*`llmbench {' '.join(bench.words())}", readme, re.M), \
        f"no README section heading naming `llmbench {' '.join(bench.words())}`"


def test_no_two_benchmarks_share_a_command():
    words = [benches.declaration(n).words() for n in NAMES]
    assert len(set(words)) == len(words)


def _example_app():
    example = typer.Typer(add_completion=False)
    register(example, [SquareBenchmark])
    example.command(name="noop")(lambda: None)  # a group, as the real app is
    return typer.main.get_command(example)


def test_a_new_benchmark_needs_only_its_module(tmp_path, monkeypatch, capsys):
    """The example benchmark declares its options, metrics and plot; its command, table and
    JSON come from that alone (registered here by hand: it lives in tests/, not benches/)."""
    monkeypatch.setitem(benches._registry(), "square", SquareBenchmark)
    command = _example_app()
    assert set(declared_options(SquareBenchmark)) >= {"size", "device", "seed", "max_time",
                                                      "json_path", "fail_on"}
    out = tmp_path / "square.json"
    code = command.main(["square", "--size", "256,1024", "--size", "4096", "--no-isolate",
                         "--json", str(out), "-q"], standalone_mode=False)
    assert code in (None, 0)
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["cases"]] == ["n=256", "n=1024", "n=4096"]
    assert all(c["status"] == "ok" for c in doc["cases"])
    assert doc["cases"][0]["metrics"]["checked_error"] == 0.0
    table = capsys.readouterr().out
    assert "elements_per_s (1/s)" in table and "time_ms (ms)" in table
    assert SquareBenchmark.metric("time_ms").better == "lower"  # the common declaration
    assert isinstance(SquareBenchmark.plot, PlotSpec)


def test_a_new_benchmarks_bad_input_names_its_flag(monkeypatch):
    from llmbench.core.errors import UsageError

    command = _example_app()
    with pytest.raises(UsageError, match="^--size: 'x' is not an integer"):
        command.main(["square", "--size", "x"], standalone_mode=False)
