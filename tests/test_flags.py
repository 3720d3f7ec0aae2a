"""One meaning per flag, across every command the registry makes: the shared flags are
declared once (llmbench.core.flags, cli/common.py) and read, default and fail alike; lists
accept `a,b` and the flag repeated, everywhere. Generated from the registry: a new benchmark
is checked without a line here."""

import re
import typing

import pytest
import typer

from llmbench import benches
from llmbench.cli.app import app
from llmbench.cli.commands import config_values, param_name
from llmbench.core import flags
from llmbench.core.declare import option_of
from llmbench.core.errors import UsageError

ROOT = typer.main.get_command(app)


def _commands(group=ROOT, words=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*words, name))
        else:
            yield " ".join((*words, name)), command


COMMANDS = dict(_commands())
BENCHES = benches.classes()


def _params_with(flag):
    return [(name, p) for name, c in COMMANDS.items() for p in c.params
            if flag in getattr(p, "opts", []) or flag in getattr(p, "secondary_opts", [])]


# Flag -> the shared declaration every benchmark field under that flag must build on.
SHARED = {"--seq": (flags.SEQ, flags.SEQS), "--model": (flags.MODEL,), "--impl": (flags.IMPLS,),
          "--dtype": (flags.DTYPE,), "--device": (flags.DEVICE,), "--seed": (flags.SEED,),
          "--batch": (flags.BATCH,), "--heads": (flags.HEADS,), "--kv-heads": (flags.KV_HEADS,),
          "--head-dim": (flags.HEAD_DIM,), "--lr": (flags.LR,)}


def _fields_with(flag):
    for bench in BENCHES:
        for name, field in bench.config_type.model_fields.items():
            opt = option_of(field)
            if opt is not None and (opt.flag or "--" + name.replace("_", "-")) == flag:
                yield bench, name, field, opt


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_shared_benchmark_flags_build_on_one_declaration(flag):
    found = list(_fields_with(flag))
    assert found, f"no benchmark has {flag}"
    for bench, name, _, opt in found:
        assert any(opt.help.startswith(s.help) and opt.parse == s.parse
                   for s in SHARED[flag]), (bench.name, name, opt.help)


def _choices(param):
    """A parameter's choices, as click's (typer < 0.29) or typer's own parameters hold them."""
    if getattr(getattr(param, "type", None), "choices", None):
        return set(param.type.choices)
    annotation = param.type_descriptor.annotation
    for _ in range(3):  # Optional[Literal[...]] -> Literal[...] -> its values
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is typing.Literal:
            return set(args)
        annotation = args[0] if args else annotation
    return set()


def test_dtype_and_device_choices_are_spelled_alike():
    for flag, allowed in (("--dtype", set(flags.DTYPES)), ("--device", {"cpu", "cuda"})):
        for command, param in _params_with(flag):
            choices = _choices(param)
            assert choices and choices <= allowed, (command, flag, choices)
    devices = {frozenset(_choices(p)) for _, p in _params_with("--device")}
    assert devices == {frozenset({"cpu", "cuda"})}


@pytest.mark.parametrize("flag", ["--json", "--format", "--quiet", "--timeout", "--profile",
                                  "--fail-on", "--max-time", "--isolate", "--out", "--trace",
                                  "--memory-snapshot"])
def test_output_and_run_flags_mean_one_thing(flag):
    params = _params_with(flag)
    assert params
    if flag in ("--json", "--quiet", "--timeout", "--profile", "--fail-on", "--max-time",
                "--isolate", "--trace", "--memory-snapshot"):
        helps = {re.sub(r" \[default: [^]]*\]", "", p.help) for _, p in params}
        assert len(helps) == 1, (flag, helps)  # one declaration, one text
    if flag == "--format":  # what is printed (or written, for export): table first, then JSON
        for command, p in params:
            if command != "export":
                assert {"table", "json"} <= _choices(p), command
    if flag == "--out":  # a directory, where it exists
        assert all("irectory" in p.help for _, p in params), params


def test_every_command_takes_quiet():
    missing = [name for name, c in COMMANDS.items()
               if not any("-q" in getattr(p, "opts", []) for p in c.params)]
    assert missing == []


def test_every_benchmark_command_takes_trace_and_memory_snapshot():
    for bench in BENCHES:
        command = COMMANDS[" ".join(bench.words())]
        opts = {o for p in command.params for o in getattr(p, "opts", [])}
        assert {"--trace", "--memory-snapshot"} <= opts, bench.name


def _two(field, opt):
    """Two valid texts for a list option's items."""
    annotation = field.annotation
    if typing.get_origin(annotation) is not list:  # list[...] | None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if opt.parse == "sizes":
        return "4KiB", "8KiB"
    if typing.get_args(annotation)[0] is int:
        return "2", "4"
    return "a", "b"


@pytest.mark.parametrize("bench", BENCHES, ids=lambda b: b.name)
def test_lists_take_commas_or_repeats(bench):
    for name, field in bench.config_type.model_fields.items():
        opt = option_of(field)
        if opt is None or "list" not in str(field.annotation):
            continue
        first, second = _two(field, opt)
        key = param_name(name, opt)
        commas = config_values(bench, {key: [f"{first},{second}"]})
        repeated = config_values(bench, {key: [first, second]})
        assert commas == repeated and commas[name], (bench.name, name)


@pytest.mark.parametrize("bench", BENCHES, ids=lambda b: b.name)
def test_seq_reads_alike(bench):
    fields = [(n, f, o) for b, n, f, o in _fields_with("--seq") if b is bench]
    for name, field, _ in fields:
        assert config_values(bench, {"seq": _seq_value(field, "512")})[name] in (512, [512])
        if "list" in str(field.annotation):
            assert config_values(bench, {"seq": ["128:512"]})[name] == [128, 256, 512]
        else:
            with pytest.raises(UsageError, match="^--seq: takes one value here, got 3"):
                config_values(bench, {"seq": "128:512"})


def _seq_value(field, text):
    return [text] if "list" in str(field.annotation) else text


def test_a_text_option_reaches_its_validator_as_typed():
    """--varlen takes lengths or random:COUNT:MIN:MAX (drawn with --seed): the text goes to
    the config's own validator, not through the integer parser of other int lists."""
    from llmbench.benches.attention_varlen import parse_lengths
    from llmbench.cli.commands import parse

    _, config, _ = parse(["attention", "--varlen", "random:4:16:64", "--seed", "3"])
    assert config.varlen == parse_lengths("random:4:16:64", seed=3)
    _, config, _ = parse(["attention", "--varlen", "64,32", "--varlen", "16"])
    assert config.varlen == [64, 32, 16]
    with pytest.raises(UsageError, match="^--varlen: 'random:3': write random:COUNT:MIN:MAX"):
        parse(["attention", "--varlen", "random:3"])
