"""Preference data: a synthetic task with a checkable rule, or the user's own JSONL.

Everything is bytes (the built-in model's 256-token vocabulary), so a user's text records and
the synthetic task go through the same code. A record is a prompt, a chosen response and a
rejected response; responses end with EOS (a newline).

Synthetic tasks: the prompt is six random digits and a colon; the response is six digits.
- even: the response uses only even digits (rejected: only odd ones).
- sorted: the response is the prompt's digits in ascending order (rejected: in another order).
- reverse: the response is the prompt reversed (rejected: the prompt copied as it is).
The rule score of a response is the share of its six positions that follow the rule (0..1); it
satisfies the rule when the score is 1. The held-out split never shares a prompt with training.

KTO trains on unpaired examples: a prompt, one completion and whether it is desirable. Pairs
become two examples each (`unpair`: chosen desirable, rejected undesirable), as TRL's
KTOTrainer unpairs a paired dataset; a user's file of {prompt, completion, label} records (TRL's
unpaired preference format) is told apart from a paired one by its first record's keys, as TRL
tells its dataset types apart (`is_unpaired`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llmbench.core.errors import UsageError

TASKS: tuple[str, ...] = ("even", "sorted", "reverse")
DIGITS = 6
EOS = b"\n"
SEP = b":"
PAD = 0


@dataclass(frozen=True)
class Pair:
    prompt: bytes
    chosen: bytes
    rejected: bytes


@dataclass(frozen=True)
class Example:
    """An unpaired record (KTO's): a prompt, one completion, and whether it is desirable."""

    prompt: bytes
    completion: bytes
    label: bool


def unpair(pairs: list[Pair]) -> list[Example]:
    """Each pair as two examples, in order: its chosen response desirable, then its rejected
    response undesirable."""
    return [Example(p.prompt, completion, label) for p in pairs
            for completion, label in ((p.chosen, True), (p.rejected, False))]


def _synthetic_pair(task: str, rng: random.Random) -> Pair:
    while True:
        digits = [rng.randrange(10) for _ in range(DIGITS)]
        if task == "even":
            good = [rng.choice((0, 2, 4, 6, 8)) for _ in range(DIGITS)]
            bad = [rng.choice((1, 3, 5, 7, 9)) for _ in range(DIGITS)]
        elif task == "sorted":
            good = sorted(digits)
            bad = digits[:]
            rng.shuffle(bad)
            if bad == good:
                continue
        elif task == "reverse":
            good, bad = digits[::-1], digits
            if good == bad:
                continue
        else:
            raise UsageError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")
        text = "".join(map(str, digits)).encode()
        return Pair(text + SEP, "".join(map(str, good)).encode() + EOS,
                    "".join(map(str, bad)).encode() + EOS)


def synthetic_splits(task: str, *, train: int, heldout: int,
                     seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train pairs, held-out pairs); no held-out prompt appears in training."""
    held = [_synthetic_pair(task, random.Random(f"heldout-{seed}-{i}")) for i in range(heldout)]
    held_prompts = {p.prompt for p in held}
    rng = random.Random(f"train-{seed}")
    out: list[Pair] = []
    while len(out) < train:
        pair = _synthetic_pair(task, rng)
        if pair.prompt not in held_prompts:
            out.append(pair)
    return out, held


def rule_score(task: str, prompt: bytes, response: bytes) -> float:
    """The share of the response's six positions that follow the task's rule."""
    digits = prompt.rstrip(SEP)
    target = {"sorted": bytes(sorted(digits)), "reverse": digits[::-1]}.get(task)
    resp = response.split(EOS, 1)[0][:DIGITS]
    hits = 0
    for i, ch in enumerate(resp):
        if task == "even":
            hits += ch in b"02468"
        elif target is not None and i < len(target):
            hits += ch == target[i]
    return hits / DIGITS


def _records(path: Path, keys: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON object on each non-blank line of a data file, with its line number, in order
    (so the first bad line is the one named). A file that cannot be read, or a line that is not
    a JSON object, is a UsageError naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such data file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}:{number}: a JSON object with {', '.join(keys[:-1])} and "
                             f"{keys[-1]} was expected")
        yield number, record


_T = TypeVar("_T")


def _at_least_two(path: Path, records: list[_T]) -> list[_T]:
    if len(records) < 2:
        raise UsageError(f"{path}: needs at least 2 records, found {len(records)}")
    return records


def _text(path: Path, number: int, record: dict[str, Any], key: str) -> bytes:
    """A record's text field as UTF-8 bytes; only the prompt may be empty."""
    value = record.get(key)
    if value is None:
        raise UsageError(f"{path}:{number}: missing {key!r}")
    if not isinstance(value, str) or (key != "prompt" and not value):
        raise UsageError(f"{path}:{number}: {key!r} must be a non-empty string")
    return value.encode("utf-8")


def _eos(response: bytes) -> bytes:
    return response if response.endswith(EOS) else response + EOS


def load_jsonl(path: str | Path) -> list[Pair]:
    """{"prompt", "chosen", "rejected"} text records, one per line; EOS appended to responses."""
    path = Path(path)
    keys = ("prompt", "chosen", "rejected")
    pairs = []
    for number, record in _records(path, keys):
        prompt, chosen, rejected = (_text(path, number, record, key) for key in keys)
        pairs.append(Pair(prompt, _eos(chosen), _eos(rejected)))
    return _at_least_two(path, pairs)


def load_unpaired_jsonl(path: str | Path) -> list[Example]:
    """{"prompt", "completion", "label"} records, one per line (TRL's unpaired preference
    format): `label` true for a desirable completion, false for an undesirable one; EOS
    appended to completions."""
    path = Path(path)
    examples = []
    for number, record in _records(path, ("prompt", "completion", "label")):
        prompt, completion = (_text(path, number, record, key) for key in ("prompt", "completion"))
        label = record.get("label")
        if label is None:
            raise UsageError(f"{path}:{number}: missing 'label'")
        if not isinstance(label, bool):
            raise UsageError(f"{path}:{number}: 'label' must be true or false, not "
                             f"{json.dumps(label)}")
        examples.append(Example(prompt, _eos(completion), label))
    return _at_least_two(path, examples)


def is_unpaired(path: str | Path) -> bool:
    """Whether a data file holds unpaired records: its first record (first non-blank line) is
    a JSON object with "completion" or "label" and without "chosen". Anything else, a file that
    cannot be read included, is read as pairs, whose reader names what is wrong."""
    try:
        with Path(path).open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        record = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (isinstance(record, dict) and "chosen" not in record
            and ("completion" in record or "label" in record))


def check_data(path: str | Path, *, method: str) -> None:
    """Read a --data file as `method` will, so that a bad record is bad input before anything
    runs: unpaired records are for kto only; kto also takes pairs (it unpairs them)."""
    if not is_unpaired(path):
        load_jsonl(path)
        return
    if method != "kto":
        raise UsageError(f"{path}: holds unpaired {{prompt, completion, label}} records, which "
                         f"only kto trains on; {method} needs {{prompt, chosen, rejected}}")
    load_unpaired_jsonl(path)


def split_heldout(pairs: list[Pair], fraction: float = 0.1) -> tuple[list[Pair], list[Pair]]:
    """The last `fraction` of the records (at least one) are held out, never trained on."""
    n = max(1, round(len(pairs) * fraction))
    return pairs[:-n], pairs[-n:]


def split_unpaired(examples: list[Example], fraction: float = 0.1
                   ) -> tuple[list[Example], list[Example]]:
    """Per label, its last `fraction` of records (at least one, from a label with two or more)
    are held out, so that the held-out set has both labels when the data does, however the
    file is ordered; training keeps the rest, in the file's order."""
    held: set[int] = set()
    for label in (True, False):
        index = [i for i, e in enumerate(examples) if e.label is label]
        if len(index) >= 2:
            held.update(index[-max(1, round(len(index) * fraction)):])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def completion_pairs(examples: list[Example]) -> list[Pair]:
    """Unpaired examples as pairs whose chosen and rejected response are both the completion:
    what the reference SFT (which mixes chosen and rejected responses) trains on, so that it
    trains on every completion of a user's unpaired file, desirable or not."""
    return [Pair(e.prompt, e.completion, e.completion) for e in examples]


def longest(pairs: list[Pair]) -> int:
    return max(len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs)


@dataclass(frozen=True)
class PrefData:
    train: list[Pair]
    heldout: list[Pair]
    task: str | None  # None for a user's data: no rule to score generations with
    fingerprint: str  # identifies the data for caches
    # A user's unpaired file: its (train, held-out) examples; `train` and `heldout` then hold
    # them as `completion_pairs`, for the reference SFT only.
    unpaired: tuple[list[Example], list[Example]] | None = None

    @property
    def max_len(self) -> int:
        return longest(self.train + self.heldout)

    def examples(self) -> tuple[list[Example], list[Example]]:
        """(train, held-out) unpaired examples: the file's, or every pair unpaired."""
        return self.unpaired or (unpair(self.train), unpair(self.heldout))


def load_data(*, task: str, data: str | None, train: int, heldout: int, seed: int) -> PrefData:
    if data is not None and is_unpaired(data):
        tr_ex, held_ex = split_unpaired(load_unpaired_jsonl(data))
        digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()[:16]
        return PrefData(completion_pairs(tr_ex), completion_pairs(held_ex), None,
                        f"data-{digest}", unpaired=(tr_ex, held_ex))
    if data is not None:
        pairs = load_jsonl(data)
        digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()[:16]
        tr, held = split_heldout(pairs)
        return PrefData(tr, held, None, f"data-{digest}")
    tr, held = synthetic_splits(task, train=train, heldout=heldout, seed=seed)
    return PrefData(tr, held, task, f"{task}-{train}-{heldout}-{seed}")
