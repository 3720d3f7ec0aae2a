import pytest
import torch

from llmbench.core.errors import UsageError
from llmbench.train import optimizers
from llmbench.train.checkpointing import segments
from llmbench.train.data import synthetic_batches
from llmbench.train.loop import Precision, build_model, gradients, lm_loss, train_step


def test_synthetic_batches_are_deterministic_progressions():
    a = synthetic_batches(vocab=256, batch=3, seq=10, count=2, seed=7)
    b = synthetic_batches(vocab=256, batch=3, seq=10, count=2, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (3, 11)
    stride = (a[0][:, 1:] - a[0][:, :-1]) % 256
    assert (stride == stride[:, :1]).all() and ((stride >= 1) & (stride <= 7)).all()


def test_training_learns_the_task():
    model = build_model("tiny", seed=0, device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = synthetic_batches(vocab=256, batch=8, seq=32, count=40, seed=1)
    losses = [train_step(model, opt, t).loss for t in batches]
    assert losses[0] > 5.0 and losses[-1] < 0.75 * losses[0]


def test_accumulated_gradient_equals_whole_batch():
    model = build_model("tiny", seed=0, device="cpu").double()
    tokens = synthetic_batches(vocab=256, batch=8, seq=16, count=1, seed=2)[0]
    lm_loss(model, tokens).backward()
    whole = gradients(model)
    model.zero_grad()
    for part in tokens.chunk(4):
        (lm_loss(model, part) / 4).backward()
    for a, w in zip(gradients(model), whole, strict=True):
        assert torch.allclose(a, w, atol=1e-12)


def test_fp16_step_reports_the_scale():
    model = build_model("tiny", seed=0, device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    precision = Precision("fp16", "cpu")
    scaler = precision.scaler()
    tokens = synthetic_batches(vocab=256, batch=2, seq=8, count=1, seed=3)[0]
    result = train_step(model, opt, tokens, precision=precision, scaler=scaler)
    assert result.scale == 65536.0 and not result.skipped
    assert Precision("bf16", "cpu").scaler() is None


@pytest.mark.parametrize("policy, layers, every, expected", [
    ("none", 4, 2, []),
    ("every", 3, 2, [(0, 1), (1, 2), (2, 3)]),
    ("every-k", 7, 3, [(0, 1), (3, 4), (6, 7)]),
    ("sqrt", 16, 2, [(0, 4), (4, 8), (8, 12), (12, 16)]),
    ("sqrt", 10, 2, [(0, 4), (4, 8), (8, 10)]),
])
def test_checkpoint_policies(policy, layers, every, expected):
    assert segments(policy, layers, every) == expected


def test_checkpoint_policy_errors():
    with pytest.raises(ValueError, match="every must be at least 1"):
        segments("every-k", 4, 0)
    with pytest.raises(ValueError, match="unknown checkpointing policy"):
        segments("half", 4)


@pytest.mark.parametrize("policy", ["every", "every-k", "sqrt"])
def test_checkpointing_policies_keep_gradients_identical(policy):
    tokens = synthetic_batches(vocab=256, batch=2, seq=16, count=1, seed=4)[0]

    def grads(segs):
        model = build_model("tiny", seed=0, device="cpu", n_layers=5)
        model.set_checkpointing(segs)
        lm_loss(model, tokens).backward()
        return gradients(model)

    for g, r in zip(grads(segments(policy, 5, 2)), grads([]), strict=True):
        assert torch.equal(g, r)


@pytest.mark.parametrize("name, per_param", [
    ("sgd", 0), ("sgd-momentum", 4), ("adam", 8), ("adamw", 8), ("lion", 4)])
def test_measured_state_equals_analytic(name, per_param):
    model = build_model("tiny", seed=0, device="cpu")
    opt = optimizers.get(name).build(model.parameters(), lr=1e-3)
    tokens = synthetic_batches(vocab=256, batch=2, seq=8, count=1, seed=5)[0]
    train_step(model, opt, tokens)
    params = list(model.parameters())
    total, elementwise = optimizers.measured_state_bytes(opt, params)
    assert total == optimizers.analytic_state_bytes(
        name, [(tuple(p.shape), p.element_size()) for p in params])
    assert elementwise == per_param * sum(p.numel() for p in params)


def test_adafactor_factored_state():
    if optimizers.get("adafactor").unavailable():
        pytest.skip("no torch.optim.Adafactor")
    p = torch.nn.Parameter(torch.randn(6, 10))
    v = torch.nn.Parameter(torch.randn(7))
    opt = optimizers.get("adafactor").build([p, v], lr=1e-3)
    p.grad, v.grad = torch.randn(6, 10), torch.randn(7)
    opt.step()
    total, _ = optimizers.measured_state_bytes(opt, [p, v])
    # matrix: rows + columns; vector: its full second moment; plus two step counters
    assert total == (6 + 10) * 4 + 7 * 4 + 2 * 4
    assert total == optimizers.analytic_state_bytes("adafactor", [((6, 10), 4), ((7,), 4)])


def test_optimizer_registry_errors():
    with pytest.raises(UsageError, match="unknown optimizer 'rmsprop'"):
        optimizers.get("rmsprop")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        assert "bitsandbytes is not installed" in optimizers.get("adam8bit").unavailable()
