"""Elementwise arithmetic and matrix products: + - * / ** neg exp log sqrt tanh relu @, and casts.

Binary operations broadcast as NumPy does; their backward undoes the broadcast with ``sum_to``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinygrad_llm import backend, runtime
from tinygrad_llm.backend import Array
from tinygrad_llm.functional._common import as_tensor, sum_to
from tinygrad_llm.tensor import Function, Tensor


class Add(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        # d(a+b)/da = d(a+b)/db = 1  (no reduction for an input that needs no gradient, e.g. x + 1.0)
        ga = sum_to(gy, self.a_shape) if self.needs_grad[0] else None
        gb = sum_to(gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


class Sub(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        # d(a-b)/da = 1, d(a-b)/db = -1
        ga = sum_to(gy, self.a_shape) if self.needs_grad[0] else None
        gb = sum_to(-gy, self.b_shape) if self.needs_grad[1] else None
        return ga, gb


class Mul(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a, self.b = a, b
        return a * b

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        # d(ab)/da = b, d(ab)/db = a
        ga = sum_to(gy * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = sum_to(gy * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a: Array, b: Array) -> Array:
        self.a_shape, self.b = a.shape, b
        self.y = a / b
        return self.y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -(1/b) y
        ga_full = gy / self.b
        ga = sum_to(ga_full, self.a_shape) if self.needs_grad[0] else None
        gb = sum_to(-ga_full * self.y, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, x: Array) -> Array:
        return -x

    def backward(self, gy: Array) -> Array:
        return -gy


class Pow(Function):
    """x ** exponent for a scalar exponent."""

    def __init__(self, exponent: float):
        self.exponent = exponent

    def forward(self, x: Array) -> Array:
        self.x = x
        return x**self.exponent

    def backward(self, gy: Array) -> Array:
        c = self.exponent
        if c == 0:
            return self.xp.zeros_like(gy)  # x^0 = 1 everywhere; c x^(c-1) would be 0 * inf = nan at x = 0
        return gy * c * self.x ** (c - 1)  # d(x^c)/dx = c x^(c-1)


class Exp(Function):
    def forward(self, x: Array) -> Array:
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy: Array) -> Array:
        return gy * self.y  # d(e^x)/dx = e^x


class Log(Function):
    def forward(self, x: Array) -> Array:
        self.x = x
        return self.xp.log(x)

    def backward(self, gy: Array) -> Array:
        return gy / self.x  # d(ln x)/dx = 1/x


class Sqrt(Function):
    def forward(self, x: Array) -> Array:
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, gy: Array) -> Array:
        return gy / (2 * self.y)  # d(sqrt x)/dx = 1/(2 sqrt x)


class Tanh(Function):
    def forward(self, x: Array) -> Array:
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, gy: Array) -> Array:
        return gy * (1 - self.y * self.y)  # d(tanh x)/dx = 1 - tanh^2 x


class ReLU(Function):
    def forward(self, x: Array) -> Array:
        self.positive = x > 0
        return x * self.positive

    def backward(self, gy: Array) -> Array:
        return gy * self.positive  # 1 where x > 0, else 0


class MatMul(Function):
    """a @ b with NumPy's rules: batched, broadcasting batch axes, 1-D operands promoted and dropped."""

    def forward(self, a: Array, b: Array) -> Array:
        self.low = backend.autocast_dtype(np.result_type(a.dtype, b.dtype))  # mixed precision (backend.autocast)
        if self.low is not None:
            a, b = a.astype(self.low), b.astype(self.low)
        self.a, self.b = a, b
        y = runtime.matmul(a, b)  # a @ b, on as many threads as a product of this size should get
        return y if self.low is None else y.astype(np.float32)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        ga, gb = self._backward(gy if self.low is None else gy.astype(self.low))
        if self.low is not None:  # gradients in float32, as the operands were
            ga, gb = (None if g is None else g.astype(np.float32) for g in (ga, gb))
        return ga, gb

    def _backward(self, gy):
        xp, a, b = self.xp, self.a, self.b
        # Promote 1-D operands as matmul did: a (n,) -> (1, n), b (n,) -> (n, 1), and restore the axes
        # the product dropped from gy.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = gb = None
        if self.needs_grad[0]:
            ga = runtime.matmul(g2, xp.swapaxes(b2, -1, -2))  # dL/dA = dL/dY B^T
            ga = sum_to(ga, a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            if b2.ndim == 2 and a2.ndim > 2:
                # b was broadcast over a's batch axes: fold them into rows, one GEMM, no (batch, n, m) temporary
                rows = math.prod(a2.shape[:-1])  # not -1: reshape(-1, 0) is ambiguous for empty arrays
                gb = runtime.matmul(a2.reshape(rows, a2.shape[-1]).T, g2.reshape(rows, g2.shape[-1]))
            else:
                gb = sum_to(runtime.matmul(xp.swapaxes(a2, -1, -2), g2), b2.shape)  # dL/dB = A^T dL/dY
            gb = gb.reshape(b.shape)
        return ga, gb


class Cast(Function):
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x: Array) -> Array:
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy: Array) -> Array:
        return gy.astype(self.x_dtype)


# ---- user-facing functions -------------------------------------------------------------------------


def _binary(op, a, b) -> Tensor:
    """Apply the two-input Function class ``op``; either operand may be a Python number or an array."""
    a = a if isinstance(a, Tensor) else as_tensor(a, b)
    return op()(a, as_tensor(b, a))


def add(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    return _binary(Add, a, b)


def sub(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    return _binary(Sub, a, b)


def mul(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    return _binary(Mul, a, b)


def div(a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    return _binary(Div, a, b)


def neg(x: Tensor) -> Tensor:
    return Neg()(x)


def pow(x: Tensor, exponent: float) -> Tensor:
    """x ** exponent; the exponent is a Python number (a tensor exponent goes through exp and log)."""
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number; for a tensor exponent use exp(b * log(x))")
    return Pow(exponent)(x)


def rpow(x: Tensor, base: float) -> Tensor:
    """base ** x for a Python number base > 0, as exp(x ln base)."""
    if base <= 0:
        raise ValueError(f"pow: a number base must be positive to raise it to a tensor, got {base}")
    return exp(x * float(np.log(base)))


def exp(x: Tensor) -> Tensor:
    return Exp()(x)


def log(x: Tensor) -> Tensor:
    return Log()(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt()(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh()(x)


def relu(x: Tensor) -> Tensor:
    return ReLU()(x)


def matmul(a: Tensor | Array, b: Tensor | Array) -> Tensor:
    a = a if isinstance(a, Tensor) else as_tensor(a, b)
    b = as_tensor(b, a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"MatMul: operands must have at least one dimension, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"MatMul: shapes {a.shape} @ {b.shape}: inner dimensions "
            f"{a.shape[-1]} and {b.shape[-2 if b.ndim > 1 else 0]} differ"
        )
    return MatMul()(a, b)


def cast(x: Tensor, dtype: Any) -> Tensor:
    """x as ``dtype`` (``x.astype(dtype)``); to an integer or boolean dtype the result has no gradient."""
    dtype = np.dtype(dtype)
    if dtype == x.dtype:
        return x
    if dtype.kind not in "fc":  # rounding to integers is flat almost everywhere: nothing to differentiate
        return Tensor._from_op(x.data.astype(dtype), None)
    return Cast(dtype)(x)
