"""The result documents CI users parse (the results contract), and atomic writing.

Change a field's meaning only together with SCHEMA_VERSION. `llmbench schema` prints the JSON
Schema of `ResultDocument`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmbench import __version__
from llmbench.core.errors import OutputError, UsageError, one_line
from llmbench.core.timing import TimeStats

SCHEMA_VERSION = 1

Status = Literal["ok", "oom", "skipped", "unavailable", "error"]
MetricValue = TimeStats | int | float | bool | str | list[float] | None


class ResultsError(UsageError):
    """A file that is not a readable llmbench result of a schema version we understand."""


class ToolInfo(BaseModel):
    name: Literal["llmbench"] = "llmbench"
    version: str = __version__


class EnvInfo(BaseModel):
    """Where the numbers came from. Fields that do not apply (no GPU) are null."""

    model_config = ConfigDict(extra="allow")

    device: str
    gpu_name: str | None = None
    compute_capability: str | None = None
    gpu_memory_bytes: int | None = None
    sm_count: int | None = None
    driver: str | None = None
    cuda: str | None = Field(None, description="the CUDA version torch was built with")
    cuda_driver: str | None = None
    cudnn: str | None = None
    torch: str | None = None
    triton: str | None = None
    flash_attn: str | None = None
    cpu_model: str
    cores: int = Field(description="CPU cores this process may use")
    cpu_isa: str | None = None
    ram_bytes: int | None = None
    python: str = Field(default_factory=platform.python_version)
    os: str = Field(default_factory=lambda: f"{platform.system()} {platform.release()}")
    git_commit: str | None = None
    profile: str
    profile_source: str | None = None
    profile_reason: str | None = None
    memory_method: str | None = Field(None, description="how peak_memory_bytes was measured")
    # What else moves the figures. Absent from documents of older llmbench versions.
    torch_threads: int | None = Field(
        None, description="torch's intra-op threads (torch.get_num_threads())")
    cpu_affinity: str | None = Field(
        None, description="the CPUs the process may run on, e.g. '0-3,8'")
    matmul_allow_tf32: bool | None = Field(
        None, description="torch.backends.cuda.matmul.allow_tf32")
    cudnn_allow_tf32: bool | None = Field(None, description="torch.backends.cudnn.allow_tf32")
    cudnn_benchmark: bool | None = Field(None, description="torch.backends.cudnn.benchmark")
    cuda_visible_devices: str | None = Field(
        None, description="$CUDA_VISIBLE_DEVICES; null when unset")
    gpu_sm_clock_mhz: int | None = Field(None, description="SM clock when the run started")
    gpu_sm_clock_max_mhz: int | None = None
    gpu_mem_clock_mhz: int | None = Field(
        None, description="memory clock when the run started")
    gpu_mem_clock_max_mhz: int | None = None
    gpu_power_limit_w: float | None = Field(None, description="the enforced power limit")
    gpu_power_draw_w: float | None = Field(None, description="power draw when the run started")
    gpu_temperature_c: int | None = Field(None, description="when the run started")
    gpu_persistence_mode: bool | None = None
    gpu_ecc: bool | None = Field(None, description="ECC enabled (the current mode)")


class TracedOp(BaseModel):
    """One operator (on a GPU: a kernel or copy) of a traced call, by self time."""

    model_config = ConfigDict(extra="forbid")

    name: str
    calls: int
    self_ms: float = Field(description="self time in the traced call, ms")
    pct: float = Field(description="share of the sum of every entry's self time, %")


class CaseTrace(BaseModel):
    """What --trace / --memory-snapshot found: one extra call of the case's timed function,
    after its timing, under torch.profiler. Absent from untraced cases and older documents."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="the Chrome/Perfetto trace (JSON) written")
    wall_ms: float | None = Field(
        None, description="wall time of the profiled call (slower than the timed ones)")
    ranked_by: Literal["self_cpu", "self_device"] | None = None
    self_total_ms: float | None = Field(
        None, description="the sum of every entry's self time, the base of `pct`")
    top: list[TracedOp] = Field(default_factory=list)
    memory_snapshot: str | None = Field(
        None, description="the CUDA allocator snapshot (pickle) for pytorch.org/memory_viz")
    error: str | None = None
    memory_snapshot_error: str | None = None


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any]
    status: Status
    reason: str | None = None
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    trace: CaseTrace | None = Field(None, exclude_if=lambda v: v is None,
                                    description="--trace / --memory-snapshot: what one extra "
                                    "call found")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def time(self) -> TimeStats | None:
        value = self.metrics.get("time_ms")
        return value if isinstance(value, TimeStats) else None


class ResultDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    tool: ToolInfo = Field(default_factory=ToolInfo)
    benchmark: str
    created_at: str = Field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    env: EnvInfo
    config: dict[str, Any]
    cases: list[CaseResult]
    summary: dict[str, Any] = Field(
        default_factory=dict, description="figures derived across cases (e.g. scaling fits)")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def json_schema() -> dict[str, Any]:
    schema = ResultDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"llmbench result document, schema_version {SCHEMA_VERSION}"
    return schema


def write_atomic(text: str, path: str | Path) -> Path:
    """Write `text` to `path` so that a reader sees the old file or the whole new one, never half.

    A temporary file in the same directory is written, flushed to disk and renamed over `path`.
    An operating-system failure (a full disk, no permission, a folder that cannot be made) is
    an OutputError naming the path and the reason, and leaves the old file as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name for the JSON results")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def check_writable(path: str | Path, flag: str) -> None:
    """Before anything is measured: `path` can be written as far as one can tell without
    writing it (its folder exists or can be made, and is a writable folder); else bad input."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot make its folder: {exc.strerror or exc}") \
            from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: its folder {path.parent} is not writable")


def write_document(doc: ResultDocument, path: str | Path) -> Path:
    return write_atomic(doc.to_json() + "\n", path)


def keep_unsaved(text: str, name: str) -> Path | None:
    """Where a document that could not be written where asked is kept instead: a new file
    under $LLMBENCH_CACHE/unsaved, else under the system's temporary folder; None when
    neither can be written either."""
    from llmbench.core.cache import cache_dir

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    file = f"{Path(name).stem}-{stamp}-{os.getpid()}.json"
    for folder in (cache_dir() / "unsaved", Path(tempfile.gettempdir()) / "llmbench-unsaved"):
        try:
            return write_atomic(text, folder / file)
        except OutputError:
            continue
    return None


@dataclass(frozen=True)
class RunFolder:
    """A run directory as `llmbench run` writes it: its result files (every *.json but the
    index), and from index.json the suite's name and each file's entry name and thresholds."""

    files: list[Path]
    suite: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # file name -> entry name
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)  # entry -> metric


def read_run_folder(path: Path) -> RunFolder:
    """`path`'s results and index; a bad index or a folder without results is ResultsError."""
    index_path = path / "index.json"
    files = [f for f in sorted(path.glob("*.json")) if f.name != "index.json"]
    suite, labels, thresholds = None, {}, {}
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            suite = index.get("suite")
            for entry in index.get("benchmarks", []):
                labels[entry["file"]] = entry["name"]
                thresholds[entry["name"]] = {
                    k: float(v) for k, v in (entry.get("thresholds") or {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ResultsError(f"{index_path}: not an llmbench run index ({exc})") from None
    if not files:
        raise ResultsError(f"{path}: no llmbench result files in this directory")
    return RunFolder(files, suite, labels, thresholds)


def load_document(path: str | Path) -> ResultDocument:
    """Read and validate a result file, with a one-line error for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or (data.get("tool") or {}).get("name") != "llmbench":
        raise ResultsError(f"{path}: not an llmbench result (no tool.name == 'llmbench')")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r} is not supported "
                           f"(this llmbench reads schema_version {SCHEMA_VERSION})")
    try:
        return ResultDocument.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ResultsError(f"{path}: invalid llmbench result at {where}: "
                           f"{one_line(err['msg'])}") from None
