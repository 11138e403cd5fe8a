"""Causal self-attention as one operation: scores, scale, causal mask, softmax, dropout, weights @ values.

The book computes attention in five steps (chapter 3), each an operation of its own that keeps its output
for backward: the scores, the weights, the dropped-out weights, each (B, H, T, S), three such arrays per
layer. Here the five are one ``Function``, which keeps the weights once (before dropout) and the dropout
mask as booleans (a quarter of a float array); backward rebuilds the dropped-out weights from the two.
The same numbers as the five steps, with a third of their (B, H, T, S) memory (a training step of the
6-layer 384-wide model at batch 8 x 256 peaks 14% lower) and one Python call instead of five.
Recomputing the weights in backward instead (one more product and softmax) would save the remaining
(B, H, T, S) array but cost 9% of that step's time (busy machine, interleaved): not worth it on a CPU.

    out = causal_attention(q, k, v, dropout=0.1, training=True)   # q (B, H, T, hd), k and v (B, H, S, hd)

The reference for its values and gradients is the five-step composition (tests/test_ops_attention.py holds
it to that and to finite differences); its softmax runs the compiled kernel where there is one.

Under mixed precision (``backend.autocast``) its four products compute in the autocast dtype, as every other
product does, and the softmax and its gradient in float32 (as PyTorch's autocast): the scores are cast up
before the softmax, the weights down before the product with the values; what comes out is float32.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinygrad_llm import backend, runtime
from tinygrad_llm.backend import Array
from tinygrad_llm.functional.activation import causal_softmax_backward, causal_softmax_forward
from tinygrad_llm.tensor import Function, Tensor


class CausalAttention(Function):
    """out = dropout(softmax(mask(q k^T * scale))) v, over the last two axes; query i of T sees keys
    j <= i + (S - T) (S > T when decoding with a KV cache)."""

    def __init__(self, scale: float, p: float, generator):
        self.scale, self.p, self.generator = scale, p, generator

    def weights(self, q: Array, k: Array) -> Array:
        """softmax(mask(q k^T * scale)): (B, H, T, hd) @ (B, H, hd, S) -> (B, H, T, S), the softmax in float32."""
        return causal_softmax_forward(self.xp, self.product(q, self.xp.swapaxes(k, -1, -2)), self.scale)

    def product(self, a: Array, b: Array) -> Array:
        """a @ b, in the autocast dtype under mixed precision (a float32 result either way)."""
        if self.low is None:
            return runtime.matmul(a, b)
        return runtime.matmul(a.astype(self.low, copy=False), b.astype(self.low, copy=False)).astype(np.float32)

    def dropped(self, w: Array) -> Array:
        """Inverted dropout of the weights with the saved mask, in place: w * keep / (1 - p)."""
        if self.keep is not None:
            w *= self.keep
            w *= w.dtype.type(1.0 / (1.0 - self.p))
        return w

    def forward(self, q: Array, k: Array, v: Array) -> Array:
        self.low = backend.autocast_dtype(q.dtype)  # mixed precision: the products in float16/bfloat16
        if self.low is not None:  # kept for backward in that dtype, as a product's operands are
            q, k, v = q.astype(self.low), k.astype(self.low), v.astype(self.low)
        self.q, self.k, self.v = q, k, v
        self.w = w = self.weights(q, k)  # (B, H, T, S), kept for backward
        # the same draw as F.dropout on w: the same mask for the same generator state
        self.keep = self.generator.random(w.shape, dtype=w.dtype) >= self.p if self.p > 0 else None
        wd = self.dropped(w.copy()) if self.keep is not None else w
        return self.product(wd, v)  # (B, H, T, S) @ (B, H, S, hd) -> (B, H, T, hd)

    def backward(self, gout: Array) -> tuple[Array | None, ...]:
        xp, q, k, v, w = self.xp, self.q, self.k, self.v, self.w
        wd = self.dropped(w.copy()) if self.keep is not None else w  # the weights the product used
        # out = wd v  =>  dL/dv = wd^T gout,  dL/dwd = gout v^T
        gv = self.product(xp.swapaxes(wd, -1, -2), gout) if self.needs_grad[2] else None  # (B, H, S, hd)
        gw = self.dropped(self.product(gout, xp.swapaxes(v, -1, -2)))  # through dropout: the same mask and scale
        # w = softmax(scale * s) with s = q k^T  =>  ds = scale * w * (gw - sum_j gw_j w_j)  (masked: w = 0)
        gs = causal_softmax_backward(xp, w, gw, self.scale)  # (B, H, T, S), in float32
        # s = q k^T  =>  dL/dq = ds k,  dL/dk = ds^T q
        gq = self.product(gs, k) if self.needs_grad[0] else None  # (B, H, T, hd)
        gk = self.product(xp.swapaxes(gs, -1, -2), q) if self.needs_grad[1] else None  # (B, H, S, hd)
        return gq, gk, gv


def causal_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout: float = 0.0,
    training: bool = True,
    scale: float | None = None,
    generator: Any = None,
) -> Tensor:
    """Causal scaled dot-product attention, fused: ``dropout(causal_softmax(q @ k^T, scale)) @ v``.

    q: (..., T, hd) queries; k, v: (..., S, hd) keys and values with S >= T (the last T positions are the
    queries'). scale defaults to 1 / sqrt(hd). Dropout (inverted, on the weights, as the book's) applies
    only when ``training``; ``generator`` defaults to the device's seeded one. Returns (..., T, hd).
    """
    if q.ndim < 2 or k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"causal_attention: queries {q.shape}, keys {k.shape} and values {v.shape} must be "
            f"(..., T, hd), (..., S, hd), (..., S, hd) with the same leading axes and hd"
        )
    if k.shape[-2] < q.shape[-2]:
        raise ValueError(
            f"causal_attention: {k.shape[-2]} keys for {q.shape[-2]} queries: every query must see at least itself"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"causal_attention: dropout must be in [0, 1), got {dropout}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    p = dropout if training else 0.0
    return CausalAttention(scale, p, generator or backend.get_generator(q.device))(q, k, v)
