"""Activations and dropout: softmax, log_softmax, gelu, dropout (relu is in arithmetic)."""
from __future__ import annotations

import math

from tinygrad_llm import backend
from tinygrad_llm.tensor import Function, Tensor

GELU_C = math.sqrt(2.0 / math.pi)


class Softmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # subtract the max: exp never overflows
        self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy):
        # dy_i/dx_j = y_i (delta_ij - y_j)  =>  dx = y * (gy - sum_j gy_j y_j)
        y = self.y
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x):
        xp = self.xp
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))  # x - logsumexp(x)
        return self.y

    def backward(self, gy):
        # y = x - logsumexp(x)  =>  dx = gy - softmax(x) * sum(gy)
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


class GELU(Function):
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x):
        self.x = x
        self.t = self.xp.tanh(GELU_C * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1 + self.t)

    def backward(self, gy):
        x, t = self.x, self.t
        # d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x))


class Dropout(Function):
    """Zero each element with probability p and scale the survivors by 1/(1-p) (inverted dropout)."""

    def __init__(self, p: float, generator):
        self.p, self.generator = p, generator

    def forward(self, x):
        keep = self.generator.random(x.shape, dtype=x.dtype) >= self.p
        self.scaled_mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.scaled_mask

    def backward(self, gy):
        return gy * self.scaled_mask  # the same mask and scale as forward


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return Softmax(axis)(x)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax(axis)(x)


def gelu(x: Tensor) -> Tensor:
    return GELU()(x)


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0. ``generator`` defaults to the
    device's seeded generator (``tinygrad_llm.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return Dropout(p, generator or backend.get_generator(x.device))(x)
