"""Click's base exception, found through typer's public API.

typer up to 0.25 depends on click and raises `click.ClickException`; from 0.26 on it vendors
click as the private `typer._click`. Both raise `typer.BadParameter`, a subclass of the
ClickException the installed typer uses, so that class is read from its ancestors rather than
imported from a private module.
"""

from __future__ import annotations

import typer

ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
