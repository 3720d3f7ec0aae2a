"""Regenerate README.md's tour: re-run its commands and rewrite their output blocks.

    python benchmarks/readme_tour.py                  # run the tour, rewrite README.md
    python benchmarks/readme_tour.py --list           # the blocks, their markers, what would run
    python benchmarks/readme_tour.py --only 'llmbench schema' --check   # a diff, nothing written

Run it with the project's environment active (`. .venv/bin/activate`): the commands find
`llmbench` and `python` next to the Python that runs this script. The whole tour takes tens of
minutes and its figures are timings: run it on a quiet machine. docs/readme-tour.md has more.

A tour block is a ```text fence whose first line starts with `$ `: one or more commands, each
`$ ` line followed by what that command printed. Every block runs in a fresh scratch folder that
holds a copy of README.md and links to the repository's suites/, benchmarks/ and examples/, with
an empty LLMBENCH_CACHE of its own and GIT_DIR set to the repository's git directory (so
`git show REV:path > file` reads its history and writes into the scratch folder). Its commands
run one after the other, each with bash under a pseudo-terminal COLUMNS wide, so stdout and
stderr interleave as a terminal shows them; what the terminal shows at the end (progress bars
erased, no colour or other escape codes, trailing spaces dropped) replaces the command's output.
The `$ ` lines are kept exactly. `$?` starts as the previous command's status, so `$ echo $?`
prints it; nothing else (variables, `cd`) carries from one command to the next.

Exit statuses: a command is expected to exit 0, or with the status the README shows on the
`$ echo $?` line right after it, or as a marker says. A block where a command exits otherwise,
or runs past --timeout, is kept unchanged and reported.

Markers: HTML comments on the lines just above a block's fence (GitHub does not show them), one
directive each; blank lines may stand between them and the fence, nothing else:

    <!-- tour: skip REASON -->      not run; the block stays as it is (too slow, another machine)
    <!-- tour: head N -->          keep the first N lines of the output
    <!-- tour: tail N -->          keep the last N lines (given with head: both ends)
    <!-- tour: grep REGEX -->      keep the lines REGEX matches (re.search); head and tail then
                                   count the lines it kept
    <!-- tour: elide TEXT -->      each run of lines left out becomes one line TEXT (`...`)
    <!-- tour: exit N -->          the command is expected to exit with status N
    <!-- tour: setup COMMAND -->   run COMMAND in the block's folder first, its output not shown
                                   (it must exit 0)

head, tail, grep, elide and exit apply to every command of the block (exit: but `echo $?`), or
to its K-th command alone when written `K: DIRECTIVE` (`<!-- tour: 2: grep error -->`). An
argument is the rest of the comment, stripped; double quotes around it keep leading and
trailing spaces (`<!-- tour: elide "  …" -->`).

Exit code: 0; 1 when a block failed, or with --check when README.md would change; 2 for a
marker that does not parse (README.md:LINE: why); 130 on Ctrl-C (nothing written).
"""

from __future__ import annotations

import argparse
import difflib
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The README's output is 160 columns wide: rich wraps its longest notes there (optim's), and it
# is llmbench's own width for output that is not a terminal (llmbench/cli/common.py).
COLUMNS = 160
ROWS = 50
# Repository folders that commands name by a relative path (`llmbench run suites/ci-cpu.toml`,
# `python benchmarks/...`); linked into each scratch folder, so do not write into them.
LINKED = ("suites", "benchmarks", "examples")
# Inherited variables that change what a command prints; LLMBENCH_* are dropped too (a block
# gets its own empty LLMBENCH_CACHE, as a fresh install has).
DROPPED = ("FORCE_COLOR", "CLICOLOR_FORCE", "PY_COLORS", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
           "COLORTERM", "TRITON_INTERPRET", "GIT_DIR", "GIT_WORK_TREE")
DIRECTIVES = ("skip", "head", "tail", "grep", "elide", "exit", "setup")
PER_COMMAND = ("head", "tail", "grep", "elide", "exit")

FENCE = re.compile(r"^(`{3,})\s*([^`\s]*)[^`]*$")
HEADING = re.compile(r"^#{1,6} ")
MARKER = re.compile(r"^\s*<!--\s*tour:(.*)-->\s*$")
MARKER_START = re.compile(r"^\s*<!--\s*tour\b")
ECHO_STATUS = re.compile(r'^echo\s+("\$\?"|\$\?)\s*$')
CSI = re.compile(r"\x1b\[([0-?]*)[ -/]*([@-~])")
OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
TEXT_RUN = re.compile(r"[^\x00-\x1f\x7f]+")


class MarkerError(Exception):
    """A marker that does not parse, at `line` (0-based) of the README."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Directive:
    line: int  # 0-based, in the README
    name: str
    arg: str | int | re.Pattern[str]
    target: int | None = None  # 0-based command index; None: the whole block


@dataclass
class Command:
    line: int  # 0-based index of its `$ ` line
    text: str  # what follows `$ `
    output: list[str]

    @property
    def echoes_status(self) -> bool:
        return bool(ECHO_STATUS.match(self.text.strip()))


@dataclass
class Block:
    number: int
    fence: int  # 0-based index of the ```text line
    end: int  # 0-based index of the closing fence
    heading: str
    body: list[str]
    commands: list[Command]
    directives: list[Directive] = field(default_factory=list)

    @property
    def line(self) -> int:
        """1-based line of the first command, as an editor shows it."""
        return self.fence + 2

    @property
    def skip(self) -> str | None:
        found = [d for d in self.directives if d.name == "skip"]
        return (str(found[0].arg) or "no reason given") if found else None

    @property
    def setup(self) -> list[str]:
        return [str(d.arg) for d in self.directives if d.name == "setup"]

    def option(self, name: str, index: int):
        """The directive `name` for command `index`: its own, else the block's, else None."""
        own = [d.arg for d in self.directives if d.name == name and d.target == index]
        if own:
            return own[0]
        if name == "exit" and self.commands[index].echoes_status:
            return None
        block = [d.arg for d in self.directives if d.name == name and d.target is None]
        return block[0] if block else None

    def expected_status(self, index: int) -> int:
        own = [d.arg for d in self.directives if d.name == "exit" and d.target == index]
        if own:
            return int(own[0])
        if index + 1 < len(self.commands) and self.commands[index + 1].echoes_status:
            shown = self.commands[index + 1].output
            if shown and shown[0].strip().isdigit():
                return int(shown[0].strip())
        if self.commands[index].echoes_status:
            return 0
        return int(self.option("exit", index) or 0)

    def annotations(self, index: int) -> list[str]:
        notes = []
        status = self.expected_status(index)
        if status:
            by_echo = (index + 1 < len(self.commands) and self.commands[index + 1].echoes_status
                       and not any(d.name == "exit" and d.target == index
                                   for d in self.directives))
            notes.append(f"exit {status}" + (" (shown by `echo $?`)" if by_echo else ""))
        for name in ("grep", "head", "tail", "elide"):
            value = self.option(name, index)
            if value is not None:
                text = value.pattern if isinstance(value, re.Pattern) else value
                notes.append(f"{name} {text!r}" if name == "elide" else f"{name} {text}")
        return notes


def _argument(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def parse_directive(text: str, line: int) -> Directive:
    target = None
    found = re.match(r"\s*(\d+)\s*:(.*)$", text)
    if found:
        target = int(found.group(1)) - 1
        text = found.group(2)
        if target < 0:
            raise MarkerError(line, "commands are counted from 1")
    parts = re.match(r"\s*(\S*)\s*(.*)$", text, re.S)
    name, arg = parts.group(1), _argument(parts.group(2))
    if name not in DIRECTIVES:
        raise MarkerError(line, f"unknown tour directive {name!r} (known: "
                                f"{', '.join(DIRECTIVES)})")
    if target is not None and name not in PER_COMMAND:
        raise MarkerError(line, f"{name} applies to the whole block: no `K:` before it")
    value: str | int | re.Pattern[str] = arg
    if name in ("head", "tail", "exit"):
        low, high = (0, 255) if name == "exit" else (1, 10**9)
        if not arg.isdigit() or not low <= int(arg) <= high:
            raise MarkerError(line, f"{name} takes a whole number "
                                    + ("from 0 to 255" if name == "exit" else "above 0")
                                    + f", got {arg!r}")
        value = int(arg)
    elif name == "grep":
        try:
            value = re.compile(arg)
        except re.error as exc:
            raise MarkerError(line, f"grep {arg!r}: {exc}") from None
        if not arg:
            raise MarkerError(line, "grep needs a regular expression")
    elif name in ("elide", "setup") and not arg:
        raise MarkerError(line, f"{name} needs " + ("a line of text" if name == "elide"
                                                    else "a command"))
    return Directive(line, name, value, target)


def parse(text: str) -> list[Block]:
    """The tour blocks of a README, their commands and the markers above them."""
    lines = text.split("\n")
    blocks: list[Block] = []
    pending: list[Directive] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            ticks = fence.group(1)
            end = i + 1
            while end < len(lines) and not re.match(rf"^{ticks}`*\s*$", lines[end]):
                end += 1
            body = lines[i + 1:end]
            if fence.group(2) == "text" and body and body[0].startswith("$ "):
                block = Block(len(blocks) + 1, i, end, heading, body, _commands(body, i + 1),
                              pending)
                for d in pending:
                    if d.target is not None and d.target >= len(block.commands):
                        raise MarkerError(d.line, f"the block below has {len(block.commands)} "
                                                  f"command(s), not {d.target + 1}")
                seen = set()
                for d in pending:
                    if d.name != "setup" and (d.name, d.target) in seen:
                        raise MarkerError(d.line, f"{d.name} given twice for the same command")
                    seen.add((d.name, d.target))
                if block.skip is not None and len(pending) > 1:
                    raise MarkerError(pending[0].line, "a skipped block takes no other marker")
                blocks.append(block)
            elif pending:
                raise MarkerError(pending[0].line, "a tour marker must stand just above a "
                                                   "```text fence whose first line starts "
                                                   "with `$ `")
            pending = []
            i = end + 1
            continue
        marker = MARKER.match(line)
        if marker:
            pending = [*pending, parse_directive(marker.group(1), i)]
        elif MARKER_START.match(line):
            raise MarkerError(i, "a tour marker is one line: <!-- tour: DIRECTIVE -->")
        elif line.strip():
            if pending:
                raise MarkerError(pending[0].line, "a tour marker must stand just above the "
                                                   "fence of its block")
            if HEADING.match(line):
                heading = line.strip()
        i += 1
    if pending:
        raise MarkerError(pending[0].line, "a tour marker with no block below it")
    return blocks


def _commands(body: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    for offset, line in enumerate(body):
        if line.startswith("$ "):
            commands.append(Command(first + offset, line[2:], []))
        else:
            commands[-1].output.append(line)
    return commands


def screen(text: str) -> list[str]:
    """What a terminal shows after `text` was written to it: carriage returns and cursor-up /
    erase sequences (progress bars) applied, every other escape sequence dropped, trailing
    spaces and trailing blank lines removed."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        run = TEXT_RUN.match(text, i)
        if run:
            chunk = run.group(0)
            line = rows[row]
            if col > len(line):
                line.extend(" " * (col - len(line)))
            line[col:col + len(chunk)] = chunk
            col += len(chunk)
            i = run.end()
            continue
        ch = text[i]
        if ch == "\x1b":
            csi = CSI.match(text, i)
            if csi:
                row, col = _csi(rows, row, col, csi.group(1), csi.group(2))
                i = csi.end()
                continue
            osc = OSC.match(text, i)
            i = osc.end() if osc else i + 2
            continue
        if ch == "\n":
            row += 1
            col = 0
            while len(rows) <= row:
                rows.append([])
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        elif ch == "\t":
            col = (col // 8 + 1) * 8
        i += 1
    lines = ["".join(r).rstrip() for r in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _csi(rows: list[list[str]], row: int, col: int, params: str, final: str) -> tuple[int, int]:
    numbers = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")]
    n = max(numbers[0], 1)
    if final == "A":
        row = max(0, row - n)
    elif final in ("B", "E"):
        row += n
        while len(rows) <= row:
            rows.append([])
        col = 0 if final == "E" else col
    elif final == "F":
        row, col = max(0, row - n), 0
    elif final == "C":
        col += n
    elif final == "D":
        col = max(0, col - n)
    elif final == "G":
        col = n - 1
    elif final == "K":
        line = rows[row]
        if numbers[0] == 0:
            del line[col:]
        elif numbers[0] == 1:
            line[:col + 1] = " " * min(col + 1, len(line))
        else:
            line.clear()
    elif final == "J" and numbers[0] == 0:
        del rows[row][col:]
        del rows[row + 1:]
    return row, col


def shape(lines: list[str], grep: re.Pattern[str] | None, head: int | None, tail: int | None,
          elide: str | None) -> list[str]:
    """The lines a block shows of an output: grep, then head and/or tail, each run of lines
    left out written as `elide` when given."""
    kept = [k for k, line in enumerate(lines) if grep is None or grep.search(line)]
    if head is not None or tail is not None:
        ends = set(kept[:head] if head is not None else [])
        if tail is not None:
            ends.update(kept[max(0, len(kept) - tail):])
        kept = sorted(ends)
    out: list[str] = []
    last = -1
    for k in kept:
        if elide is not None and k > last + 1:
            out.append(elide)
        out.append(lines[k])
        last = k
    if elide is not None and last < len(lines) - 1:
        out.append(elide)
    return out


@dataclass
class Ran:
    status: int | None  # None: stopped at the time limit
    lines: list[str]
    seconds: float


def run_command(command: str, cwd: Path, env: dict[str, str], timeout: float,
                columns: int = COLUMNS, previous: int = 0) -> Ran:
    """`bash -c COMMAND` with stdout and stderr on one pseudo-terminal, `$?` set to
    `previous`; what the terminal shows when it is done."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
    start = time.monotonic()
    try:
        proc = subprocess.Popen(["bash", "-c", f"(exit {previous})\n{command}"], cwd=cwd,
                                env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    timed_out = False
    exited_at = None
    try:
        while True:
            now = time.monotonic()
            if now - start > timeout:
                timed_out = proc.poll() is None
                break
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # EIO: every process holding the terminal has closed it
                    data = b""
                if not data:
                    break
                chunks.append(data)
                exited_at = None
            elif proc.poll() is not None:
                # Exited, yet something it started still holds the terminal: wait for quiet.
                exited_at = exited_at or now
                if now - exited_at > 1.0:
                    break
    except BaseException:
        _stop(proc)
        raise
    finally:
        os.close(master)
    if timed_out:
        _stop(proc)
    status = proc.wait()
    text = b"".join(chunks).decode("utf-8", "replace")
    return Ran(None if timed_out else status, screen(text), time.monotonic() - start)


def _stop(proc: subprocess.Popen) -> None:
    """End the command's process group (it has a session of its own), politely first."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def environment(work: Path, cache: Path, columns: int, git_dir: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLMBENCH_") and k not in DROPPED}
    bindir = str(Path(sys.executable).parent)
    env.update(PATH=bindir + os.pathsep + env.get("PATH", os.defpath), NO_COLOR="1",
               TERM="xterm", COLUMNS=str(columns), LINES=str(ROWS), LLMBENCH_CACHE=str(cache),
               GIT_PAGER="cat", PAGER="cat", PWD=str(work))
    if git_dir is not None:
        env["GIT_DIR"] = git_dir  # `git show REV:path` reads the repository from the scratch folder
    return env


def git_dir_of(folder: Path) -> str | None:
    try:
        found = subprocess.run(["git", "-C", str(folder), "rev-parse", "--absolute-git-dir"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


@dataclass
class Outcome:
    block: Block
    state: str  # changed, unchanged, skipped, failed, not selected
    body: list[str] | None = None
    problem: str = ""
    seconds: float = 0.0


def _excerpt(lines: list[str], n: int = 6) -> str:
    return "".join(f"\n      | {line}" for line in lines[-n:]) or "\n      | (no output)"


def run_block(block: Block, readme: Path, repo: Path, timeout: float, columns: int,
              git_dir: str | None) -> Outcome:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="readme-tour-", ignore_cleanup_errors=True) as tmp:
        work, cache = Path(tmp) / "work", Path(tmp) / "cache"
        work.mkdir()
        shutil.copyfile(readme, work / "README.md")
        for name in LINKED:
            if (repo / name).is_dir():
                (work / name).symlink_to(repo / name, target_is_directory=True)
        env = environment(work, cache, columns, git_dir)

        def failed(problem: str) -> Outcome:
            return Outcome(block, "failed", None, problem, time.monotonic() - start)

        for command in block.setup:
            ran = run_command(command, work, env, timeout, columns)
            if ran.status != 0:
                return failed(f"setup `{command}` " + (
                    f"ran past {timeout:g} s" if ran.status is None else
                    f"exited {ran.status}") + _excerpt(ran.lines))
        body: list[str] = []
        previous = 0
        for index, command in enumerate(block.commands):
            ran = run_command(command.text, work, env, timeout, columns, previous)
            where = f"line {command.line + 1}: `{command.text}`"
            if ran.status is None:
                return failed(f"{where} ran past {timeout:g} s (--timeout){_excerpt(ran.lines)}")
            expected = block.expected_status(index)
            if ran.status != expected:
                return failed(f"{where} exited {ran.status}, expected {expected}"
                              f"{_excerpt(ran.lines)}")
            previous = ran.status
            shown = shape(ran.lines, block.option("grep", index), block.option("head", index),
                          block.option("tail", index), block.option("elide", index))
            bad = [line for line in shown if line.startswith(("$ ", "```"))]
            if bad:
                return failed(f"{where} printed {bad[0]!r}, which would end its output in the "
                              "README (a `$ ` line reads as a command, ``` closes the block)")
            body += [block.body[command.line - block.fence - 1], *shown]
    state = "unchanged" if body == block.body else "changed"
    return Outcome(block, state, body, "", time.monotonic() - start)


def rewrite(text: str, outcomes: list[Outcome]) -> tuple[str, list[Outcome]]:
    """`text` with each changed block's output replaced, found by its old body (so edits made
    to README.md while the tour ran are kept); also the changed outcomes not found."""
    new = {tuple(o.block.body): o.body for o in outcomes if o.state == "changed"}
    lines = text.split("\n")
    placed = set()
    for block in reversed(parse(text)):
        body = new.get(tuple(block.body))
        if body is not None:
            lines[block.fence + 1:block.end] = body
            placed.add(tuple(block.body))
    missing = [o for o in outcomes if o.state == "changed" and tuple(o.block.body) not in placed]
    return "\n".join(lines), missing


def write_atomically(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _where(readme: Path, block: Block) -> str:
    return f"{readme.name}:{block.line}"


def list_blocks(readme: Path, blocks: list[Block], only: re.Pattern[str] | None,
                columns: int) -> None:
    selected = skipped = commands = 0
    print(f"{readme}: {len(blocks)} tour block(s); commands run at COLUMNS={columns}")
    for block in blocks:
        chosen = only is None or any(only.search(c.text) for c in block.commands)
        state = ("not selected (--only)" if not chosen else
                 f"skip: {block.skip}" if block.skip is not None else "runs")
        print(f"\n#{block.number} {_where(readme, block)}  {block.heading}")
        print(f"   {state}")
        if chosen and block.skip is not None:
            skipped += 1
        elif chosen:
            selected += 1
            commands += len(block.commands)
            for command in block.setup:
                print(f"   setup: {command}")
        shown = block.commands if block.skip is None else block.commands[:1]
        for index, command in enumerate(shown):
            notes = block.annotations(index) if block.skip is None else []
            print(f"   $ {command.text}" + (f"    [{'; '.join(notes)}]" if notes else ""))
        if len(shown) < len(block.commands):
            print(f"   (and {len(block.commands) - len(shown)} more `$ ` line(s))")
    print(f"\n{selected} block(s) would run ({commands} command(s)), {skipped} skipped"
          + (f", {len(blocks) - selected - skipped} not selected" if only is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Re-run README.md's tour commands and rewrite their output blocks.",
        epilog="Markers, the scratch folder and the terminal: docs/readme-tour.md.")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md",
                        help="the README to tour (default: the repository's)")
    parser.add_argument("--repo", type=Path,
                        help="the repository the commands see: its git history (GIT_DIR) and "
                        f"its {', '.join(LINKED)} folders (default: the README's folder)")
    parser.add_argument("--only", metavar="PATTERN", type=re.compile,
                        help="run only the blocks with a command this regex matches (re.search)")
    parser.add_argument("--list", action="store_true",
                        help="list the tour blocks, their markers and what would run; run nothing")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: show a unified diff and exit 1 if a block would "
                        "change")
    parser.add_argument("--timeout", metavar="S", type=float, default=600.0,
                        help="time limit per command in seconds (default 600)")
    parser.add_argument("--columns", metavar="N", type=int, default=COLUMNS,
                        help=f"terminal width the commands see (default {COLUMNS}, the README's)")
    args = parser.parse_args(argv)

    readme = args.readme.resolve()
    original = readme.read_text(encoding="utf-8")
    try:
        blocks = parse(original)
    except MarkerError as exc:
        print(f"{readme.name}:{exc.line + 1}: {exc}", file=sys.stderr)
        return 2
    if args.list:
        list_blocks(readme, blocks, args.only, args.columns)
        return 0

    repo = (args.repo or readme.parent).resolve()
    git_dir = git_dir_of(repo)
    start = time.monotonic()
    outcomes: list[Outcome] = []
    todo = [b for b in blocks if args.only is None or any(args.only.search(c.text)
                                                           for c in b.commands)]
    for block in blocks:
        if block not in todo:
            outcomes.append(Outcome(block, "not selected"))
            continue
        label = f"[{todo.index(block) + 1}/{len(todo)}] {_where(readme, block)} " \
                f"$ {block.commands[0].text}"
        if block.skip is not None:
            outcomes.append(Outcome(block, "skipped", problem=block.skip))
            print(f"{label}: skipped ({block.skip})", flush=True)
            continue
        print(f"{label} ...", flush=True)
        try:
            outcome = run_block(block, readme, repo, args.timeout, args.columns, git_dir)
        except KeyboardInterrupt:
            print(f"\ninterrupted: nothing written to {readme.name}", file=sys.stderr)
            return 130
        outcomes.append(outcome)
        print(f"    {outcome.state} ({outcome.seconds:.1f} s)"
              + (f": {outcome.problem}" if outcome.problem else ""), flush=True)

    count = {s: sum(o.state == s for o in outcomes) for s in
             ("changed", "unchanged", "skipped", "failed", "not selected")}
    ran = count["changed"] + count["unchanged"] + count["failed"]
    changed = [o for o in outcomes if o.state == "changed"]
    failures = [o for o in outcomes if o.state == "failed"]

    new_text, _ = rewrite(original, outcomes)
    if args.check and new_text != original:
        sys.stdout.writelines(difflib.unified_diff(
            original.splitlines(keepends=True), new_text.splitlines(keepends=True),
            f"{readme.name} (now)", f"{readme.name} (regenerated)"))
    missing: list[Outcome] = []
    wrote = False
    if not args.check and changed:
        current = readme.read_text(encoding="utf-8")
        try:
            final, missing = rewrite(current, outcomes)
        except MarkerError as exc:
            print(f"{readme.name} changed while the tour ran and no longer parses (line "
                  f"{exc.line + 1}: {exc}); nothing written", file=sys.stderr)
            return 2
        if final != current:
            write_atomically(readme, final)
            wrote = True

    print(f"\ntour of {readme.name}: {ran} block(s) run, {count['changed']} changed, "
          f"{count['skipped']} skipped, {count['failed']} failed"
          + (f", {count['not selected']} not selected (--only)" if args.only else "")
          + f"; {time.monotonic() - start:.1f} s")
    for o in failures:
        print(f"  FAILED {_where(readme, o.block)} (kept unchanged): {o.problem}")
    for o in missing:
        print(f"  NOT WRITTEN {_where(readme, o.block)}: the block changed in {readme.name} "
              "while the tour ran")
    if changed:
        print(("would change" if args.check else "changed")
              + " (re-read the prose around them: figures quoted there may be stale):")
        for o in changed:
            print(f"  {_where(readme, o.block)}  {o.block.heading}")
    if wrote:
        print(f"wrote {readme}")
    if failures or missing or (args.check and new_text != original):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
