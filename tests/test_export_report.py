import base64
import io
import json
import re
import subprocess
import sys

from llmbench.ci.compare import load_side
from llmbench.ci.export import github_action_benchmark
from llmbench.report.html import build
from tests.conftest import ROOT, run_cli


def test_github_action_benchmark_entries(tiny_run):
    smaller, bigger = github_action_benchmark(load_side(tiny_run))
    names = {e["name"] for e in smaller}
    assert "attention/standard/seq=64/fwd/time_ms" in names
    assert "attention/standard/seq=64/fwd/peak_memory_bytes" in names
    assert any(e["name"].endswith("/throughput_tflops") for e in bigger)
    assert not any("predicted" in e["name"] for e in smaller + bigger)
    timed = next(e for e in smaller if e["name"].endswith("time_ms"))
    assert timed["unit"] == "ms" and timed["range"].startswith("± ")
    assert all(set(e) <= {"name", "unit", "value", "range", "extra"} for e in smaller + bigger)
    tflops = next(e for e in bigger if e["name"].endswith("/throughput_tflops"))
    assert tflops["unit"] == "TFLOP/s"  # the declared unit


def test_export_cli(tiny_run, tmp_path):
    proc = run_cli("export", str(tiny_run), "--out", str(tmp_path / "gab"))
    assert proc.returncode == 0, proc.stderr
    smaller = json.loads((tmp_path / "gab" / "smaller-is-better.json").read_text())
    bigger = json.loads((tmp_path / "gab" / "bigger-is-better.json").read_text())
    assert smaller and bigger


def test_html_report_embeds_decodable_plots(tiny_run, tmp_path):
    import matplotlib.pyplot as plt

    page, images, hint = build(load_side(tiny_run))
    assert hint is None
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) == len(images) >= 3  # attention sweep, kvcache, schedule
    for data in srcs:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = plt.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    for label in ("attention", "kvcache", "schedule"):
        assert f'<h2 id="{label}">' in page
    assert "sdpa-flash" in page  # the tables are there too


def test_report_cli_writes_page_and_pngs(tiny_run, tmp_path):
    proc = run_cli("report", str(tiny_run), "--html", str(tmp_path / "r.html"), "--png",
                   str(tmp_path / "png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert len(list((tmp_path / "png").glob("*.png"))) >= 3
    bad = run_cli("report", str(tiny_run))
    assert bad.returncode == 2 and "--html" in bad.stderr


def test_report_without_matplotlib_gives_a_hint(tiny_run):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from llmbench.ci.compare import load_side\n"
            "from llmbench.report.html import build\n"
            f"page, images, hint = build(load_side({str(tiny_run)!r}))\n"
            "print(hint); print(len(images)); print('<pre>' in page)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["plots need matplotlib: pip install 'llmbench[plot]'",
                                       "0", "True"]
