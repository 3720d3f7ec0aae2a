import json

import pytest
import torch

from llmbench.core.errors import UsageError
from llmbench.train.policy import encode
from llmbench.train.prefs import (
    TASKS,
    load_data,
    load_jsonl,
    rule_score,
    split_heldout,
    synthetic_splits,
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
