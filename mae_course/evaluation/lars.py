"""Lesson 07: LARS, SGD with momentum whose step for each weight matrix is scaled to its norm.

The linear-probing recipe of the paper (after MoCo v3) trains the classifier with LARS at a
very large batch. For every parameter with two or more dimensions, the update (gradient plus
weight decay) is rescaled so that its norm is ``trust_coefficient * ||weight||``; then the
usual momentum step applies. One-dimensional parameters (biases, norms) get neither the
rescaling nor weight decay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling with momentum (defaults: momentum 0.9, trust 0.001)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr >= 0, weight_decay >= 0, 0 <= momentum < 1 and trust_coefficient > 0")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim > 1:  # weight matrices: decay, then rescale to trust * ||p||
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = group["trust_coefficient"] * p_norm / u_norm
                    scale = torch.where((p_norm > 0) & (u_norm > 0), ratio, torch.ones_like(ratio))
                    update = update.mul(scale)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss
