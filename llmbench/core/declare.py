"""What a benchmark declares about itself, once: its command-line options (on its config's
fields), its metrics (unit, direction, measured or derived) and, optionally, its plot.

The command line, suite validation, `compare`, `export`, the tables and the JSON Schema read
these declarations; nothing else lists a benchmark's options or metrics.

    class RopeConfig(BaseModel):
        seqs: Annotated[list[int], Opt("Sequence length(s).", flag="--seq", parse="sweep")] = [
            2048]

    class RopeBenchmark(Benchmark[RopeConfig]):
        metrics = (Metric("time_ms", "ms", "lower"), ...)
"""

from __future__ import annotations

import fnmatch
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Parse = Literal["sweep", "sizes", "bytes", "text"]
Better = Literal["lower", "higher", "info"]
Family = Literal["time", "memory", "error"]


@dataclass(frozen=True)
class Opt:
    """A config field's command-line option (put it in the field's `Annotated[...]`).

    - `flag`: the option's name; default `--` and the field's name with dashes.
    - `parse`: how the text becomes the value, for what plain types cannot say: `sweep`
      (integers: 8192 | 1024,4096 | 1024:16384 doubling), `sizes` (byte sizes: 1KiB:1GiB
      doubling | 4KiB,1MiB), `bytes` (one size: 80GiB), `text` (the text as typed, for the
      config's own validator to read). A list field always accepts both `a,b` and the option
      repeated.
    - `default_text`: shown as "[default: ...]" where the default is decided at run time.
    - `argument`: a positional argument instead of an option.
    - `negatable`: a boolean is `--x/--no-x`; False makes it the single switch `--x`.
    """

    help: str
    flag: str | None = None
    short: str | None = None
    panel: str | None = None
    parse: Parse | None = None
    default_text: str | None = None
    argument: bool = False
    negatable: bool = True


def option_of(field: Any) -> Opt | None:
    """The Opt declared on a pydantic FieldInfo, if any."""
    return next((m for m in getattr(field, "metadata", ()) if isinstance(m, Opt)), None)


def flag_of(config_type: Any, name: str) -> str:
    """The flag a user typed for config field `name` (for error messages)."""
    field = getattr(config_type, "model_fields", {}).get(name)
    opt = option_of(field) if field is not None else None
    if opt is not None and opt.flag:
        return opt.flag
    if name == "timing":
        return "--max-time"
    return "--" + name.replace("_", "-")


UNIT_FAMILY: dict[str, Family] = {"ms": "time", "s": "time", "B": "memory"}


@dataclass(frozen=True)
class Metric:
    """One metric a benchmark's cases report.

    - `name`: as in the results; a pattern with `*` names a family (`memory_*_bytes`).
    - `unit`: ms, s, B, TFLOP/s, GB/s, tok/s, %, x (a ratio), nats, abs, rel, 1 (a count or a
      fraction), or what fits.
    - `better`: lower, higher, or info (never gated: settings, predictions, the GPU's state).
    - `derived`: computed from other metrics of the run (throughput from time, a speed-up from
      two cases): exports and plots show it, `compare` judges the measurement it comes from.
    - `family`: the suite threshold family (time, memory, error); by default from the unit.
    - `floor`: an absolute value below which a change is rounding, not a regression (an error
      of 0.0 that becomes 1e-9 is an infinite relative change, and means nothing).
    """

    name: str
    unit: str
    better: Better
    help: str = ""
    derived: bool = False
    family: Family | None = None
    floor: float | None = None

    def matches(self, name: str) -> bool:
        return name == self.name or ("*" in self.name and fnmatch.fnmatchcase(name, self.name))

    @property
    def threshold_family(self) -> Family | None:
        if self.better == "info":
            return None
        return self.family or UNIT_FAMILY.get(self.unit)

    @property
    def gated(self) -> bool:
        """Whether `compare` judges it: a measurement with a direction."""
        return self.better != "info" and not self.derived

    def as_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "better": self.better, "derived": self.derived,
                "family": self.threshold_family, "floor": self.floor, "help": self.help}


def find(metrics: Iterable[Metric], name: str) -> Metric | None:
    """The declaration of `name`: an exact name first, then the first pattern that matches."""
    metrics = tuple(metrics)
    exact = next((m for m in metrics if m.name == name), None)
    return exact or next((m for m in metrics if m.matches(name)), None)


@dataclass(frozen=True)
class PlotSpec:
    """A plot the report draws without code of the benchmark's own: `y` against `x` (both
    names in a case's params or metrics), one line per value of `by`, log axes by choice."""

    x: str
    y: tuple[str, ...]
    by: str | None = None
    logx: bool = False
    logy: bool = False
    title: str = ""


# The floor of the numerical-error metrics (max |x - reference|): fp32 rounding sits below it,
# so an error of 0.0 that becomes 3e-8 is not a regression; bf16's ~1e-2 is far above it.
ERROR_FLOOR = 1e-6

# Metrics every timed case may carry (core.timing and core.gpu_state add them): declared here
# once, found by every benchmark after its own.
COMMON: tuple[Metric, ...] = (
    Metric("time_ms", "ms", "lower", "median time of one call or step"),
    Metric("gpu_throttle*", "1", "info", "the GPU's clock-throttle reasons while the case ran"),
    Metric("gpu_sm_clock_*", "MHz", "info", "the GPU's SM clock while the case ran"),
    Metric("gpu_temperature_*", "C", "info", "the GPU's temperature while the case ran"),
)


# The model config of a case's params and a summary as renderers read them (`params_type`,
# `summary_type`): frozen, and keys this llmbench does not know (a document of another
# version) are ignored when reading; the runner's strict mode finds undeclared keys, nested
# ones included (`unknown_keys`).
RECORD = ConfigDict(frozen=True, extra="ignore", defer_build=True)  # built when first read


def _models_in(annotation: Any, container: str = "") -> list[tuple[type[BaseModel], str]]:
    """The pydantic models an annotation holds, each with how it is held: "" (X, X | None),
    "list" (list[X]) or "dict" (dict[str, X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, container)]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple):
        return [m for arg in args for m in _models_in(arg, "list")]
    if origin is dict:
        return _models_in(args[1], "dict") if len(args) == 2 else []
    return [m for arg in args for m in _models_in(arg, container)]


def unknown_keys(model: type[BaseModel], data: Any, path: str = "") -> list[str]:
    """Keys of `data` that `model` does not declare, as dotted paths, nested models (also in
    lists and dicts) included."""
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out.append(f"{path}{key}")
            continue
        for inner, container in _models_in(field.annotation):
            if container == "list" and isinstance(value, list):
                items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
            elif container == "dict" and isinstance(value, dict):
                items = [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                items = [(key, value)]
            for where, item in items:
                out += unknown_keys(inner, item, f"{path}{where}.")
    return out
