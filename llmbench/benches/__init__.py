"""One module per benchmark. Each declares its benchmark once (a `Benchmark` subclass with a
`name`); this registry finds them by walking the package, so a new benchmark needs no line
anywhere else. Benchmark modules import torch only inside functions: listing them (as
`llmbench --help` does) imports no torch."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from llmbench.core.benchmark import Benchmark
from llmbench.core.declare import COMMON, Metric, find
from llmbench.core.results import CaseResult, ResultDocument


@functools.cache
def _registry() -> dict[str, type[Benchmark]]:
    found: dict[str, type[Benchmark]] = {}
    for info in pkgutil.iter_modules(__path__, __name__ + "."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Benchmark)
                    and value.__module__ == module.__name__ and "name" in vars(value)):
                if value.name in found:
                    raise RuntimeError(f"two benchmarks named {value.name!r}: "
                                       f"{found[value.name].__module__}, {module.__name__}")
                found[value.name] = value
    return found


def names() -> list[str]:
    return sorted(_registry())


def classes() -> list[type[Benchmark]]:
    """Every benchmark class, in name order."""
    return [_registry()[n] for n in names()]


def get(name: str) -> Benchmark:
    return _registry()[name]()


def declaration(name: str) -> type[Benchmark] | None:
    """The benchmark class named `name`, or None (a document from another version)."""
    return _registry().get(name)


def metric_of(benchmark: str, metric: str) -> Metric | None:
    """How `benchmark` declares `metric` (the common declarations for a benchmark this version
    does not know); None when it is not declared, and so never judged."""
    bench = declaration(benchmark)
    return bench.metric(metric) if bench else find(COMMON, metric)


def params_of(doc: ResultDocument, case: CaseResult) -> Any:
    """`case`'s params as its benchmark's typed model (attribute access for renderers)."""
    bench = declaration(doc.benchmark)
    if bench is None or bench.params_type is None:
        raise KeyError(f"{doc.benchmark}: no typed params declared")
    return bench.params_type.model_validate(case.params)


def summary_of(doc: ResultDocument) -> Any:
    """The document's summary as its benchmark's typed model."""
    bench = declaration(doc.benchmark)
    if bench is None or bench.summary_type is None:
        raise KeyError(f"{doc.benchmark}: no typed summary declared")
    return bench.summary_type.model_validate(doc.summary)


def by_command(words: list[str]) -> type[Benchmark] | None:
    """The benchmark whose command starts `words` ("tune", "attention", ...), or None."""
    for bench in classes():
        if list(words[:len(bench.words())]) == list(bench.words()):
            return bench
    return None
