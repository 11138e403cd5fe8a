"""The AdamW parameter update on raw arrays, in place: the one optimizer step worth a compiled kernel.

Not a differentiable operation: it lives here because ``functional`` is the only layer that may call
``tinygrad_llm.kernels`` (the optimizer calls this function). The NumPy/CuPy lines are the reference.
"""

from __future__ import annotations

import math

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.kernels import dispatch


def adamw_update_(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
) -> None:
    """One AdamW step, in place on ``param``, ``exp_avg`` (m) and ``exp_avg_sq`` (v), as torch.optim.AdamW.

    All four arrays share one shape and dtype; ``step`` is t counted from 1. In torch's order of operations,
    so the two agree to float32 rounding:

        p <- p (1 - lr wd)                              decoupled weight decay
        m <- m + (1 - b1) (g - m)                       = b1 m + (1 - b1) g, as torch's lerp
        v <- b2 v + (1 - b2) g g
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    arrays = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    for name, a in arrays.items():
        if a.shape != param.shape or a.dtype != param.dtype:
            raise ValueError(
                f"adamw_update_: {name} has shape {a.shape} and dtype {a.dtype}, expected "
                f"{param.shape} {param.dtype} like param"
            )
    if step < 1:
        raise ValueError(f"adamw_update_: step counts from 1, got {step}")
    # scalars in double as torch computes them, then rounded once to the arrays' dtype
    t = param.dtype.type
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    decay, beta1_c, beta2_t, beta2_c = t(1.0 - lr * weight_decay), t(1.0 - beta1), t(beta2), t(1.0 - beta2)
    bc2_sqrt, eps_t, neg_step_size = t(bias_correction2_sqrt), t(eps), t(-lr / bias_correction1)
    k = dispatch.for_arrays(param, grad, exp_avg, exp_avg_sq)
    done = (
        k.adamw_update_(
            param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2_t, beta2_c, bc2_sqrt, eps_t, neg_step_size
        )
        if k
        else None
    )  # kernels/numba_layers.py (cuda.py for CuPy arrays)
    if done is not None:
        return
    xp = backend.get_array_module(param)
    if weight_decay != 0:
        param *= decay
    exp_avg += beta1_c * (grad - exp_avg)
    exp_avg_sq *= beta2_t
    exp_avg_sq += beta2_c * grad * grad
    denom = xp.sqrt(exp_avg_sq)
    denom /= bc2_sqrt
    denom += eps_t
    update = xp.divide(exp_avg, denom, out=denom)
    update *= neg_step_size
    param += update
