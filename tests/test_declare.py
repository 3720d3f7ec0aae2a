"""The declarations every benchmark makes: options, metrics and typed records."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict

from llmbench.core.declare import (
    COMMON,
    RECORD,
    Metric,
    Opt,
    find,
    flag_of,
    option_of,
    unknown_keys,
)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seqs: Annotated[list[int], Opt("Lengths.", flag="--seq", parse="sweep")] = [1]
    head_dim: Annotated[int, Opt("Head dim.")] = 64
    hidden: int = 3


def test_options_and_flags():
    assert option_of(_Config.model_fields["seqs"]).parse == "sweep"
    assert option_of(_Config.model_fields["hidden"]) is None
    assert flag_of(_Config, "seqs") == "--seq"
    assert flag_of(_Config, "head_dim") == "--head-dim"
    assert flag_of(_Config, "timing") == "--max-time"


def test_metric_lookup_and_families():
    declared = (Metric("time_ms", "ms", "lower"),
                Metric("memory/*_bytes", "B", "lower"),
                Metric("memory/policy_bytes", "B", "info"),
                Metric("speedup_x", "x", "higher", derived=True),
                Metric("grad_error", "abs", "lower", family="error", floor=1e-6))
    assert find(declared, "memory/policy_bytes").better == "info"  # the exact name first
    assert find(declared, "memory/reference_bytes").better == "lower"  # then a pattern
    assert find(declared, "memory_bytes") is None
    assert find(declared, "time_ms").threshold_family == "time"
    assert find(declared, "memory/x_bytes").threshold_family == "memory"
    assert find(declared, "grad_error").threshold_family == "error"
    assert not find(declared, "speedup_x").gated  # derived: judged through its measurement
    assert not find(declared, "memory/policy_bytes").gated
    assert find(COMMON, "gpu_sm_clock_mhz_start").better == "info"
    assert find(declared, "grad_error").as_json()["floor"] == 1e-6


class _Row(BaseModel):
    model_config = RECORD
    name: str


class _Summary(BaseModel):
    model_config = RECORD
    rows: list[_Row] = []
    by_kind: dict[str, _Row] = {}
    best: _Row | None = None


def test_unknown_keys_are_found_nested_and_ignored_when_reading():
    data = {"rows": [{"name": "a"}, {"name": "b", "extra": 1}],
            "by_kind": {"k": {"name": "c", "old": 2}}, "best": {"name": "d", "gone": 3},
            "new_field": 4}
    assert unknown_keys(_Summary, data) == ["rows[1].extra", "by_kind.k.old", "best.gone",
                                            "new_field"]
    read = _Summary.model_validate(data)  # a document of another version still reads
    assert read.rows[1].name == "b" and read.best.name == "d"
    assert unknown_keys(_Summary, {"rows": [], "best": None}) == []
