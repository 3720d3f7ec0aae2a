import torch

from llmbench.train.lion import Lion


def sign(x):
    return (x > 0) - (x < 0)


def test_lion_matches_the_papers_rule_by_hand():
    # Chen et al. 2023, algorithm 2, for one scalar weight and a few steps:
    #   c = b1 m + (1 - b1) g;  w = w - lr (sign(c) + wd w);  m = b2 m + (1 - b2) g
    lr, b1, b2, wd = 0.01, 0.9, 0.99, 0.1
    grads = [0.5, -0.2, -0.3, 0.05]
    w, m = 1.0, 0.0
    expected = []
    for g in grads:
        c = b1 * m + (1 - b1) * g
        w = w - lr * (sign(c) + wd * w)
        m = b2 * m + (1 - b2) * g
        expected.append((w, m))

    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    for g, (w_hand, m_hand) in zip(grads, expected, strict=True):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert abs(p.item() - w_hand) < 1e-15
        assert abs(opt.state[p]["exp_avg"].item() - m_hand) < 1e-15
    # Step 3's interpolation flips sign against step 2's gradient direction in the hand run.
    assert expected[1][0] > expected[0][0]


def test_lion_update_magnitude_is_lr_per_element():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(100))
    before = p.detach().clone()
    p.grad = torch.randn(100)
    Lion([p], lr=0.003).step()
    assert torch.allclose((p.detach() - before).abs(), torch.full((100,), 0.003))


def test_lion_state_is_one_momentum_tensor():
    p = torch.nn.Parameter(torch.zeros(4, 5))
    p.grad = torch.ones(4, 5)
    opt = Lion([p])
    opt.step()
    assert list(opt.state[p]) == ["exp_avg"]
    assert opt.state[p]["exp_avg"].shape == p.shape
