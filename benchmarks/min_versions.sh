#!/usr/bin/env bash
# Install llmbench's runtime dependencies at the lowest versions pyproject.toml accepts (typer,
# rich, pydantic; torch at the CPU pin) in a fresh virtual environment, then run `--help` on
# every command and one small run of each kind of output. Exit 1 when a floor is wrong.
#
#     bash benchmarks/min_versions.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-$(mktemp -d)/venv}
floors=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pins = []
for d in deps:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", d)
    if m and m.group(1).lower() in ("typer", "rich", "pydantic"):
        pins.append(f"{m.group(1)}=={m.group(2)}")
print(" ".join(pins))
PY
)
echo "floors: $floors"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0 $floors
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" list 2>/dev/null | grep -i -E "^(typer|click|rich|pydantic) "
fail=0
# Every command and group the command line has (the registry's benchmarks included), one per
# line: "", "env", "attention", ..., "tune", "tune attention".
commands=$("$VENV/bin/python" - <<'PY'
import typer
from llmbench.cli.app import app
def walk(group, words=()):
    print(" ".join(words))
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            walk(cmd, (*words, name))
        else:
            print(" ".join((*words, name)))
walk(typer.main.get_command(app))
PY
) || { echo "listing the commands failed at the floors"; exit 1; }
echo "checking --help of $(echo "$commands" | wc -l) commands"
while IFS= read -r c; do
  # shellcheck disable=SC2086 # "tune attention" is two words
  if ! "$VENV/bin/python" -m llmbench $c --help >/dev/null 2>"$VENV/err.txt"; then
    echo "llmbench $c --help failed: $(tail -n 1 "$VENV/err.txt")"; fail=1
  fi
done <<< "$commands"
"$VENV/bin/python" -m llmbench schedule --total 100 --warmup 10 -q >/dev/null || fail=1
"$VENV/bin/python" -m llmbench attention --seq 64 --heads 2 --head-dim 16 --impl standard,sdpa \
  --max-time 0.2 -q --json "$VENV/a.json" >/dev/null || fail=1
"$VENV/bin/python" -m llmbench compare "$VENV/a.json" "$VENV/a.json" >/dev/null || fail=1
[ $fail = 0 ] && echo "every command works at the floors" || echo "a floor in pyproject.toml is too low"
exit $fail
