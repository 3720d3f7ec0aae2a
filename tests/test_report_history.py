"""`llmbench report --history`: the store's trends in the HTML page (the check's table, one
chart per judged series with its change points), on stores built from result documents whose
medians step at a known run; and the terminal renderers `history show` / `check` share."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from llmbench.core.results import load_document
from llmbench.history import store as hs
from llmbench.history.check import check
from llmbench.report.history import Trends, chart, render_check, render_series
from tests.conftest import assert_bad_input, run_cli_inprocess
from tests.test_history_store import make_doc, write_run

pytest.importorskip("matplotlib")


def _store(tmp_path, steps: dict[str, float], runs: int = 12, at: int = 8):
    """A store of `runs` runs of two cases (1 ms and 2 ms, noise ±2 %); from run `at` on each
    case in `steps` is scaled by its factor. Run directories under tmp_path/runs."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    db = tmp_path / "h.sqlite"
    with hs.open_store(db, create=True) as store:
        for i in range(runs):
            wobble = 1 + 0.02 * ((i * 7) % 5 - 2) / 2
            times = {case: base * wobble * (steps.get(case, 1.0) if i >= at else 1.0)
                     for case, base in (("case-a", 1.0), ("case-b", 2.0))}
            doc = make_doc(times, created_at=(t0 + timedelta(hours=i)).isoformat(),
                           commit=f"{i:x}" * 40)
            run = write_run(tmp_path / "runs" / f"r{i}", {"attn": doc})
            store.add(hs.sources([run]))
    return db


def _page(tmp_path, *args: str):
    out = tmp_path / "page.html"
    proc = run_cli_inprocess("report", *args, "--history", "--html", str(out), "-q")
    return proc, out.read_text() if out.exists() else ""


def test_trends_collects_every_judged_series_with_its_change_points(tmp_path):
    db = _store(tmp_path, {"case-b": 1.5})
    with hs.open_store(db) as store:
        series = store.series()
    trends = Trends()
    result = check(series, on_series=trends.add)
    assert len(trends.items) == result.checked == 4  # time and peak memory of each case
    first, *rest = trends.ordered()
    assert (first.series.case, first.series.metric) == ("case-b", "time_ms")
    assert first.shift is not None and first.shift.verdict == "regression"
    assert first.cut.change_points == [8]
    assert first.cut.means[1] / first.cut.means[0] == pytest.approx(1.5, rel=0.03)
    assert [(t.series.case, t.series.metric, t.shift, t.cut.change_points) for t in rest] == [
        ("case-a", "peak_memory_bytes", None, []), ("case-a", "time_ms", None, []),
        ("case-b", "peak_memory_bytes", None, [])]


def test_a_chart_is_a_png_captioned_with_the_shift(tmp_path):
    db = _store(tmp_path, {"case-a": 1 / 1.4})
    with hs.open_store(db) as store:
        series = store.series()
    trends = Trends()
    check(series, on_series=trends.add)
    caption, png = chart(trends.ordered()[0])
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    assert caption.startswith("attn: case-a: time_ms: improvement -2")
    assert "since 8888888888" in caption and "p 0.00" in caption


def test_report_history_page_has_the_check_table_and_a_chart_per_series(tmp_path):
    db = _store(tmp_path, {"case-b": 1.5, "case-a": 1 / 1.5})
    proc, page = _page(tmp_path, "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert '<h2 id="history">history</h2>' in page
    assert "1 regression(s), 1 improvement(s) in 4 series" in page
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 4 and len(re.findall(r'src="data:image/png;base64,', page)) == 4
    assert captions[0].startswith("attn: case-b: time_ms: regression +")  # regressions first
    assert captions[1].startswith("attn: case-a: time_ms: improvement -")
    assert captions[2] == "attn: case-a: peak_memory_bytes: 12 runs, no change point"
    assert "history: " in page and "(12 runs)" in page


def test_report_of_a_run_with_history_shows_only_that_runs_series(tmp_path):
    db = _store(tmp_path, {"case-b": 1.5})
    other = write_run(tmp_path / "other", {"other": make_doc({"case-z": 3.0})})
    real = tmp_path / "attn.json"  # a real run, under the store's label for the series
    assert run_cli_inprocess("attention", "--seq", "64", "--impl", "standard", "--max-time",
                             "0.05", "--no-isolate", "--device", "cpu", "--json", str(real),
                             "-q").returncode == 0
    run = write_run(tmp_path / "latest", {"attn": load_document(real)})
    with hs.open_store(db) as store:
        store.add(hs.sources([other, run]))
    proc, page = _page(tmp_path, str(run), "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert '<h2 id="attn">attn</h2>' in page and "seq" in page  # the run's own table
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    cases = {c.split(": ")[1] for c in captions if c.startswith("attn: ")}
    assert {"case-a", "case-b"} <= cases and len(cases) > 2  # and the real run's cases
    assert not any("case-z" in c for c in captions)
    # the real run's environment differs from the made-up documents': each chart names its env
    assert captions[0].startswith("attn: case-b: time_ms (env A): regression")
    assert any(c.endswith(": 1 run(s), too few to check") for c in captions)
    proc, _ = _page(tmp_path, str(run), "--db", str(tmp_path / "missing.sqlite"))
    assert proc.returncode == 2  # no such store


def test_report_without_results_or_history_is_bad_input(tmp_path):
    assert_bad_input(run_cli_inprocess("report", "--html", str(tmp_path / "p.html")),
                     "give a results file or run directory, and/or --history")
    db = _store(tmp_path, {}, runs=6)
    run = write_run(tmp_path / "x", {"elsewhere": make_doc()})
    assert_bad_input(run_cli_inprocess("report", str(run), "--history", "--db", str(db),
                                       "--html", str(tmp_path / "p.html")),
                     "no series of elsewhere in the store")


def test_renderers_print_series_and_shifts(tmp_path):
    db = _store(tmp_path, {"case-b": 1.5})
    with hs.open_store(db) as store:
        series = store.series()
    console = Console(file=io.StringIO(), width=200)
    render_series(series, console)
    render_check(check(series), console)
    text = console.file.getvalue()
    assert "case-a" in text and "env A: Test CPU | torch 2.5.0 | profile cpu" in text
    assert "regression" in text and "1 regression(s), 0 improvement(s) in 4 series" in text
