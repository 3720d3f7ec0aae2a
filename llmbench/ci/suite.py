"""`llmbench run SUITE.toml --out DIR`: a fixed list of benchmark invocations, run in order.

    name = "ci-cpu"
    threshold = "5%"                     # compare's default for this suite (optional)
    thresholds = { time = "50%" }        # per metric, or per family: time, memory, error

    [[bench]]
    name = "attention"                   # unique; the results file is DIR/<name>.json
    command = "attention"                # any benchmark subcommand
    args = ["--seq", "512,1024", "--max-time", "1"]
    thresholds = { time_ms = "10%" }     # per-metric overrides for compare (optional)

This module parses the file (no command line here: ci sits below cli). Running it, and
checking every entry's flags, values, configs and devices with the real command line before
anything runs, is `llmbench.cli.suites`; a mistake is one line naming the file, the line and
the field. Results go to DIR/<name>.json, and DIR/index.json lists them with their
thresholds; the index is rewritten after every benchmark, so an interrupted run keeps what
finished.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmbench.ci.compare import parse_threshold
from llmbench.core.errors import UsageError, first_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESERVED = {"--json", "--format", "--quiet", "-q"}  # the runner sets these itself


def _percent_table(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: parse_threshold(x) for k, x in v.items()}
    return v


class SuiteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    command: str
    args: list[str] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)

    _thresholds = field_validator("thresholds", mode="before")(_percent_table)

    @field_validator("command")
    @classmethod
    def _known(cls, v: str) -> str:
        from llmbench import benches

        commands = sorted({b.words()[0] for b in benches.classes()})
        if v not in commands:
            raise ValueError(f"unknown benchmark command {v!r} (choose from "
                             f"{', '.join(commands)})")
        return v

    @field_validator("args")
    @classmethod
    def _not_reserved(cls, v: list[str]) -> list[str]:
        for arg in v:
            if arg.split("=")[0] in RESERVED:
                raise ValueError(f"{arg} is set by the suite runner; leave it out")
        return v


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    threshold: float = 0.05
    thresholds: dict[str, float] = Field(default_factory=dict)
    bench: list[SuiteEntry] = Field(min_length=1)

    @field_validator("threshold", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> Any:
        return parse_threshold(v) if isinstance(v, (str, int, float)) else v

    _thresholds = field_validator("thresholds", mode="before")(_percent_table)

    @field_validator("bench")
    @classmethod
    def _unique(cls, v: list[SuiteEntry]) -> list[SuiteEntry]:
        seen = set()
        for e in v:
            if e.name in seen:
                raise ValueError(f"two entries are named {e.name!r}")
            seen.add(e.name)
        return v


def line_of(text: str, bench_index: int | None, key: str | None) -> int:
    """1-based line of `key` in the bench_index-th [[bench]] table (or the top level)."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    headers = [i for i, line in enumerate(lines) if re.match(r"\s*\[", line)]
    if bench_index is not None:
        benches = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*bench\s*\]\]", line)]
        if bench_index < len(benches):
            start = benches[bench_index]
            later = [h for h in headers if h > start]
            end = later[0] if later else len(lines)
    elif headers:
        end = headers[0]
    if key:
        for i in range(start, end):
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return start + 1


def parse_suite(path: str | Path) -> tuple[Suite, str]:
    """The suite file, parsed and checked field by field (one line naming the file, the line
    and the field on a mistake), and its text. Whether each entry's flags are right is the
    command line's to say: `llmbench.cli.suites.load_suite` asks it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such suite file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        loc, msg = first_problem(exc, plain=True)
        index = loc[1] if len(loc) > 1 and loc[0] == "bench" and isinstance(loc[1], int) \
            else None
        key = next((p for p in loc[2:] if isinstance(p, str)), None) if index is not None \
            else (loc[0] if loc and isinstance(loc[0], str) else None)
        field = ".".join(str(p) for p in loc) or "suite"
        raise UsageError(f"{path}:{line_of(text, index, key)}: {field}: {msg}") from None
    return suite, text
