"""Benchmark commands made from the benchmarks' declarations.

Each benchmark's command is built here from its `Benchmark` class: the options are its config's
fields that carry an `Opt` (type, default, help and flag from the field), then the shared run
options it asks for and the output options every command has (`cli/common.py`). Nothing here
names a benchmark, so a new benchmark needs no line in the command line.

The same parsing serves suite validation (`config_of`): flags -> config -> the benchmark's
`resolve`, with nothing run and no process state changed.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llmbench.cli import common
from llmbench.core.benchmark import Benchmark
from llmbench.core.declare import Opt, flag_of, option_of
from llmbench.core.errors import UsageError
from llmbench.core.units import parse_bytes, parse_int, parse_int_sweep, parse_size_sweep

# The options every benchmark command has, after its own.
_OUTPUT = {"json_path": (common.JsonOption, None), "fmt": (common.FormatOption, "table"),
           "quiet": (common.QuietOption, False), "fail_on": (common.FailOnOption, "error")}
_RUN = {"profile": (common.ProfileOption, None), "timeout": (common.TimeoutOption, 600.0),
        "isolate": (common.IsolateOption, True)}
# Run options every benchmark command has, whatever its `run_options`.
_TRACE = {"trace": (common.TraceOption, None),
          "memory_snapshot": (common.MemorySnapshotOption, None)}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple)


def _default_of(field: FieldInfo) -> Any:
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _option(name: str, field: FieldInfo, opt: Opt) -> tuple[Any, Any]:
    """(annotation, default) of the typer parameter for config field `name`."""
    tp, _ = _unwrap(field.annotation)
    default = _default_of(field)
    text = opt.help
    if opt.default_text is not None:
        text += f" [default: {opt.default_text}]"
    cli_default: Any = None
    if _is_list(tp):
        cli_type: Any = list[str] | None
        if opt.default_text is None and default:
            text += f" [default: {_shown(default)}]"
        text += " Comma-separated or repeated."
    elif opt.parse is not None:
        cli_type = str | None
        if opt.default_text is None and default is not None:
            text += f" [default: {_shown(default)}]"
    elif tp is bool:
        cli_type, cli_default = bool, bool(default)
    else:
        cli_type = tp | None if default is None else tp
        cli_default = default
    if opt.argument:
        info = typer.Argument(help=text, show_default=False, rich_help_panel=opt.panel)
        if default is None and field.is_required():
            cli_type = tp
        return Annotated[cli_type, info], (inspect.Parameter.empty if field.is_required()
                                           else cli_default)
    flag = opt.flag or "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if tp is bool and opt.negatable else [flag]
    if opt.short:
        decls.append(opt.short)
    info = typer.Option(*decls, help=text, rich_help_panel=opt.panel,
                        show_default=cli_default is not None and not _is_list(tp),
                        metavar="A,B,..." if _is_list(tp) else None)
    return Annotated[cli_type, info], cli_default


def _max_time(config_type: type[BaseModel]) -> tuple[Any, Any]:
    default = _default_of(config_type.model_fields["timing"]).max_time_s
    info = typer.Option("--max-time", help="Stop measuring a case after this many seconds of "
                        f"samples. [default: {default:g}]", rich_help_panel="Run", min=0.01)
    return Annotated[float | None, info], None


def param_name(field_name: str, opt: Opt) -> str:
    """The command's parameter for a config field: its flag in Python spelling (`--seq` ->
    seq), the name `llmbench.run(...)` takes it under."""
    if opt.argument or not opt.flag:
        return field_name
    return opt.flag.lstrip("-").replace("-", "_")


def declared_options(bench: type[Benchmark]) -> dict[str, tuple[Any, Any]]:
    """Parameter name -> (annotation, default) of the command of `bench`, in --help order."""
    config_type = bench.config_type
    params: dict[str, tuple[Any, Any]] = {}
    for name, field in config_type.model_fields.items():
        opt = option_of(field)
        if opt is not None:
            params[param_name(name, opt)] = _option(name, field, opt)
    if "max_time" in bench.run_options and "timing" in config_type.model_fields:
        params["max_time"] = _max_time(config_type)
    for name, spec in _RUN.items():
        if name in bench.run_options:
            params[name] = spec
    params.update(_TRACE)
    params.update(_OUTPUT)
    return params


def _values(tp: Any, opt: Opt, flag: str, value: Any) -> Any:
    """A parsed command-line value as the config field takes it."""
    if _is_list(tp):
        texts = [t.strip() for item in value for t in str(item).split(",") if t.strip()]
        if opt.parse == "sweep":
            return parse_int_sweep(",".join(texts), what=flag) if texts else []
        if opt.parse == "sizes":
            return parse_size_sweep(",".join(texts), what=flag) if texts else []
        if opt.parse == "text":
            return texts
        if typing.get_args(tp) and typing.get_args(tp)[0] is int:
            return [parse_int(t, flag) for t in texts]
        return texts
    if opt.parse == "bytes":
        return parse_bytes(value)
    if opt.parse == "sweep":
        values = parse_int_sweep(value, what=flag)
        if len(values) != 1:
            raise UsageError(f"{flag}: takes one value here, got {len(values)}")
        return values[0]
    if opt.parse == "sizes":
        values = parse_size_sweep(value, what=flag)
        if len(values) != 1:
            raise UsageError(f"{flag}: takes one size here, got {len(values)}")
        return values[0]
    return value


def config_values(bench: type[Benchmark], params: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters as config fields (unset ones left to the config's default)."""
    from llmbench.core.timing import TimingPolicy

    config_type = bench.config_type
    values: dict[str, Any] = {}
    for name, field in config_type.model_fields.items():
        opt = option_of(field)
        value = params.get(param_name(name, opt)) if opt is not None else None
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue  # not given: the config's default
        tp, _ = _unwrap(field.annotation)
        values[name] = _values(tp, opt, flag_of(config_type, name), value)
    max_time = params.get("max_time")
    if max_time is not None:
        values["timing"] = TimingPolicy(max_time_s=max_time, min_time_s=min(1.0, max_time))
    return values


def build(bench: type[Benchmark], params: dict[str, Any]) -> BaseModel:
    """The validated config of `bench` from its command's parameters (UsageError naming the
    flag on bad input)."""
    return common.build_config(bench.config_type, **config_values(bench, params))


def _run(bench: type[Benchmark], params: dict[str, Any]) -> None:
    config = build(bench, params)
    instance = bench()
    common.run_and_emit(
        instance, config, json_path=params["json_path"], fmt=params["fmt"],
        quiet=params["quiet"], profile=params.get("profile"),
        timeout=params.get("timeout") or 600.0,
        isolate=params.get("isolate", bench.isolated) and bench.isolated,
        jobs=instance.jobs(config),
        after=lambda doc: _finish(instance, config, doc, params["quiet"]),
        fail_on=params["fail_on"], trace=params.get("trace"),
        memory_snapshot=params.get("memory_snapshot"))


def _finish(instance: Benchmark, config: BaseModel, doc: Any, quiet: bool) -> None:
    line = instance.finish(config, doc)
    if line and not quiet:  # a path in it stays whole, however narrow the terminal
        common.stderr().print(line, highlight=False, soft_wrap=True)


def command_for(bench: type[Benchmark]) -> Callable[..., None]:
    """A typer command function for `bench`, its signature made from the declaration."""
    options = declared_options(bench)

    def command(**params: Any) -> None:
        _run(bench, params)

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=default, annotation=annotation)
                  for name, (annotation, default) in options.items()]
    # Required positional arguments first: a signature cannot have them after defaults.
    parameters.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = bench.help
    command.__name__ = bench.name
    return command


def register(app: typer.Typer, benchmarks: list[type[Benchmark]]) -> None:
    """Add one command per benchmark to `app` (a sub-app per first word of multi-word ones)."""
    groups: dict[str, typer.Typer] = {}
    for bench in benchmarks:
        words = bench.words()
        if len(words) == 1:
            app.command(name=words[0])(command_for(bench))
            continue
        group = groups.get(words[0])
        if group is None:
            group = groups[words[0]] = typer.Typer(no_args_is_help=True,
                                                   help=bench.group_help)
            app.add_typer(group, name=words[0])
        group.command(name=words[1])(command_for(bench))


def parse(args: list[str]) -> tuple[type[Benchmark], BaseModel, dict[str, Any]]:
    """`llmbench ARGS...` (a benchmark's command line) as (its benchmark, its validated
    config, the command's parameters): a UsageError (or click's error) on bad input."""
    import typer

    from llmbench import benches
    from llmbench.cli.app import app

    bench = benches.by_command(args)
    if bench is None:
        raise UsageError(f"no benchmark command {' '.join(args[:2])!r}")
    command = typer.main.get_command(app)
    for word in bench.words():
        command = command.commands[word]
    with command.make_context(" ".join(bench.words()), list(args[len(bench.words()):]),
                              resilient_parsing=False) as ctx:
        params = dict(ctx.params)
    return bench, build(bench, params), params


def check(args: list[str]) -> None:
    """Parse `llmbench ARGS...` and resolve its config against this machine, as the command
    would before running. Nothing runs and no process state changes (suite validation)."""
    from llmbench.core import hardware
    from llmbench.core.profiles import select_profile

    bench, config, params = parse(args)
    instance = bench()
    hw = hardware.detect()
    resolved = instance.resolve(config, hw)
    device = instance.device_of(resolved, hw)
    select_profile(hw, params.get("profile"), device)
    from llmbench.core import tracing

    if params.get("memory_snapshot") is not None:
        tracing.check_snapshot_device(device)
        tracing.check_dir(params["memory_snapshot"], "--memory-snapshot")
    if params.get("trace") is not None:
        tracing.check_dir(params["trace"], "--trace")

