"""The README's command lines are true to the command line: every `$ llmbench ...` it shows
parses, and a benchmark's resolves on this machine (nothing runs); the ones it shows failing
fail with the very line it prints."""

import re
import shlex

import pytest
import typer

from llmbench import benches
from llmbench.cli.app import app
from llmbench.cli.commands import check
from llmbench.core.errors import UsageError
from llmbench.core.profiles import ProfileError
from tests.conftest import ROOT

LINES = (ROOT / "README.md").read_text().splitlines()
SHOWN = [(i, shlex.split(line[2:].split(" | ")[0].split(" > ")[0])[1:])
         for i, line in enumerate(LINES) if line.startswith("$ llmbench ")]


def _error_after(i):
    following = LINES[i + 1] if i + 1 < len(LINES) else ""
    return following.removeprefix("llmbench: error: ") if following.startswith(
        "llmbench: error: ") else None


def test_the_readme_shows_commands():
    assert len(SHOWN) > 20


@pytest.mark.parametrize("i, args", SHOWN, ids=[" ".join(a)[:50] for _, a in SHOWN])
def test_readme_command_lines(i, args):
    expected_error = _error_after(i)
    if benches.by_command(args) is None:  # env, run, compare, ...: their flags parse
        command = typer.main.get_command(app).commands[args[0]]
        with command.make_context(args[0], args[1:]):
            pass
        return
    if expected_error is not None:
        with pytest.raises(UsageError) as info:
            check(args)
        assert str(info.value) == expected_error
        return
    try:
        check(args)
    except ProfileError as exc:  # a profile file of the user's, named in the example
        assert re.search(r"\.toml: profile file not found", str(exc)), exc
