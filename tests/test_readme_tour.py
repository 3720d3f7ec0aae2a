"""benchmarks/readme_tour.py on small READMEs of its own: each block's output is what its
commands print on a terminal, markers shape or skip it, failures leave a block as it was, and
--check / --list / --only do what they say. The real README is only listed (its tour takes tens
of minutes), which checks that its markers parse."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOUR = ROOT / "benchmarks" / "readme_tour.py"
FENCE = "```"


def _load():
    spec = importlib.util.spec_from_file_location("readme_tour", TOUR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


readme_tour = _load()


@pytest.fixture
def tour(capsys):
    """The script's main() here (its commands still run in processes of their own): its exit
    code, stdout and stderr."""
    def run(readme: Path, *args: str) -> subprocess.CompletedProcess:
        code = readme_tour.main(["--readme", str(readme), *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)
    return run


def block(*lines: str, markers: tuple[str, ...] = ()) -> str:
    return "\n".join([*(f"<!-- tour: {m} -->" for m in markers), f"{FENCE}text", *lines,
                      FENCE]) + "\n"


def document(*blocks: str) -> str:
    return "# Tour\n\n" + "\n".join(f"## part {i}\n\nProse.\n\n{b}" for i, b in enumerate(blocks))


def readme(tmp_path: Path, *blocks: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(document(*blocks))
    return path


def line_of(path: Path, line: str) -> int:
    return path.read_text().split("\n").index(line) + 1


def test_outputs_are_rewritten_from_real_runs(tmp_path, tour):
    terminal = ("printf 'step 1\\rstep 2\\n\\033[1mbold\\033[0m\\nbar 50%%\\n\\r\\033[1A\\033[2K"
                "done\\n'")
    streams = ("python -c \"import sys, shutil; print('out', sys.stdout.isatty(), "
               "shutil.get_terminal_size().columns); print('err', file=sys.stderr); "
               "print('out again')\"")
    blocks = {
        "plain": block("$ echo  hello", "stale"),
        "python": block('$ python -c "print(2+2)"', "4"),  # up to date
        "skipped": block("$ exit 3", "kept as it is", markers=("skip needs a GPU",)),
        "head": block('$ python -c "for i in range(5): print(i)"', "old",
                      markers=("head 2",)),
        "grep": block("$ seq 6", "old", markers=("grep [36]", 'elide "  …"')),
        "terminal": block(f"$ {terminal}", "old", f"$ {streams}", "old"),
        "scratch": block("$ echo x > f.txt", "$ cat f.txt", "old",
                         "$ test -f README.md && echo a copy of README.md",
                         '$ python -c "import sys; sys.exit(3)"', "$ echo $?", "3"),
        "expected failure": block('$ python -c "import sys; print(\'bad input\', '
                                  'file=sys.stderr); sys.exit(2)"', "old",
                                  markers=("exit 2", "tail 1")),
    }
    path = readme(tmp_path, *blocks.values())
    done = tour(path)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = dict(blocks)
    expected.update({
        "plain": block("$ echo  hello", "hello"),
        "head": block('$ python -c "for i in range(5): print(i)"', "0", "1",
                      markers=("head 2",)),
        "grep": block("$ seq 6", "  …", "3", "  …", "6", markers=("grep [36]", 'elide "  …"')),
        "terminal": block(f"$ {terminal}", "step 2", "bold", "done", f"$ {streams}",
                          "out True 160", "err", "out again"),
        "scratch": block("$ echo x > f.txt", "$ cat f.txt", "x",
                         "$ test -f README.md && echo a copy of README.md", "a copy of README.md",
                         '$ python -c "import sys; sys.exit(3)"', "$ echo $?", "3"),
        "expected failure": block('$ python -c "import sys; print(\'bad input\', '
                                  'file=sys.stderr); sys.exit(2)"', "bad input",
                                  markers=("exit 2", "tail 1")),
    })
    assert path.read_text() == document(*expected.values())
    assert "7 block(s) run, 6 changed, 1 skipped, 0 failed" in done.stdout
    changed = done.stdout.split("changed (re-read")[1]
    head = line_of(path, '$ python -c "for i in range(5): print(i)"')
    assert f"README.md:{head}  ## part 3" in changed
    assert "## part 1" not in changed and "## part 2" not in changed  # unchanged, skipped


def test_check_reports_a_diff_and_writes_nothing(tmp_path, tour):
    path = readme(tmp_path, block('$ python -c "print(6*7)"', "41"))
    before = path.read_text()
    check = subprocess.run([sys.executable, str(TOUR), "--readme", str(path), "--check"],
                           capture_output=True, text=True, timeout=60)  # as a user runs it
    assert check.returncode == 1
    assert "-41\n+42\n" in check.stdout
    assert path.read_text() == before
    assert tour(path).returncode == 0
    assert path.read_text() == before.replace("41", "42")
    again = tour(path, "--check")
    assert again.returncode == 0 and "+++" not in again.stdout


def test_a_failing_command_is_reported_and_its_block_kept(tmp_path, tour):
    failing = block('$ python -c "import sys; print(\'boom\'); sys.exit(3)"', "all good")
    slow = block("$ sleep 29.5; echo woke up", "woke up")  # bash waits on sleep
    path = readme(tmp_path, failing, slow, block("$ echo fine", "stale"))
    done = tour(path, "--timeout", "1")
    assert done.returncode == 1
    text = path.read_text()
    assert failing in text and slow in text and block("$ echo fine", "fine") in text
    assert "3 block(s) run, 1 changed, 0 skipped, 2 failed" in done.stdout
    at = line_of(path, "$ python -c \"import sys; print('boom'); sys.exit(3)\"")
    assert f"FAILED README.md:{at} (kept unchanged): line {at}:" in done.stdout
    assert "exited 3, expected 0" in done.stdout and "| boom" in done.stdout
    assert "ran past 1 s" in done.stdout
    sleeping = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                if p.exists() and p.read_bytes().startswith(b"sleep\x0029.5")]
    assert not sleeping  # the command's processes were ended at the time limit


def test_the_repository_is_at_hand(tmp_path, tour):
    """`git show` reads the repository's history from the scratch folder, and its suites/
    are where a command names them."""
    first = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:pyproject.toml"],
                           capture_output=True, text=True, check=True).stdout.splitlines()[0]
    path = readme(tmp_path, block("$ git show HEAD:pyproject.toml > p.toml", "$ head -1 p.toml",
                                  "old", "$ ls suites | grep -c toml", "0"))
    done = tour(path, "--repo", str(ROOT))
    assert done.returncode == 0, done.stdout
    shown = path.read_text().split("\n")
    assert shown[shown.index("$ head -1 p.toml") + 1] == first
    assert int(shown[shown.index("$ ls suites | grep -c toml") + 1]) >= 2


def test_list_and_only(tmp_path, tour):
    path = readme(tmp_path, block("$ echo one", "one"),
                  block("$ exit 4", "$ echo $?", "4", markers=("1: grep x",)),
                  block("$ echo slow", "", markers=("skip 45 minutes",)))
    listed = tour(path, "--list")
    assert listed.returncode == 0
    assert "$ exit 4    [exit 4 (shown by `echo $?`); grep x]" in listed.stdout
    assert "skip: 45 minutes" in listed.stdout
    assert "2 block(s) would run (3 command(s)), 1 skipped" in listed.stdout
    only = tour(path, "--list", "--only", "^exit")
    assert "1 block(s) would run (2 command(s)), 0 skipped, 2 not selected" in only.stdout
    ran = tour(path, "--only", "one")
    assert "1 block(s) run, 0 changed, 0 skipped, 0 failed, 2 not selected" in ran.stdout


def test_a_marker_that_does_not_parse_is_refused(tmp_path, tour):
    stray = readme(tmp_path, "<!-- tour: head 3 -->\n\nSome prose.\n\n" + block("$ echo a", "a"))
    done = tour(stray)
    assert done.returncode == 2
    assert "README.md:7: a tour marker must stand just above the fence" in done.stderr
    unknown = readme(tmp_path, block("$ echo a", "a", markers=("hed 3",)))
    assert "unknown tour directive 'hed'" in tour(unknown, "--list").stderr
    beyond = readme(tmp_path, block("$ echo a", "a", markers=("2: exit 1",)))
    assert "has 1 command(s), not 2" in tour(beyond, "--list").stderr


def test_the_readme_tour_parses(tour):
    listed = tour(ROOT / "README.md", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "$ llmbench env" in listed.stdout
