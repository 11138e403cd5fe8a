"""Stochastic gradient descent with momentum (and Nesterov momentum), as ``torch.optim.SGD``.

Per parameter θ with gradient g:

    d ← g + λ·θ                              L2 weight decay (coupled: added to the gradient)
    b ← d                    (first step)    momentum buffer
    b ← μ·b + (1 − τ)·d      (later steps)   τ is the dampening
    d ← d + μ·b  (Nesterov)  or  d ← b
    θ ← θ − lr·d

With momentum 0 this is plain gradient descent and keeps no state.
"""

from __future__ import annotations

from tinygrad_llm.optim.optimizer import Optimizer, check_lr, check_nonnegative


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False), as PyTorch."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(
            params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        )

    def _check_group(self, group: dict, index: int) -> None:
        super()._check_group(group, index)
        for key in ("momentum", "dampening", "weight_decay"):
            check_nonnegative(group[key], f"parameter group {index}: {key}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"parameter group {index}: nesterov=True needs momentum > 0 and dampening 0")

    def step(self) -> None:
        """Update every parameter that has a gradient (in place on ``.data``)."""
        for group in self.param_groups:
            lr, momentum, weight_decay = check_lr(group["lr"]), group["momentum"], group["weight_decay"]
            for _, p, grad in self._params_to_update(group):
                d = grad
                if weight_decay != 0:
                    d = grad + weight_decay * p.data  # d = g + λθ
                if momentum != 0:
                    state = self.state.get(p)
                    if state is None:  # b = d on the first step
                        buf = d.copy()
                        self.state[p] = {"momentum_buffer": buf}
                    else:  # b = μb + (1 − τ)d
                        buf = state["momentum_buffer"]
                        buf *= momentum
                        buf += (1.0 - group["dampening"]) * d
                    d = d + momentum * buf if group["nesterov"] else buf
                p.data -= lr * d  # θ = θ − lr·d
