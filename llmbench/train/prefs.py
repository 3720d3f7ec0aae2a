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
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

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


def load_jsonl(path: str | Path) -> list[Pair]:
    """{"prompt", "chosen", "rejected"} text records, one per line; EOS appended to responses."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such data file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path}:{number}: a JSON object with prompt, chosen and rejected "
                             "was expected")
        fields = []
        for key in ("prompt", "chosen", "rejected"):
            value = record.get(key)
            if value is None:
                raise UsageError(f"{path}:{number}: missing {key!r}")
            if not isinstance(value, str) or (key != "prompt" and not value):
                raise UsageError(f"{path}:{number}: {key!r} must be a non-empty string")
            fields.append(value.encode("utf-8"))
        prompt, chosen, rejected = fields
        pairs.append(Pair(prompt, chosen if chosen.endswith(EOS) else chosen + EOS,
                          rejected if rejected.endswith(EOS) else rejected + EOS))
    if len(pairs) < 2:
        raise UsageError(f"{path}: needs at least 2 records, found {len(pairs)}")
    return pairs


def split_heldout(pairs: list[Pair], fraction: float = 0.1) -> tuple[list[Pair], list[Pair]]:
    """The last `fraction` of the records (at least one) are held out, never trained on."""
    n = max(1, round(len(pairs) * fraction))
    return pairs[:-n], pairs[-n:]


def longest(pairs: list[Pair]) -> int:
    return max(len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs)


@dataclass(frozen=True)
class PrefData:
    train: list[Pair]
    heldout: list[Pair]
    task: str | None  # None for a user's data: no rule to score generations with
    fingerprint: str  # identifies the data for caches

    @property
    def max_len(self) -> int:
        return longest(self.train + self.heldout)


def load_data(*, task: str, data: str | None, train: int, heldout: int, seed: int) -> PrefData:
    if data is not None:
        pairs = load_jsonl(data)
        digest = hashlib.sha256(Path(data).read_bytes()).hexdigest()[:16]
        tr, held = split_heldout(pairs)
        return PrefData(tr, held, None, f"data-{digest}")
    tr, held = synthetic_splits(task, train=train, heldout=heldout, seed=seed)
    return PrefData(tr, held, task, f"{task}-{train}-{heldout}-{seed}")
