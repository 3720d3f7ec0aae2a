"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), algorithm 2.

    c_t     = beta1 * m_{t-1} + (1 - beta1) * g_t          (interpolate)
    theta_t = theta_{t-1} - lr * (sign(c_t) + wd * theta_{t-1})   (decoupled weight decay)
    m_t     = beta2 * m_{t-1} + (1 - beta2) * g_t          (momentum)

One state tensor per parameter (the momentum m), so 4 bytes per fp32 parameter, half of Adam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m = state["exp_avg"]
                update = (m * beta1).add_(p.grad, alpha=1 - beta1).sign_()
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss
