"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``.

Per parameter θ with gradient g, at step t = 1, 2, ...:

    θ ← θ · (1 − lr·λ)                        decoupled weight decay: shrink θ, not the gradient
    m ← β1·m + (1 − β1)·g                     first moment (mean of the gradients)
    v ← β2·v + (1 − β2)·g²                    second moment (uncentred variance)
    m̂ = m / (1 − β1^t),  v̂ = v / (1 − β2^t)   bias correction: m and v start at 0
    θ ← θ − lr · m̂ / (√v̂ + ε)

computed as PyTorch does: ``θ -= (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)``, so that updates agree
with ``torch.optim.AdamW`` to rounding. The arithmetic is ``F.adamw_update_`` (functional/optim_update.py:
the NumPy/CuPy reference and a compiled Numba kernel), in place on ``param.data`` (float32 stays float32);
``exp_avg`` (m), ``exp_avg_sq`` (v) and ``step`` (t) are the saved state of each parameter.
"""

from __future__ import annotations

from tinygrad_llm import backend
from tinygrad_llm.functional import adamw_update_
from tinygrad_llm.optim.optimizer import Optimizer, check_lr, check_nonnegative


class AdamW(Optimizer):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), as PyTorch.

    ``params``: parameters, (name, parameter) pairs, or parameter groups (see ``Optimizer``); use
    ``param_groups_for_weight_decay`` to decay only the weight matrices of linear layers, as GPT-2 did.
    """

    def __init__(
        self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01
    ):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _check_group(self, group: dict, index: int) -> None:
        super()._check_group(group, index)
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"parameter group {index}: betas must be two numbers in [0, 1), got {betas!r}")
        group["betas"] = (float(betas[0]), float(betas[1]))
        check_nonnegative(group["eps"], f"parameter group {index}: eps")
        check_nonnegative(group["weight_decay"], f"parameter group {index}: weight_decay")

    def step(self) -> None:
        """Update every parameter that has a gradient (in place on ``.data``)."""
        for group in self.param_groups:
            lr = check_lr(group["lr"], "lr")  # a scheduler may have set it
            beta1, beta2 = group["betas"]
            for _, p, grad in self._params_to_update(group):
                state = self.state.get(p)
                if state is None:
                    xp = backend.get_array_module(p.data)
                    state = self.state[p] = {
                        "step": 0,
                        "exp_avg": xp.zeros_like(p.data),
                        "exp_avg_sq": xp.zeros_like(p.data),
                    }
                state["step"] += 1
                adamw_update_(
                    p.data,
                    grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    lr=lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    step=state["step"],
                )
