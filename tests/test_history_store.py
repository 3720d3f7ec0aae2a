"""The results store of `llmbench history` (llmbench.history.store): what an import keeps, the
same document refused twice, moving a store as one file, a killed import that leaves the store
as it was, and files that are not a store this llmbench reads."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from llmbench.core.errors import UsageError
from llmbench.core.results import CaseResult, EnvInfo, ResultDocument, write_document
from llmbench.core.timing import TimeStats
from llmbench.history import store as hs
from tests.conftest import ROOT


def make_doc(times: dict[str, float] | None = None, *, benchmark: str = "attention",
             created_at: str = "2026-01-01T00:00:00+00:00", commit: str | None = "a" * 40,
             cpu: str = "Test CPU", samples: int = 5, spread: float = 0.01) -> ResultDocument:
    """A result document of `benchmark` whose cases (name -> median time, ms) ran ok."""
    times = {"case-a": 1.0, "case-b": 2.0} if times is None else times
    cases = []
    for name, median in times.items():
        values = [median * (1 + spread * (i - samples // 2) / samples) for i in range(samples)]
        cases.append(CaseResult(name=name, params={"n": 1}, status="ok", metrics={
            "time_ms": TimeStats.from_samples(values), "peak_memory_bytes": 4096,
            "gpu_throttled": False}))
    env = EnvInfo(device="cpu", cpu_model=cpu, cores=2, profile="cpu", torch="2.5.0",
                  git_commit=commit)
    return ResultDocument(benchmark=benchmark, created_at=created_at, env=env, config={},
                          cases=cases)


def write_run(directory, docs: dict[str, ResultDocument], suite: str = "tiny"):
    """A run directory as `llmbench run` writes it: NAME.json per entry and index.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        write_document(doc, directory / f"{name}.json")
    index = {"schema_version": 1, "tool": {"name": "llmbench"}, "suite": suite,
             "benchmarks": [{"name": n, "file": f"{n}.json"} for n in docs]}
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def test_an_import_keeps_runs_cases_metrics_and_where_they_came_from(tmp_path):
    run = write_run(tmp_path / "run", {"attn-small": make_doc()})
    single = write_document(make_doc(created_at="2026-01-02T00:00:00+00:00", commit=None),
                            tmp_path / "one.json")
    with hs.open_store(tmp_path / "h.sqlite", create=True) as store:
        assert store.add(hs.sources([run])) == 1
        assert store.add(hs.sources([single]), commit="b" * 40, branch="main") == 1
        rows = store.conn.execute("SELECT git_commit, branch, suite, label, benchmark, "
                                  "fingerprint, time FROM runs ORDER BY id").fetchall()
        assert rows == [
            ("a" * 40, None, "tiny", "attn-small", "attention",
             "Test CPU | torch 2.5.0 | profile cpu", "2026-01-01T00:00:00+00:00"),
            ("b" * 40, "main", None, "attention", "attention",
             "Test CPU | torch 2.5.0 | profile cpu", "2026-01-02T00:00:00+00:00")]
        value, samples = store.conn.execute(
            "SELECT value, samples FROM metrics WHERE name = 'time_ms' LIMIT 1").fetchone()
        assert value == pytest.approx(1.0) and len(json.loads(samples)) == 5
        names = {r[0] for r in store.conn.execute("SELECT DISTINCT name FROM metrics")}
        assert names == {"time_ms", "peak_memory_bytes"}  # numbers only, not flags
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        series = {(s.label, s.case, s.metric): s.values for s in store.series()}
        assert series[("attn-small", "case-b", "time_ms")] == [pytest.approx(2.0)]


def test_the_same_document_is_refused_unless_replaced(tmp_path):
    doc = write_document(make_doc(), tmp_path / "a.json")
    again = tmp_path / "a-reindented.json"
    again.write_text(json.dumps(json.loads(doc.read_text())))  # same content, other bytes
    with hs.open_store(tmp_path / "h.sqlite", create=True) as store:
        store.add(hs.sources([doc]))
        with pytest.raises(UsageError, match=r"already in the store as run 1 .*--replace"):
            store.add(hs.sources([again]))
        assert store.add(hs.sources([again]), commit="c" * 40, replace=True) == 1
        assert store.conn.execute("SELECT git_commit FROM runs").fetchall() == [("c" * 40,)]
        assert store.conn.execute("SELECT count(*) FROM cases").fetchone()[0] == 2


def test_a_bad_document_stops_the_import_with_nothing_added(tmp_path):
    good = write_document(make_doc(), tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"tool": {"name": "other"}}')
    with hs.open_store(tmp_path / "h.sqlite", create=True) as store:
        with pytest.raises(UsageError, match="not an llmbench result"):
            store.add(hs.sources([good, bad]))
        assert store.run_count() == 0


def test_export_and_import_move_a_store_as_one_file(tmp_path):
    first = [write_document(make_doc(created_at=f"2026-01-0{i}T00:00:00+00:00"),
                            tmp_path / f"d{i}.json") for i in (1, 2, 3)]
    with hs.open_store(tmp_path / "a.sqlite", create=True) as a:
        a.add(hs.sources(first[:2]))
        assert a.export(tmp_path / "moved.sqlite") == 2
    moved = tmp_path / "moved.sqlite"
    assert not (tmp_path / "moved.sqlite-wal").exists()
    with hs.open_store(tmp_path / "b.sqlite", create=True) as b:
        b.add(hs.sources(first[1:]))
        assert b.merge(moved) == (1, 1)  # d1 added, d2 was there
        assert b.run_count() == 3
        assert b.merge(moved) == (0, 2)
        with pytest.raises(UsageError, match="is the store itself"):
            b.export(tmp_path / "b.sqlite")


def _sqlite_file(path, *statements):
    conn = sqlite3.connect(path)
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("kind, message", [
    ("newer", "schema_version 99 is newer than this llmbench reads (1)"),
    ("garbage", "not an SQLite database"),
    ("damaged", "not a readable llmbench history store"),
    ("foreign", "an SQLite database but not an llmbench history store (no meta table)"),
    ("foreign-meta", "not an llmbench history store (meta.format is 'other')"),
])
def test_files_that_are_not_a_store_this_llmbench_reads(tmp_path, kind, message):
    path = tmp_path / "h.sqlite"
    if kind in ("newer", "damaged"):
        with hs.open_store(path, create=True) as store:
            store.add(hs.sources([write_document(make_doc(), tmp_path / "d.json")]))
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            store.conn.execute("PRAGMA journal_mode=DELETE")
            if kind == "newer":
                store.conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        if kind == "damaged":  # the schema's page overwritten, the header intact
            data = bytearray(path.read_bytes())
            data[100:4096] = os.urandom(3996)
            path.write_bytes(bytes(data))
    elif kind == "garbage":
        path.write_bytes(b"this is not a database at all\n" * 100)
    elif kind == "foreign":
        _sqlite_file(path, "CREATE TABLE t (x)")
    else:
        _sqlite_file(path, "CREATE TABLE meta (key TEXT, value TEXT)",
                     "INSERT INTO meta VALUES ('format', 'other')")
    for create in (False, True):
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            hs.open_store(path, create=create)
    with pytest.raises(UsageError):
        hs.read_copy(path)


def test_an_empty_file_becomes_a_store_and_a_missing_one_is_not_read(tmp_path):
    with pytest.raises(UsageError, match="no history store there"):
        hs.open_store(tmp_path / "none.sqlite")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with hs.open_store(tmp_path / "empty.sqlite", create=True) as store:
        meta = dict(store.conn.execute("SELECT key, value FROM meta"))
    assert meta["format"] == "llmbench-history" and meta["schema_version"] == "1"


# `history add` of BATCH documents in a process of its own, SIGKILLed once KILL_AFTER of them
# are inserted (it prints a line per document after its insert, in the one transaction that
# is committed after the last). The rest take the process far longer than the kill takes to
# arrive (each is read and validated in turn), so the kill always lands mid-transaction; the
# documents are large enough that SQLite has spilled uncommitted pages into the WAL by then.
BATCH, KILL_AFTER = 600, 100


def test_a_killed_import_leaves_the_store_as_it_was(tmp_path):
    db = tmp_path / "h.sqlite"
    before = [write_document(make_doc(created_at=f"2026-01-0{i}T00:00:00+00:00"),
                             tmp_path / f"before{i}.json") for i in (1, 2)]
    with hs.open_store(db, create=True) as store:
        store.add(hs.sources(before))
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    batch = tmp_path / "batch"
    batch.mkdir()
    template = make_doc(samples=500)
    for i in range(BATCH):
        template.created_at = f"2026-02-01T00:{i // 60:02d}:{i % 60:02d}+00:00"
        write_document(template, batch / f"doc{i:04d}.json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmbench", "history", "add", str(batch), "--db", str(db)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        seen = 0
        for line in proc.stderr:
            seen += line.startswith("run ")
            if seen == KILL_AFTER:
                wal = db.with_name(db.name + "-wal").stat().st_size
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert seen == KILL_AFTER and proc.returncode == -signal.SIGKILL
    assert wal > 0  # uncommitted pages were on disk when it died
    with hs.open_store(db) as store:
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.run_count() == 2
        assert [s.values for s in store.series() if s.metric == "time_ms"] == \
            [[pytest.approx(1.0)] * 2, [pytest.approx(2.0)] * 2]
        assert store.add(hs.sources(sorted(batch.glob("*.json"))[:3])) == 3  # writable again
