"""Reductions over axes: sum, mean, max (axis None, an int or a tuple; keepdims as NumPy)."""

from __future__ import annotations

import math

from tinygrad_llm.backend import Array
from tinygrad_llm.functional._common import normalize_axes
from tinygrad_llm.tensor import Function, Tensor


def _expand_reduced(gy, axes: tuple, keepdims: bool, xp):
    """Give gy back the reduced axes (as length 1) so that it broadcasts against the input."""
    return gy if keepdims else xp.expand_dims(gy, axes)


class Sum(Function):
    def __init__(self, axes: tuple, keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Array) -> Array:
        self.x_shape = x.shape
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy: Array) -> Array:
        # every input element contributes with weight 1: broadcast gy back over the reduced axes
        g = _expand_reduced(gy, self.axes, self.keepdims, self.xp)
        return self.xp.broadcast_to(g, self.x_shape)


class Mean(Function):
    def __init__(self, axes: tuple, keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Array) -> Array:
        self.x_shape = x.shape
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy: Array) -> Array:
        # each of the n averaged elements has weight 1/n
        n = math.prod(self.x_shape[a] for a in self.axes)
        g = _expand_reduced(gy, self.axes, self.keepdims, self.xp) / (n or 1)
        return self.xp.broadcast_to(g, self.x_shape)


class Max(Function):
    def __init__(self, axes: tuple, keepdims: bool):
        self.axes, self.keepdims = axes, keepdims

    def forward(self, x: Array) -> Array:
        y = x.max(axis=self.axes, keepdims=True)
        self.is_max = x == y
        return y if self.keepdims else y.squeeze(axis=self.axes)

    def backward(self, gy: Array) -> Array:
        # the gradient goes to the maximal elements; ties share it equally, as central differences do
        g = _expand_reduced(gy, self.axes, self.keepdims, self.xp)
        count = self.is_max.sum(axis=self.axes, keepdims=True, dtype=gy.dtype)  # gy's dtype: no float64 detour
        return self.is_max * (g / count)


def sum(x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    return Sum(normalize_axes(axis, x.ndim, "sum"), keepdims)(x)


def mean(x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    return Mean(normalize_axes(axis, x.ndim, "mean"), keepdims)(x)


def max(x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
    axes = normalize_axes(axis, x.ndim, "max")
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: cannot reduce a zero-length axis of a tensor of shape {x.shape}")
    return Max(axes, keepdims)(x)
