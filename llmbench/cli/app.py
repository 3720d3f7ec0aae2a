"""The `llmbench` command. Subcommand modules import torch only inside their functions, so
`llmbench --help` stays fast."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmbench import __version__, benches
from llmbench.cli.ci import compare, export, report, run
from llmbench.cli.click_errors import ClickException
from llmbench.cli.commands import register
from llmbench.cli.env import env
from llmbench.cli.history import history
from llmbench.cli.schema import schema
from llmbench.core.errors import OutputError, RunFailed, UsageError

app = typer.Typer(
    name="llmbench",
    help="Measure what LLM training optimizations really buy, on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"llmbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True,
        callback=_version)] = False,
) -> None:
    """Measure what LLM training optimizations really buy, on this machine.

    Every command writes a versioned JSON results document (--json PATH or --format json)
    next to its table. `llmbench schema` prints that document's JSON Schema.
    """


app.command(name="env")(env)
register(app, benches.classes())  # one command per benchmark, from its declaration
app.command(name="run")(run)
app.command(name="compare")(compare)
app.command(name="export")(export)
app.command(name="report")(report)
app.command(name="schema")(schema)
app.add_typer(history, name="history")


def _fail(message: str, code: int = 2) -> None:
    """Bad input: one line on stderr, no traceback."""
    sys.stderr.write(f"llmbench: error: {message}\n")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="llmbench", standalone_mode=False)
    except UsageError as exc:
        _fail(str(exc))
    except (RunFailed, OutputError) as exc:  # a failed process group; a file not written
        _fail(str(exc), 1)
    except ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)
