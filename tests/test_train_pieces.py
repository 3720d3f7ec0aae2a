import pytest
import torch

from llmbench.core.errors import UsageError
from llmbench.train import optimizers
from llmbench.train.checkpointing import segments
from llmbench.train.data import synthetic_batches
from llmbench.train.loop import (
    HostReads,
    Precision,
    build_model,
    forward_loss,
    gradients,
    lm_loss,
    train_step,
)


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


def _fp16_run(optimizer, lr, batch, seq, seed):
    """A tiny model, its optimizer, fp16 autocast with its scaler, and one batch."""
    model = build_model("tiny", seed=0, device="cpu")
    precision = Precision("fp16", "cpu")
    tokens = synthetic_batches(vocab=256, batch=batch, seq=seq, count=1, seed=seed)[0]
    return model, optimizer(model.parameters(), lr=lr), precision, precision.scaler(), tokens


def test_fp16_step_reports_the_scale():
    model, opt, precision, scaler, tokens = _fp16_run(torch.optim.AdamW, 1e-3, 2, 8, 3)
    result = train_step(model, opt, tokens, precision=precision, scaler=scaler)
    assert result.scale == 65536.0 and not result.skipped
    assert Precision("bf16", "cpu").scaler() is None


def test_host_reads_sees_every_read_call():
    t, flag = torch.tensor([1.5, 2.5]), torch.tensor(True)
    reads = {
        "__float__": lambda: float(t[0]), "__int__": lambda: int(t[0]),
        "__index__": lambda: [0, 1][torch.tensor(1)], "__bool__": lambda: 1 if flag else 0,
        "item": lambda: t[0].item(), "tolist": t.tolist, "numpy": t.numpy, "cpu": t.cpu,
        "to": lambda: t.to("cpu"),
    }
    for name, call in reads.items():
        with HostReads() as counted:
            call()
        assert counted.calls == [name]
    with HostReads() as counted:  # device-side work, and a copy that does not wait
        (t * 2).float().to(torch.float64).sum()
        t.to("cpu", non_blocking=True)
    assert counted.count == 0


def _direct_loss(model, tokens, precision, parts):
    """The loss the step reports, as the code before lazy reads summed it: Python floats."""
    total = 0.0
    with torch.no_grad():
        for part in tokens.chunk(parts, dim=0):
            total += float(forward_loss(model, part, precision) / parts)
    return total


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_train_step_reads_nothing_until_the_loss_is_read(name):
    model = build_model("tiny", seed=0, device="cpu")
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)  # its step reads nothing back either
    precision = Precision(name, "cpu")
    tokens = synthetic_batches(vocab=256, batch=8, seq=16, count=1, seed=6)[0]
    expected = _direct_loss(model, tokens, precision, 4)
    with HostReads() as during:
        result = train_step(model, opt, tokens, precision=precision, micro_batches=4)
    assert during.calls == []
    with HostReads() as first:
        loss = result.loss
    with HostReads() as again:
        assert result.loss == loss and not result.skipped and result.scale is None
    assert first.count == 1 and again.count == 0
    assert loss == expected  # the sum over micro-batches of loss / 4, exactly as before


def test_fp16_step_reads_only_the_scalers_inf_check():
    model, opt, precision, scaler, tokens = _fp16_run(torch.optim.SGD, 1e-2, 8, 16, 6)
    expected = _direct_loss(model, tokens, precision, 4)
    with HostReads() as during:
        result = train_step(model, opt, tokens, precision=precision, scaler=scaler,
                            micro_batches=4)
    assert during.calls == ["item"]  # GradScaler.step: skip the update on inf/NaN gradients?
    with HostReads() as reading:
        assert (result.loss, result.scale, result.skipped) == (expected, 65536.0, False)
    assert reading.count == 1


def test_fp16_step_reports_a_skipped_update():
    model = build_model("tiny", seed=0, device="cpu")
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # scaled gradients overflow
    tokens = synthetic_batches(vocab=256, batch=2, seq=8, count=1, seed=3)[0]
    before = [q.detach().clone() for q in model.parameters()]
    result = train_step(model, opt, tokens, precision=Precision("fp16", "cpu"), scaler=scaler)
    assert result.skipped and result.scale == 2.0 ** 127 and scaler.get_scale() == 2.0 ** 126
    assert all(torch.equal(q, b) for q, b in zip(model.parameters(), before, strict=True))


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
