"""Every benchmark is whole: a command with options, a renderer, a plot (or a stated reason
for none), an entry in the CPU suite and a README section. A missing piece fails here, not in
a user's run (a renderer missing used to surface as a KeyError after the measurement)."""

import importlib
import re
from pathlib import Path

import pytest
import tomllib
import typer

from llmbench import benches
from llmbench.cli.app import app
from llmbench.report import _RENDERERS
from llmbench.report.plots import NO_PLOT, PLOTTERS
from tests.conftest import ROOT

NAMES = benches.names()
COMMANDS = typer.main.get_command(app).commands
# The command that runs a benchmark, where its name differs (tune's subcommand).
COMMAND_OF = {"tune": ("tune", "attention")}


def _command(name):
    words = COMMAND_OF.get(name, (name,))
    command = COMMANDS[words[0]]
    for word in words[1:]:
        command = command.commands[word]
    return command


@pytest.mark.parametrize("name", NAMES)
def test_every_benchmark_is_whole(name):
    bench = benches.get(name)
    assert bench.name == name
    command = _command(name)
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    assert {"--json", "--format", "--fail-on"} <= options
    module, _, attr = _RENDERERS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert (name in PLOTTERS) != (name in NO_PLOT), "a plot, or a stated reason for none"
    suite = tomllib.loads(Path(ROOT, "suites", "ci-cpu.toml").read_text())
    assert COMMAND_OF.get(name, (name,))[0] in {b["command"] for b in suite["bench"]}
    readme = Path(ROOT, "README.md").read_text()
    assert re.search(rf"^#+ .*`llmbench {' '.join(COMMAND_OF.get(name, (name,)))}", readme,
                     re.M), f"no README section heading naming `llmbench {name}`"


def test_nothing_is_declared_for_a_benchmark_that_does_not_exist():
    assert set(_RENDERERS) == set(NAMES)
    assert set(PLOTTERS) | set(NO_PLOT) == set(NAMES)
