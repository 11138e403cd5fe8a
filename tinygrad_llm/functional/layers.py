"""The layers' operations: linear, embedding, layer_norm.

LayerNormFunction and EmbeddingFunction's backward run a compiled kernel (``tinygrad_llm.kernels``) when one is
available; the NumPy lines below them are the reference the kernels are tested against.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_llm import backend, runtime
from tinygrad_llm.backend import Array
from tinygrad_llm.functional._common import first_out_of_range, raw
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.tensor import Function, Tensor


class LinearFunction(Function):
    """y = x W^T + b with W of shape (out, in), as torch.nn.Linear; x is (..., in)."""

    def forward(self, x: Array, weight: Array, bias: Array | None = None) -> Array:
        self.low = backend.autocast_dtype(x.dtype)  # mixed precision: the product in float16/bfloat16
        if self.low is not None:
            x, weight = x.astype(self.low), weight.astype(self.low)
        self.x, self.weight = x, weight
        y = runtime.matmul(x, weight.T)  # (..., in) @ (in, out) -> (..., out)
        if self.low is not None:
            y = y.astype(np.float32)  # results, and so activations, stay float32
        if bias is not None:
            y += bias
        return y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        x, w = self.x, self.weight
        g = gy if self.low is None else gy.astype(self.low)  # the products in the forward's precision
        gx = _float32(runtime.matmul(g, w), self.low) if self.needs_grad[0] else None  # dL/dx = gy W
        rows = math.prod(gy.shape[:-1])  # not -1: reshape(-1, 0) is ambiguous for empty arrays
        g2 = g.reshape(rows, gy.shape[-1])  # (N, out): fold the batch axes into rows
        gw = (
            _float32(runtime.matmul(g2.T, x.reshape(rows, x.shape[-1])), self.low)  # dL/dW = gy^T x
            if self.needs_grad[1]
            else None
        )
        gb = (
            gy.reshape(g2.shape).sum(axis=0) if len(self.needs_grad) > 2 and self.needs_grad[2] else None
        )  # dL/db = sum gy
        return gx, gw, gb


def _float32(array, low):
    """A product computed in low precision, back in float32 (unchanged when ``low`` is None)."""
    return array if low is None else array.astype(np.float32)


class EmbeddingFunction(Function):
    """weight[ids]: row lookup; the backward adds each row's gradient into the rows it was read from."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, weight: Array) -> Array:
        self.weight_shape, self.weight_dtype = weight.shape, weight.dtype
        return weight[self.ids]  # (..., ) ids -> (..., dim)

    def backward(self, gy: Array) -> Array:
        k = dispatch.for_arrays(gy)
        gw = k.embedding_backward(self.ids, gy, self.weight_shape[0]) if k else None  # kernels/numba_layers.py
        if gw is None:
            gw = self.xp.zeros(self.weight_shape, dtype=self.weight_dtype)
            backend.scatter_add(gw, self.ids.reshape(-1), gy.reshape(-1, self.weight_shape[1]))  # repeated ids sum
        return gw


class LayerNormFunction(Function):
    """Normalise over the last axis, then scale and shift: y = (x - mean) / sqrt(var + eps) * w + b.

    Saves x, and each row's mean and rstd = 1 / sqrt(var + eps) (shape (..., 1)), whichever implementation
    runs; backward rebuilds xhat = (x - mean) rstd from them rather than keeping a second (..., C) array."""

    def __init__(self, eps: float, has_weight: bool, has_bias: bool):
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias

    def forward(self, x: Array, *affine: Array) -> Array:
        xp = self.xp
        self.x = x
        self.weight = affine[0] if self.has_weight else None
        bias = affine[-1] if self.has_bias else None
        k = dispatch.for_arrays(x, self.weight, bias)
        out = k.layer_norm_forward(x, self.weight, bias, self.eps) if k else None  # kernels/numba_layers.py
        if out is not None:
            y, mean, rstd = out  # mean, rstd: (rows,)
            self.mean, self.rstd = mean.reshape(x.shape[:-1] + (1,)), rstd.reshape(x.shape[:-1] + (1,))
            return y
        self.mean = x.mean(axis=-1, keepdims=True)
        centered = x - self.mean
        var = (centered * centered).mean(axis=-1, keepdims=True)  # two passes: no cancellation
        self.rstd = 1.0 / xp.sqrt(var + self.eps)
        y = centered * self.rstd  # xhat
        if self.has_weight:
            y = y * self.weight
        if self.has_bias:
            y += bias
        return y

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        k = dispatch.for_arrays(gy, self.x, self.weight, self.mean, self.rstd)
        rows = self.mean.size
        out = (
            k.layer_norm_backward(gy, self.x, self.weight, self.mean.reshape(rows), self.rstd.reshape(rows))
            if k
            else None
        )
        if out is not None:
            gx, gw, gb = out
            return (gx,) + ((gw,) if self.has_weight else ()) + ((gb,) if self.has_bias else ())
        xhat, rstd = (self.x - self.mean) * self.rstd, self.rstd
        gxhat = gy * self.weight if self.has_weight else gy
        # xhat = (x - mean) rstd  =>  dx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat))
        gx = rstd * (gxhat - gxhat.mean(axis=-1, keepdims=True) - xhat * (gxhat * xhat).mean(axis=-1, keepdims=True))
        grads = [gx]
        gy_rows = gy.reshape(-1, gy.shape[-1])
        if self.has_weight:
            grads.append((gy_rows * xhat.reshape(gy_rows.shape)).sum(axis=0))  # dL/dw = sum gy xhat
        if self.has_bias:
            grads.append(gy_rows.sum(axis=0))  # dL/db = sum gy
        return tuple(grads)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias; weight is (out_features, in_features)."""
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} needs a weight of shape (out, {x.shape[-1]}), got {weight.shape}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias of shape {bias.shape}, expected ({weight.shape[0]},)")
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return LinearFunction()(*inputs)


def embedding(ids: Tensor | Array | list, weight: Tensor, check: bool = True) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) selected by integer ``ids`` of any shape.

    NumPy ids are checked on the host, then moved to the weight's device; GPU ids are checked with one
    device-to-host copy. ``check=False`` skips the range check, for a caller that has just made it (an id
    out of range would then read a wrong row on a GPU, where indexing wraps around)."""
    ids = ids.data if isinstance(ids, Tensor) else ids
    ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    bad = first_out_of_range(ids, weight.shape[0])[0] if check else None
    if bad is not None:
        raise IndexError(f"embedding: id {bad} is outside [0, {weight.shape[0]}) for a table of shape {weight.shape}")
    return EmbeddingFunction(raw(ids, backend.get_array_module(weight.data)))(weight)


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis (biased variance, as GPT-2 and torch.nn.LayerNorm)."""
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (x.shape[-1],):
            raise ValueError(f"layer_norm: {name} of shape {p.shape}, expected ({x.shape[-1]},) for input {x.shape}")
    affine = [p for p in (weight, bias) if p is not None]
    return LayerNormFunction(eps, weight is not None, bias is not None)(x, *affine)
