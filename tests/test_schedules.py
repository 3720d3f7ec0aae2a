import pytest
import torch

from llmbench.train.schedules import curve, lambda_lr, multiplier

hf = pytest.importorskip("transformers.optimization")


def hf_curve(factory, total, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = factory(opt, **kw)
    values = []
    for _ in range(total + 1):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


@pytest.mark.parametrize("warmup, total, ratio, cycles", [
    (100, 1000, 0.1, 0.5), (0, 50, 0.0, 0.5), (10, 37, 0.25, 1.0), (5, 5, 0.1, 0.5),
])
def test_cosine_matches_hugging_face(warmup, total, ratio, cycles):
    ours = [multiplier(s, kind="cosine", warmup=warmup, total=total, min_lr_ratio=ratio,
                       num_cycles=cycles) for s in range(total + 1)]
    theirs = hf_curve(hf.get_cosine_with_min_lr_schedule_with_warmup, total,
                      num_warmup_steps=warmup, num_training_steps=total, num_cycles=cycles,
                      min_lr_rate=ratio)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_linear_and_constant_match_hugging_face():
    ours = [multiplier(s, kind="linear", warmup=20, total=200) for s in range(201)]
    assert ours == pytest.approx(hf_curve(hf.get_linear_schedule_with_warmup, 200,
                                          num_warmup_steps=20, num_training_steps=200))
    ours = [multiplier(s, kind="constant", warmup=20, total=200) for s in range(201)]
    assert ours == pytest.approx(hf_curve(hf.get_constant_schedule_with_warmup, 200,
                                          num_warmup_steps=20))


def test_curve_values_and_lambda_lr():
    lrs = curve(kind="cosine", lr=3e-4, warmup=100, total=1000, min_lr_ratio=0.1)
    assert len(lrs) == 1001
    assert lrs[0] == 0.0 and lrs[50] == pytest.approx(1.5e-4)
    assert lrs[100] == pytest.approx(3e-4)
    assert lrs[550] == pytest.approx(3e-4 * (0.1 + 0.9 * 0.5))  # half-way down the cosine
    assert lrs[1000] == pytest.approx(3e-5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = lambda_lr(opt, kind="cosine", warmup=100, total=1000, min_lr_ratio=0.1)
    for _ in range(550):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[550])
    with pytest.raises(ValueError, match="unknown schedule"):
        multiplier(200, kind="step", warmup=10, total=100)
