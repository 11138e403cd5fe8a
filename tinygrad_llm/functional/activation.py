"""Activations and dropout: softmax, causal_softmax, masked_softmax, log_softmax, logsigmoid, gelu, dropout
(relu is in arithmetic).

Softmax, CausalSoftmax and GELUFunction run a compiled kernel (``tinygrad_llm.kernels``) when one is available;
the NumPy lines below them are the reference the kernels are tested against.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.tensor import Function, Tensor

GELU_C = math.sqrt(2.0 / math.pi)


class Softmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Array) -> Array:
        xp = self.xp
        self.last_axis = x.ndim > 0 and self.axis in (-1, x.ndim - 1)  # the kernels work on the last axis
        k = dispatch.for_arrays(x) if self.last_axis else None
        self.y = k.softmax_forward(x) if k else None  # kernels/numba_softmax.py (cuda.py for CuPy arrays)
        if self.y is None:
            e = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # subtract the max: exp never overflows
            self.y = e / e.sum(axis=self.axis, keepdims=True)
        return self.y

    def backward(self, gy: Array) -> Array:
        k = dispatch.for_arrays(self.y, gy) if self.last_axis else None
        gx = k.softmax_backward(self.y, gy) if k else None
        if gx is None:
            # dy_i/dx_j = y_i (delta_ij - y_j)  =>  dx = y * (gy - sum_j gy_j y_j)
            y = self.y
            gx = y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))
        return gx


class CausalSoftmax(Function):
    """Attention weights in one step: softmax(scale * scores) over the last axis, causally masked.

    scores (..., T, S) hold T queries that are the last T of S positions (S == T in training, S > T when
    decoding with a KV cache): query i sees keys j <= i + (S - T), the others get weight 0. The kernel never
    builds the masked copy; the reference below does, with -inf, exactly as the book's masked_fill.
    """

    def __init__(self, scale: float):
        self.scale = scale

    def forward(self, x: Array) -> Array:
        self.y = causal_softmax_forward(self.xp, x, self.scale)
        return self.y

    def backward(self, gy: Array) -> Array:
        return causal_softmax_backward(self.xp, self.y, gy, self.scale)


def causal_softmax_forward(xp: ModuleType, x: Array, scale: float) -> Array:
    """softmax(scale * x) over the last axis, causally masked, on raw arrays (CausalSoftmax and the fused
    attention share it)."""
    k = dispatch.for_arrays(x)
    y = k.softmax_forward(x, scale=scale, causal=True) if k else None  # kernels/numba_softmax.py / cuda.py
    if y is None:
        n_queries, n_keys = x.shape[-2:]
        keep = xp.arange(n_keys)[None, :] <= xp.arange(n_queries)[:, None] + (n_keys - n_queries)  # (T, S)
        z = xp.where(keep, x * scale, -xp.inf)
        e = xp.exp(z - z.max(axis=-1, keepdims=True))  # exp(-inf) = 0 on the masked entries
        y = e / e.sum(axis=-1, keepdims=True)
    return y


def causal_softmax_backward(xp: ModuleType, y: Array, gy: Array, scale: float) -> Array:
    """The gradient of causal_softmax_forward from its output y and the output gradient gy."""
    k = dispatch.for_arrays(y, gy)
    gx = k.softmax_backward(y, gy, scale=scale, causal=True) if k else None
    if gx is None:
        # softmax's backward, times d(scale x)/dx = scale; masked entries have y = 0 and get 0
        gx = scale * y * (gy - (gy * y).sum(axis=-1, keepdims=True))
    return gx


class MaskedSoftmax(Function):
    """Attention weights with a mask: softmax(scale * scores) over the last axis where ``keep`` is True.

    keep: a boolean array broadcastable to scores (..., T, S), e.g. (B, 1, 1, S) for a padding mask (0 on
    the padded keys), optionally and-ed with the causal mask. Masked entries get weight exactly 0, as
    masked_fill(-inf) then softmax; a row with every key masked (a padded query of a left-padded GPT prompt)
    gets all-zero weights instead of 0/0 = NaN. The unmasked case is CausalSoftmax / Softmax (kernels).
    """

    def __init__(self, keep, scale: float):
        self.keep, self.scale = keep, scale

    def forward(self, x: Array) -> Array:
        xp = self.xp
        z = xp.where(self.keep, x * self.scale, -xp.inf)  # (..., T, S)
        row_max = z.max(axis=-1, keepdims=True)
        row_max = xp.where(xp.isfinite(row_max), row_max, 0)  # fully masked row: any finite shift will do
        e = xp.exp(z - row_max)  # exp(-inf) = 0 on the masked entries
        total = e.sum(axis=-1, keepdims=True)
        self.y = e / xp.where(total > 0, total, 1)  # fully masked row: 0 / 1 = 0
        return self.y

    def backward(self, gy: Array) -> Array:
        # softmax's backward times d(scale x)/dx = scale; masked entries have y = 0 and get 0
        y = self.y
        return self.scale * y * (gy - (gy * y).sum(axis=-1, keepdims=True))


class LogSoftmax(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, x: Array) -> Array:
        xp = self.xp
        shifted = x - x.max(axis=self.axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))  # x - logsumexp(x)
        return self.y

    def backward(self, gy: Array) -> Array:
        # y = x - logsumexp(x)  =>  dx = gy - softmax(x) * sum(gy)
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True)


class LogSigmoid(Function):
    """log sigmoid(x) = -log(1 + e^(-x)), the log-likelihood of a logistic choice (DPO's loss is its negative).

    Computed as -logaddexp(0, -x): never exp of a large positive number, and no log(0) for very negative x
    (where the naive log(sigmoid(x)) would give -inf instead of x).
    """

    def forward(self, x: Array) -> Array:
        self.x = x
        return -self.xp.logaddexp(0, -x)

    def backward(self, gy: Array) -> Array:
        # d/dx [-log(1 + e^(-x))] = e^(-x) / (1 + e^(-x)) = sigmoid(-x) = exp(-logaddexp(0, x)), which never
        # computes 1 - sigmoid(x) (all cancellation when x is large)
        return gy * self.xp.exp(-self.xp.logaddexp(0, self.x))


class GELUFunction(Function):
    """GPT-2's GELU, the tanh approximation: 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).

    Computed as x * s with s = sigmoid(2u) = 1 / (1 + e^(-2u)), the same value as 0.5 (1 + tanh u) without
    its cancellation: for negative x, 1 + tanh u is a small difference of numbers near 1, and float32
    would keep only a few digits of gelu(-4).
    """

    def forward(self, x: Array) -> Array:
        self.x = x  # all that backward needs, whichever implementation runs: it recomputes s from x
        k = dispatch.for_arrays(x)
        y = k.gelu_forward(x) if k else None  # kernels/numba_layers.py (cuda.py for CuPy arrays)
        if y is None:
            y = x * _gelu_gate(self.xp, x)
        return y

    def backward(self, gy: Array) -> Array:
        k = dispatch.for_arrays(self.x, gy)
        gx = k.gelu_backward(self.x, gy) if k else None
        if gx is None:
            x = self.x
            s = _gelu_gate(self.xp, x)
            # d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x), and with t = 2s - 1:
            #   = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
            gx = gy * (s + 2 * x * s * (1 - s) * GELU_C * (1 + 3 * 0.044715 * x * x))
        return gx


class GELUErf(Function):
    """The exact GELU of BERT and torch's default (Hugging Face's "gelu"): y = x Phi(x), Phi the standard
    normal's distribution function, Phi(x) = 0.5 (1 + erf(x / sqrt 2)). NumPy has no erf: ``normal_cdf``
    below computes it to float64 precision."""

    def forward(self, x: Array) -> Array:
        self.x = x  # all that backward needs, whichever implementation runs: it recomputes Phi from x
        kernel = getattr(dispatch.for_arrays(x), "gelu_erf_forward", None)  # kernels/numba_layers.py, cuda.py
        y = kernel(x) if kernel else None
        if y is None:
            y = x * normal_cdf(self.xp, x)
        return y

    def backward(self, gy: Array) -> Array:
        kernel = getattr(dispatch.for_arrays(self.x, gy), "gelu_erf_backward", None)
        gx = kernel(self.x, gy) if kernel else None
        if gx is not None:
            return gx
        x = self.x.astype(np.float64)  # in float64, as Phi: Phi(x) + x phi(x) partly cancels at negative x
        # d/dx [x Phi(x)] = Phi(x) + x phi(x), with phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density
        pdf = self.xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return gy * (normal_cdf(self.xp, x) + x * pdf).astype(gy.dtype)


_ERF_SERIES_TERMS, _ERFC_FRACTION_DEPTH = 32, 50  # float64 error below 3e-15 everywhere (tests/test_bert.py)


def normal_cdf(xp: ModuleType, x: Array) -> Array:
    """Phi(x) = 0.5 erfc(-x / sqrt 2), elementwise, returned in x's dtype, accurate to a few float64 ulps.

    With z = |x| / sqrt 2:
      z < 2:   erf(z) = 2/sqrt(pi) e^(-z^2) sum_n 2^n z^(2n+1) / (1 * 3 * ... * (2n+1)); every term is
               positive, so no cancellation (the Taylor series of erf alternates and loses digits);
      z >= 2:  erfc(z) = e^(-z^2)/sqrt(pi) / (z + (1/2) / (z + 1 / (z + (3/2) / (z + 2 / (z + ...))))),
               Laplace's continued fraction, evaluated from the bottom up; it keeps erfc's tiny values
               relative-exact, so gelu(-10) = -10 Phi(-10) does not round to 0 from 1 - erf.
    """
    # in float64 whatever x's dtype: 1 - erf(z) below cancels for z near 2, which float32 would not survive
    z = xp.abs(x.astype(np.float64)) * (1 / math.sqrt(2))
    # Both formulas run on every element, each on z clamped into its own range (the value the other range's
    # elements get there is unused), and xp.where picks one per element: boolean-mask indexing (z[z < 2])
    # would copy the mask's count to the host, a wait for a GPU at every call.
    zs = xp.minimum(z, 2.0)  # z where z < 2
    z2 = zs * zs
    term, total = zs, zs
    for n in range(_ERF_SERIES_TERMS):
        term = term * (2 * z2 / (2 * n + 3))  # the ratio of consecutive terms
        total = total + term
    series = 1 - (2 / math.sqrt(math.pi)) * xp.exp(-z2) * total
    zl = xp.maximum(z, 2.0)  # z where z >= 2
    fraction = zl
    for k in range(_ERFC_FRACTION_DEPTH, 0, -1):
        fraction = zl + (k / 2) / fraction
    erfc_abs = xp.where(z < 2, series, xp.exp(-zl * zl) / (math.sqrt(math.pi) * fraction))  # erfc(|x| / sqrt 2)
    # Phi(x) = 1 - 0.5 erfc(|x|/sqrt 2) for x >= 0, and 0.5 erfc(|x|/sqrt 2) for x < 0
    return xp.where(x >= 0, 1 - 0.5 * erfc_abs, 0.5 * erfc_abs).astype(x.dtype, copy=False)


def _gelu_gate(xp, x):
    """s = sigmoid(2u) = 0.5 (1 + tanh u); e^(-2u) overflows to inf for very negative x, where s is 0."""
    with np.errstate(over="ignore"):
        return 1 / (1 + xp.exp(-2 * GELU_C * (x + 0.044715 * x**3)))


class DropoutFunction(Function):
    """Zero each element with probability p and scale the survivors by 1/(1-p) (inverted dropout)."""

    def __init__(self, p: float, generator):
        self.p, self.generator = p, generator

    def forward(self, x: Array) -> Array:
        keep = self.generator.random(x.shape, dtype=x.dtype) >= self.p
        self.scaled_mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.scaled_mask

    def backward(self, gy: Array) -> Array:
        return gy * self.scaled_mask  # the same mask and scale as forward


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return Softmax(axis)(x)


def causal_softmax(scores: Tensor, scale: float = 1.0) -> Tensor:
    """softmax(scale * scores) over the last axis with a causal mask, for attention.

    scores: (..., T, S) with S >= T, e.g. queries @ keys^T of shape (B, n_heads, T, T); query i sees keys
    j <= i + (S - T). scale: a positive number, usually 1 / sqrt(head_dim). Returns weights of the same
    shape, 0 on the masked entries; the same as ``softmax(masked_fill(scores * scale, mask, -inf))``.
    """
    if scores.ndim < 2:
        raise ValueError(
            f"causal_softmax: scores must have at least 2 dimensions (..., T, S), got shape {scores.shape}"
        )
    if scores.shape[-1] < scores.shape[-2]:
        raise ValueError(
            f"causal_softmax: scores of shape {scores.shape} have fewer keys ({scores.shape[-1]}) "
            f"than queries ({scores.shape[-2]}): every query must see at least itself"
        )
    scale = float(scale)
    if not scale > 0 or math.isinf(scale):
        raise ValueError(f"causal_softmax: scale must be a positive finite number, got {scale}")
    return CausalSoftmax(scale)(scores)


def masked_softmax(scores: Tensor, mask: Tensor | Array | None, scale: float = 1.0, causal: bool = False) -> Tensor:
    """softmax(scale * scores) over the last axis, attending only where ``mask`` is True (and, with
    ``causal``, to keys j <= i + (S - T) as causal_softmax). For attention with padding.

    scores: (..., T, S); mask: a boolean array (or Tensor) broadcastable to (..., T, S), True = attend,
    e.g. ``attention_mask[:, None, None, :] == 1`` for a (B, S) padding mask; None = no mask. Weights are
    exactly 0 where masked, and a row with nothing to attend to gets all-zero weights.
    """
    from tinygrad_llm.functional._common import raw

    if scores.ndim < 2:
        raise ValueError(f"masked_softmax: scores must have at least 2 dimensions (..., T, S), got {scores.shape}")
    scale = float(scale)
    if not scale > 0 or math.isinf(scale):
        raise ValueError(f"masked_softmax: scale must be a positive finite number, got {scale}")
    xp = backend.get_array_module(scores.data)
    n_queries, n_keys = scores.shape[-2:]
    keep = None
    if mask is not None:
        keep = raw(mask, xp).astype(bool)
        try:
            np.broadcast_shapes(keep.shape, scores.shape)
        except ValueError:
            raise ValueError(
                f"masked_softmax: mask of shape {keep.shape} does not broadcast to the scores' {scores.shape}"
            ) from None
    if causal:
        if n_keys < n_queries:
            raise ValueError(f"masked_softmax: causal scores of shape {scores.shape} have fewer keys than queries")
        if keep is None:
            return CausalSoftmax(scale)(scores)  # the kernel path
        keep = keep & (xp.arange(n_keys)[None, :] <= xp.arange(n_queries)[:, None] + (n_keys - n_queries))
    if keep is None:
        return softmax(scores * scale if scale != 1.0 else scores)
    return MaskedSoftmax(keep, scale)(scores)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax(axis)(x)


def logsigmoid(x: Tensor) -> Tensor:
    """log(sigmoid(x)) elementwise, stable at both ends (torch.nn.functional.logsigmoid)."""
    return LogSigmoid()(x)


def gelu(x: Tensor, approximate: str = "tanh") -> Tensor:
    """GELU. approximate="tanh" (the default): GPT-2's tanh approximation ("gelu_new" in Hugging Face);
    "none": the exact x Phi(x) of BERT ("gelu" in Hugging Face, torch's default)."""
    if approximate == "tanh":
        return GELUFunction()(x)
    if approximate == "none":
        return GELUErf()(x)
    raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")


def dropout(x: Tensor, p: float = 0.5, training: bool = True, generator: Any = None) -> Tensor:
    """Inverted dropout; the identity when not training or p == 0. ``generator`` defaults to the
    device's seeded generator (``tinygrad_llm.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return DropoutFunction(p, generator or backend.get_generator(x.device))(x)
