"""cross_entropy: the language-modelling loss, computed through a stable logsumexp."""

from __future__ import annotations

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.functional._common import first_out_of_range, raw
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.tensor import Function, Tensor

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """-log softmax(logits)[target] per row of (N, C) logits; rows whose target is ignore_index count 0."""

    def __init__(self, targets, ignore_index: int, reduction: str, count: int):
        self.targets, self.ignore_index, self.reduction = targets, ignore_index, reduction
        self.count = count  # targets that are not ignore_index, counted where they were checked

    def forward(self, logits: Array) -> Array:
        xp = self.xp
        self.valid = self.targets != self.ignore_index
        self.safe_targets = xp.where(self.valid, self.targets, 0)
        self.logits = logits
        k = dispatch.for_arrays(logits)
        out = k.cross_entropy_forward(logits, self.safe_targets, self.ignore_index) if k else None  # numba_softmax.py
        if out is not None:  # one pass per row: max, sum of exp, lse, the loss; no (N, C) temporary
            losses, lse = out
            losses *= self.valid
            self.lse = lse[:, None]
        else:
            m = logits.max(axis=-1, keepdims=True)
            self.lse = xp.log(xp.exp(logits - m).sum(axis=-1, keepdims=True)) + m  # logsumexp, max subtracted
            picked = xp.take_along_axis(logits, self.safe_targets[:, None], axis=-1)
            losses = ((self.lse - picked)[:, 0] * self.valid).astype(logits.dtype)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        if self.reduction == "sum":
            return total
        return total / self.count if self.count else xp.asarray(xp.nan, dtype=logits.dtype)

    def backward(self, gy: Array) -> Array:
        xp = self.xp
        if self.reduction == "none":
            scale = gy * self.valid
        else:
            scale = self.valid * (gy / self.count if self.reduction == "mean" and self.count else gy)
        scale = scale.astype(self.logits.dtype)  # (N,): each row's weight in the loss, 0 for ignored rows
        k = dispatch.for_arrays(self.logits, scale)
        g = k.cross_entropy_backward(self.logits, self.lse[:, 0], self.safe_targets, scale) if k else None
        if g is None:
            # d(lse - x_t)/dx = softmax(x) - onehot(t), for the rows that count
            g = xp.exp(self.logits - self.lse)
            rows = xp.arange(g.shape[0])
            g[rows, self.safe_targets] -= 1
            g *= scale[:, None]
        return g


def cross_entropy(
    logits: Tensor, targets: Tensor | Array | list, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy of (..., C) logits against integer targets of shape (...).

    Classes are on the last axis (as GPT logits (B, T, vocab)); ``reduction='mean'`` averages over the
    targets that are not ``ignore_index``, ``'sum'`` adds them, ``'none'`` returns one loss per target.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    xp = backend.get_array_module(logits.data)
    targets = targets.data if isinstance(targets, Tensor) else targets
    targets = targets if hasattr(targets, "dtype") else np.asarray(targets)  # NumPy targets: checked on the host
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: logits of shape {logits.shape} need targets of shape "
            f"{logits.shape[:-1]}, got {targets.shape}"
        )
    n_classes = logits.shape[-1]
    flat = targets.reshape(-1)
    bad, count = first_out_of_range(flat, n_classes, ignore=ignore_index)  # one copy for GPU targets
    if bad is not None:
        raise IndexError(f"cross_entropy: target {bad} is outside [0, {n_classes}) (ignore_index={ignore_index})")
    loss = CrossEntropy(raw(flat, xp), ignore_index, reduction, count)(logits.reshape(-1, n_classes))
    return loss.reshape(targets.shape) if reduction == "none" else loss
