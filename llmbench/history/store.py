"""The results store of `llmbench history`: result documents, run after run, in one SQLite
file (stdlib sqlite3), so their figures can be followed over commits.

The file is llmbench's own: a `meta` table names it (`format` = llmbench-history) and holds
its `schema_version`; llmbench creates it and migrates older versions forward (MIGRATIONS),
and refuses one of a newer version, a file that is not SQLite, and an SQLite file of
someone else's. It runs in WAL mode and every import is one transaction: a reader always sees
the runs before an import or all of them after it, and an import that is killed leaves the
store as it was.

A run is one result document: where it came from (`digest`, the SHA-256 of its JSON with
sorted keys, so the same document is never imported twice by mistake), when it ran (`time`,
its created_at), the git commit and branch, the suite and the entry's label (`llmbench run`'s
index), and the environment's fingerprint (device name, torch version, profile): figures are
compared only between runs of one fingerprint. Its cases and their numeric metrics (a timed
metric as its median, with its raw samples as JSON) go in `cases` and `metrics`; the document
itself is kept whole in `runs.document`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmbench import __version__
from llmbench.core.errors import UsageError
from llmbench.core.results import ResultDocument, ResultsError, load_document, read_run_folder
from llmbench.core.timing import TimeStats

FORMAT = "llmbench-history"
SCHEMA_VERSION = 1
DB_ENV = "LLMBENCH_DB"
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    imported_at TEXT NOT NULL,
    time TEXT NOT NULL,
    git_commit TEXT,
    branch TEXT,
    suite TEXT,
    label TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    llmbench_version TEXT NOT NULL,
    source TEXT,
    document TEXT NOT NULL
);
CREATE INDEX runs_by_time ON runs (time, id);
CREATE TABLE cases (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    params TEXT NOT NULL
);
CREATE INDEX cases_by_run ON cases (run_id);
CREATE TABLE metrics (
    case_id INTEGER NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL,
    samples TEXT,
    PRIMARY KEY (case_id, name)
);
"""

# MIGRATIONS[v] takes a store of schema version v - 1 to v (0: an empty file).
MIGRATIONS: dict[int, str] = {1: SCHEMA_V1}


def default_path() -> Path:
    """$LLMBENCH_DB, else history.sqlite in llmbench's cache folder."""
    from llmbench.core.cache import cache_dir

    return Path(os.environ.get(DB_ENV) or cache_dir() / "history.sqlite")


def fingerprint(doc: ResultDocument) -> str:
    """The environment a run's figures hold for: the device's name (the GPU's, else the
    CPU's), torch's version and the profile."""
    env = doc.env
    return f"{env.gpu_name or env.cpu_model} | torch {env.torch or '?'} | profile {env.profile}"


def digest(data: Any) -> str:
    """SHA-256 of a parsed JSON document with sorted keys and no spaces: the same document
    gives the same digest however it was indented."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Source:
    """A result file to import: its path, its label (the suite entry's name, else the
    benchmark's) and the suite it ran in (from a run directory's index)."""

    path: Path
    label: str | None = None
    suite: str | None = None


def sources(paths: Iterable[Path]) -> Iterator[Source]:
    """The result files named by `paths`: a file as it is, a run directory as `llmbench run`
    writes it (index.json for the suite and the entries' names, every other *.json a result;
    as `llmbench compare` reads it)."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ResultsError(f"{path}: no such file or directory")
        if path.is_file():
            yield Source(path)
            continue
        folder = read_run_folder(path)
        for file in folder.files:
            yield Source(file, folder.labels.get(file.name), folder.suite)


@dataclass
class Point:
    """One run's value of a series."""

    run_id: int
    time: str
    commit: str | None
    branch: str | None
    value: float


@dataclass
class Series:
    """One metric of one case of one benchmark (by its label), in one environment, in time
    order (the documents' created_at, then the order of import)."""

    label: str
    benchmark: str
    case: str
    metric: str
    fingerprint: str
    points: list[Point] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.label, self.case, self.metric

    @property
    def values(self) -> list[float]:
        return [p.value for p in self.points]


def metric_value(value: Any) -> tuple[float, list[float] | None] | None:
    """What the store keeps of a metric: a timed one's median and samples, a finite number
    as it is; None for the rest (flags, text, curves)."""
    if isinstance(value, TimeStats):
        return value.median, value.samples
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return (float(value), None) if math.isfinite(value) else None


class Store:
    """An open results store (use `open_store`)."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole at the end, rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already (disk full)
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def run_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM runs").fetchone()[0]

    def run_by_digest(self, value: str) -> int | None:
        row = self.conn.execute("SELECT id FROM runs WHERE digest = ?", (value,)).fetchone()
        return row[0] if row else None

    def add(self, items: Iterable[Source], *, commit: str | None = None,
            branch: str | None = None, replace: bool = False,
            on_added: Callable[[int, Source, ResultDocument], None] | None = None) -> int:
        """Import every document of `items` in one transaction (read one at a time, so the
        first bad one stops the import with nothing written); returns how many. A document
        already in the store is refused unless `replace`, which imports it anew."""
        count = 0
        with self.transaction() as conn:
            for item in items:
                doc, data = _read(item.path)
                key = digest(data)
                present = self.run_by_digest(key)
                if present is not None:
                    if not replace:
                        raise UsageError(f"{item.path}: already in the store as run {present} "
                                         f"(the same document); --replace imports it again")
                    conn.execute("DELETE FROM runs WHERE id = ?", (present,))
                run_id = self._insert(
                    conn, doc, digest=key, source=str(item.path), label=item.label,
                    suite=item.suite, commit=commit or doc.env.git_commit, branch=branch,
                    document=json.dumps(data))
                count += 1
                if on_added:
                    on_added(run_id, item, doc)
        return count

    def _insert(self, conn: sqlite3.Connection, doc: ResultDocument, *, digest: str,
                source: str | None, label: str | None, suite: str | None,
                commit: str | None, branch: str | None, document: str,
                imported_at: str | None = None) -> int:
        cur = conn.execute(
            "INSERT INTO runs (digest, imported_at, time, git_commit, branch, suite, label, "
            "benchmark, fingerprint, llmbench_version, source, document) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, imported_at or _now(), doc.created_at, commit, branch, suite,
             label or doc.benchmark, doc.benchmark, fingerprint(doc), doc.tool.version,
             source, document))
        run_id = cur.lastrowid
        for case in doc.cases:
            cur = conn.execute(
                "INSERT INTO cases (run_id, name, status, reason, params) VALUES (?, ?, ?, ?, ?)",
                (run_id, case.name, case.status, case.reason, json.dumps(case.params)))
            rows = []
            for name, value in case.metrics.items():
                kept = metric_value(value)
                if kept is not None:
                    rows.append((cur.lastrowid, name, kept[0],
                                 None if kept[1] is None else json.dumps(kept[1])))
            conn.executemany("INSERT OR REPLACE INTO metrics (case_id, name, value, samples) "
                             "VALUES (?, ?, ?, ?)", rows)
        return run_id

    def export(self, dest: Path) -> int:
        """Copy the whole store into the single file `dest` (SQLite's backup API, so a copy
        taken while another process imports is consistent), replacing it atomically;
        returns the number of runs."""
        dest = Path(dest)
        if dest.exists() and dest.resolve() == self.path.resolve():
            raise UsageError(f"{dest}: is the store itself; give another file")
        if dest.is_dir():
            raise UsageError(f"{dest}: is a directory; give a file name")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            os.close(fd)
        except OSError as exc:
            raise UsageError(f"{dest}: cannot write there: {exc.strerror or exc}") from None
        try:
            copy = sqlite3.connect(tmp)
            try:
                self.conn.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            finally:
                copy.close()
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return self.run_count()

    def merge(self, path: Path) -> tuple[int, int]:
        """Import the runs of the store file `path` that are not here yet (by digest), in one
        transaction: (added, already present)."""
        other = read_copy(path)
        added = present = 0
        try:
            runs = other.execute(
                "SELECT id, digest, imported_at, git_commit, branch, suite, label, source, "
                "document FROM runs ORDER BY id").fetchall()
            with self.transaction() as conn:
                for (run_id, key, imported_at, commit, branch, suite, label, source,
                     document) in runs:
                    if self.run_by_digest(key) is not None:
                        present += 1
                        continue
                    try:
                        doc = ResultDocument.model_validate_json(document)
                    except ValidationError:
                        raise UsageError(f"{path}: run {run_id} is not a result document this "
                                         f"llmbench reads (from a newer llmbench?)") from None
                    self._insert(conn, doc, digest=key, source=source, label=label,
                                 suite=suite, commit=commit, branch=branch, document=document,
                                 imported_at=imported_at)
                    added += 1
        finally:
            other.close()
        return added, present

    def series(self) -> list[Series]:
        """Every series of the store: one per (label, case, metric, fingerprint), its points
        the runs where that case ended ok with that metric."""
        rows = self.conn.execute(
            "SELECT r.id, r.time, r.git_commit, r.branch, r.label, r.benchmark, r.fingerprint, "
            "c.name, m.name, m.value FROM metrics m JOIN cases c ON m.case_id = c.id "
            "JOIN runs r ON c.run_id = r.id WHERE c.status = 'ok' AND m.value IS NOT NULL "
            "ORDER BY r.time, r.id")
        found: dict[tuple[str, str, str, str], Series] = {}
        for run_id, time, commit, branch, label, bench, fp, case, metric, value in rows:
            series = found.get((label, case, metric, fp))
            if series is None:
                series = found[(label, case, metric, fp)] = Series(label, bench, case, metric,
                                                                   fp)
            series.points.append(Point(run_id, time, commit, branch, value))
        return sorted(found.values(), key=lambda s: (s.key, s.points[0].time, s.fingerprint))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: Path) -> tuple[ResultDocument, Any]:
    """A result file validated (one line on anything else) and its parsed JSON."""
    doc = load_document(path)
    try:
        return doc, json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # changed under us since load_document read it
        raise ResultsError(f"{path}: cannot read: {exc}") from None


def _problem(path: Path, exc: sqlite3.Error) -> UsageError:
    return UsageError(f"{path}: not a readable llmbench history store ({exc})")


def _check_file(path: Path) -> None:
    """A file that exists and is not empty must begin as an SQLite database does."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise UsageError(f"{path}: not an llmbench history store (not an SQLite database)")


def prepare(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Check that `conn` holds an llmbench history store this llmbench can read, creating
    it in an empty database (when `create`) and migrating an older schema forward."""
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            if not create:
                raise UsageError(f"{path}: an empty database, not an llmbench history store")
            version = 0
        elif "meta" not in tables:
            raise UsageError(f"{path}: an SQLite database but not an llmbench history store "
                             f"(no meta table)")
        else:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT:
                raise UsageError(f"{path}: an SQLite database but not an llmbench history "
                                 f"store (meta.format is {meta.get('format')!r})")
            try:
                version = int(meta.get("schema_version", ""))
            except ValueError:
                raise UsageError(f"{path}: schema_version {meta.get('schema_version')!r} is "
                                 f"not a number") from None
            if version > SCHEMA_VERSION:
                raise UsageError(f"{path}: history store schema_version {version} is newer "
                                 f"than this llmbench reads ({SCHEMA_VERSION}); upgrade "
                                 f"llmbench (it is {__version__})")
        if version < SCHEMA_VERSION:
            _migrate(conn, version)
    except sqlite3.DatabaseError as exc:
        raise _problem(path, exc) from None


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION)),
                          ("written_by", f"llmbench {__version__}")])
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_store(path: Path | None = None, *, create: bool = False) -> Store:
    """The store at `path` (default: `default_path()`), checked; made there when `create`.
    Anything that is not a store this llmbench reads is a one-line UsageError."""
    path = Path(path) if path is not None else default_path()
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give the store's file")
    if not path.exists():
        if not create:
            raise UsageError(f"{path}: no history store there (`llmbench history add` makes "
                             f"one)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{path}: cannot make its folder: {exc.strerror or exc}") from None
    else:
        _check_file(path)
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    try:
        prepare(conn, path, create=create)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        conn.close()
        raise _problem(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return Store(conn, path)


def read_copy(path: Path) -> sqlite3.Connection:
    """A store file read into memory (SQLite's backup API), checked and migrated there: the
    file itself is only read."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    _check_file(path)
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
        prepare(memory, path, create=False)
    except sqlite3.Error as exc:
        memory.close()
        raise _problem(path, exc) from None
    except BaseException:
        memory.close()
        raise
    return memory


def guarded(path: Path) -> contextlib.AbstractContextManager[None]:
    """SQLite's errors while a store is used (a damaged page found late, a lock held past
    the time-out) as a one-line UsageError naming the store."""

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _problem(path, exc) from None

    return guard()
