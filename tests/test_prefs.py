import json
import re

import pytest
import torch

from llmbench.core.errors import UsageError
from llmbench.train.policy import encode
from llmbench.train.prefs import (
    TASKS,
    Example,
    check_data,
    is_unpaired,
    load_data,
    load_jsonl,
    load_unpaired_jsonl,
    rule_score,
    split_heldout,
    split_unpaired,
    synthetic_splits,
    unpair,
)


@pytest.mark.parametrize("task", TASKS)
def test_chosen_follows_the_rule_rejected_breaks_it(task):
    train, held = synthetic_splits(task, train=200, heldout=50, seed=1)
    assert len(train) == 200 and len(held) == 50
    for p in train + held:
        assert rule_score(task, p.prompt, p.chosen) == 1.0
        assert rule_score(task, p.prompt, p.rejected) < 1.0
        assert p.prompt.endswith(b":") and p.chosen.endswith(b"\n")
    assert not {p.prompt for p in held} & {p.prompt for p in train}


def test_rule_scores_partial_credit():
    assert rule_score("even", b"123456:", b"224466\n") == 1.0
    assert rule_score("even", b"123456:", b"224461\n") == pytest.approx(5 / 6)
    assert rule_score("even", b"123456:", b"22\n4466") == pytest.approx(2 / 6)  # stops at EOS
    assert rule_score("sorted", b"312000:", b"000123\n") == 1.0
    assert rule_score("reverse", b"123456:", b"654321\n") == 1.0
    assert rule_score("reverse", b"123456:", b"123456\n") == 0.0


def test_jsonl_loading(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Q: 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "", "chosen": "é\n", "rejected": "no"}]) + "\n\n")
    pairs = load_jsonl(path)
    assert pairs[0].chosen == b"4\n" and pairs[1].chosen == "é\n".encode()
    train, held = split_heldout(pairs)
    assert (len(train), len(held)) == (1, 1)
    data = load_data(task="even", data=str(path), train=10, heldout=10, seed=0)
    assert data.task is None and data.fingerprint.startswith("data-")


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "chosen": "b"}\n{"prompt": "a", "chosen": "b", "rejected": "c"}',
     ":1: missing 'rejected'"),
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\nnot json', ":2: not JSON"),
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n[1]', ":2: a JSON object"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}\n{}', ":1: 'chosen' must be a non-empty"),
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}', "needs at least 2 records"),
])
def test_malformed_jsonl(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_jsonl(path)
    with pytest.raises(UsageError, match="no such data file"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_encode_masks_only_the_response():
    tokens, mask = encode([b"ab", b"abcd"], [b"X\n", b"Y\n"])
    assert tokens.shape == (2, 6) and mask.shape == (2, 5)
    assert tokens[0].tolist() == [97, 98, 88, 10, 0, 0]
    # label j is token j + 1: the response tokens X and \n are labels 1 and 2 of row 0
    assert mask[0].tolist() == [0, 1, 1, 0, 0]
    assert mask[1].tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(tokens[1, 4:], torch.tensor([89, 10]))


def test_encode_with_an_empty_prompt_labels_the_response_after_its_first_token():
    # load_jsonl accepts an empty prompt: the response then starts the row, and its first
    # token is no label (nothing predicts it), the rest are; a narrower row still pads after
    tokens, mask = encode([b"", b""], [b"hello", b"hi"])
    assert mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    _, mask = encode([b"", b"Q: "], [b"ok", b"4"])
    assert mask.tolist() == [[1, 0, 0], [0, 0, 1]]


def test_unpair_makes_chosen_desirable_and_rejected_undesirable():
    train, held = synthetic_splits("sorted", train=50, heldout=10, seed=2)
    examples = unpair(train)
    assert len(examples) == 100
    assert [e.label for e in examples] == [True, False] * 50
    for e, pair in zip(examples[::2], train, strict=True):
        assert (e.prompt, e.completion) == (pair.prompt, pair.chosen)
        assert rule_score("sorted", e.prompt, e.completion) == 1.0
    for e, pair in zip(examples[1::2], train, strict=True):
        assert (e.prompt, e.completion) == (pair.prompt, pair.rejected)
        assert rule_score("sorted", e.prompt, e.completion) < 1.0
    data = load_data(task="sorted", data=None, train=50, heldout=10, seed=2)
    assert data.unpaired is None and data.examples() == (examples, unpair(held))


def _lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    return path


def test_unpaired_jsonl_loading(tmp_path):
    # Sorted by label, as files often are: each label still has held-out records.
    records = ([{"prompt": f"Q{i}", "completion": "yes", "label": True} for i in range(10)]
               + [{"prompt": f"Q{i}", "completion": "no\n", "label": False} for i in range(20)])
    path = _lines(tmp_path / "kto.jsonl", records)
    assert is_unpaired(path)
    examples = load_unpaired_jsonl(path)
    assert examples[0] == Example(b"Q0", b"yes\n", True) and examples[10].completion == b"no\n"
    train, held = split_unpaired(examples)
    assert [e.label for e in held] == [True] + [False] * 2  # the last 10 % of each label
    assert held[0].prompt == b"Q9" and len(train) == 27 and not set(held) & set(train)
    data = load_data(task="even", data=str(path), train=10, heldout=10, seed=0)
    assert data.task is None and data.fingerprint.startswith("data-")
    assert data.examples() == (train, held)
    # The reference SFT mixes chosen and rejected: both are the completion.
    assert {(p.chosen, p.rejected) for p in data.train} == {(b"yes\n",) * 2, (b"no\n",) * 2}
    check_data(path, method="kto")
    with pytest.raises(UsageError, match="which only kto trains on; dpo needs"):
        check_data(path, method="dpo")


def test_kto_also_takes_pairs(tmp_path):
    path = _lines(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2)
    assert not is_unpaired(path)
    check_data(path, method="kto")  # unpaired when trained on
    assert not is_unpaired(tmp_path / "missing.jsonl")


GOOD = {"prompt": "a", "completion": "b", "label": True}


@pytest.mark.parametrize("records, message", [
    ([{"prompt": "a", "completion": "b"}, GOOD], ":1: missing 'label'"),
    ([GOOD, {"prompt": "a", "completion": "b", "label": "yes"}],
     ':2: \'label\' must be true or false, not "yes"'),
    ([GOOD, {"prompt": "a", "completion": "b", "label": 1}], ":2: 'label' must be true or false"),
    ([GOOD, {"prompt": "a", "completion": "", "label": False}],
     ":2: 'completion' must be a non-empty string"),
    ([GOOD, {"prompt": "a", "label": False}], ":2: missing 'completion'"),
    ([GOOD, "", "{oops"], ":3: not JSON"),
    ([GOOD, "[1]"], ":2: a JSON object with prompt, completion and label was expected"),
    ([GOOD], ": needs at least 2 records, found 1"),
])
def test_malformed_unpaired_jsonl(tmp_path, records, message):
    path = _lines(tmp_path / "bad.jsonl", records)
    assert is_unpaired(path)
    for read in (load_unpaired_jsonl, lambda p: check_data(p, method="kto")):
        with pytest.raises(UsageError, match=f"^{re.escape(str(path))}{re.escape(message)}"):
            read(path)
