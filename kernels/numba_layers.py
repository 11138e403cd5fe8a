"""Numba kernels for layer norm, GELU (tanh and exact erf), the embedding backward and the AdamW update.

The references they replace: ``LayerNormFunction`` and ``EmbeddingFunction`` in ``functional/layers.py``,
``GELUFunction`` in ``functional/activation.py``, ``adamw_update_`` in ``functional/optim_update.py``.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_llm.kernels.numba_math import FAST, exp_row, kernel, n_blocks

# exp_row is inlined into _gelu (numba_math.HELPER), never called: see numba_softmax. (Numba's cache keys on
# this file only: an edit here is also what makes an existing cache of these kernels rebuild.)

# ---- layer norm --------------------------------------------------------------------------------------


@kernel(fastmath=FAST, cache=True)
def _layer_norm_rows(x, weight, bias, eps, y, mean, rstd):
    """y = (x - mean) * rstd * weight + bias per row; mean and rstd (1/sqrt(var + eps)) saved per row.

    Two passes over each row (mean, then the centred variance: no cancellation), summed in float64."""
    rows, width = x.shape
    has_weight, has_bias = weight.shape[0] == width, bias.shape[0] == width
    for r in range(rows):
        xr, yr = x[r], y[r]
        total = 0.0
        for j in range(width):
            total += xr[j]
        mu = total / width
        sq = 0.0
        for j in range(width):
            d = xr[j] - mu
            sq += d * d
        rs = 1.0 / math.sqrt(sq / width + eps)
        mean[r], rstd[r] = mu, rs
        m, s = mean[r], rstd[r]  # in x's dtype: the loop below runs in float32 for float32
        if has_weight and has_bias:
            for j in range(width):
                yr[j] = (xr[j] - m) * s * weight[j] + bias[j]
        elif has_weight:
            for j in range(width):
                yr[j] = (xr[j] - m) * s * weight[j]
        else:
            for j in range(width):
                yr[j] = (xr[j] - m) * s
            if has_bias:
                for j in range(width):
                    yr[j] += bias[j]


@kernel(fastmath=FAST, cache=True)
def _layer_norm_backward_rows(gy, x, weight, mean, rstd, gx, gw_parts, gb_parts, blocks):
    """One pass over (gy, x): gx per row, and each block's partial sums of gy * xhat and gy (float64).

    xhat = (x - mean) rstd,  gxhat = gy * w  =>  gx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat))."""
    rows, width = x.shape
    has_weight = weight.shape[0] == width
    for b in range(blocks):
        gw, gb = gw_parts[b], gb_parts[b]
        coef = np.empty(2, x.dtype)  # the two row means, rounded to x's dtype for the loop below
        for r in range(b * rows // blocks, (b + 1) * rows // blocks):
            xr, gyr, gxr = x[r], gy[r], gx[r]
            m, s = mean[r], rstd[r]
            sum_g = 0.0
            sum_gx = 0.0
            for j in range(width):
                xhat = (xr[j] - m) * s
                g = gyr[j] * weight[j] if has_weight else gyr[j]
                sum_g += g
                sum_gx += g * xhat
                gw[j] += gyr[j] * xhat
                gb[j] += gyr[j]
            coef[0], coef[1] = sum_g / width, sum_gx / width
            a, c = coef[0], coef[1]
            for j in range(width):
                xhat = (xr[j] - m) * s
                g = gyr[j] * weight[j] if has_weight else gyr[j]
                gxr[j] = s * (g - a - xhat * c)


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd): layer norm over the last axis; weight/bias may be None; mean, rstd are (rows,)."""
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    y = np.empty(x.shape, x.dtype)  # returned arrays own their memory (no .base): no copy downstream
    mean = np.empty(x2.shape[0], x.dtype)
    rstd = np.empty(x2.shape[0], x.dtype)
    if x2.size:
        none = np.empty(0, x.dtype)
        _layer_norm_rows(
            x2,
            none if weight is None else np.ascontiguousarray(weight),
            none if bias is None else np.ascontiguousarray(bias),
            float(eps),
            y.reshape(x2.shape),
            mean,
            rstd,
        )
    return y, mean, rstd


def layer_norm_backward(gy, x, weight, mean, rstd):
    """(gx, gweight, gbias) from the output gradient and what layer_norm_forward saved (x, mean, rstd)."""
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    gy2 = np.ascontiguousarray(gy).reshape(x2.shape)
    gx = np.empty(x.shape, x.dtype)
    blocks = n_blocks(len(x2))
    gw_parts = np.zeros((blocks, x2.shape[1]))
    gb_parts = np.zeros((blocks, x2.shape[1]))
    if x2.size:
        _layer_norm_backward_rows(
            gy2,
            x2,
            np.empty(0, x.dtype) if weight is None else np.ascontiguousarray(weight),
            mean,
            rstd,
            gx.reshape(x2.shape),
            gw_parts,
            gb_parts,
            blocks,
        )
    return gx, gw_parts.sum(axis=0).astype(x.dtype), gb_parts.sum(axis=0).astype(x.dtype)


# ---- GELU (tanh approximation) -----------------------------------------------------------------------

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715
CHUNK = 2048  # elements per piece of work: the scratch rows stay in L1


@kernel(fastmath=FAST, cache=True)
def _gelu(x, y, gy, backward, c, a, zero, one):
    """y = x s with s = sigmoid(2u) = 0.5 (1 + tanh u), u = c (x + a x^3); or with ``backward`` the
    derivative times gy (x, y, gy flat). sigmoid avoids the cancellation of 1 + tanh u at negative x.

    The constants c, a, zero, one arrive in x's dtype (a float64 constant would turn float32 math into
    float64)."""
    a3 = a + a + a  # not 3 * a: an int times a float32 is float64 in Numba
    two = one + one
    n = x.shape[0]
    for b in range((n + CHUNK - 1) // CHUNK):
        lo, hi = b * CHUNK, min(n, (b + 1) * CHUNK)
        minus_2u = np.empty(hi - lo, x.dtype)
        e = np.empty(hi - lo, x.dtype)
        bits = np.empty(hi - lo, np.int32)
        for j in range(hi - lo):
            v = x[lo + j]
            minus_2u[j] = -two * c * (v + a * v * v * v)
        exp_row(minus_2u, zero, one, e, bits)  # e = exp(-2u)
        if backward:
            for j in range(hi - lo):
                v = x[lo + j]
                s = one / (one + e[j])
                # 1 - s: directly where s < 1/2 (no cancellation there; e may be inf), else as e s (exact)
                one_minus_s = one - s if e[j] > one else e[j] * s
                # d/dx = s + 2 x s (1 - s) c (1 + 3 a x^2)
                y[lo + j] = gy[lo + j] * (s + s * one_minus_s * (two * v * c * (one + a3 * v * v)))
        else:
            for j in range(hi - lo):
                y[lo + j] = x[lo + j] / (one + e[j])


def _gelu_constants(dtype):
    t = dtype.type
    return t(GELU_C), t(GELU_A), t(0), t(1)


def gelu_forward(x):
    x1 = np.ascontiguousarray(x).reshape(-1)
    y = np.empty(x.shape, x.dtype)
    _gelu(x1, y.reshape(-1), x1, False, *_gelu_constants(x.dtype))
    return y


def gelu_backward(x, gy):
    x1 = np.ascontiguousarray(x).reshape(-1)
    gx = np.empty(x.shape, x.dtype)
    _gelu(x1, gx.reshape(-1), np.ascontiguousarray(gy).reshape(-1), True, *_gelu_constants(x.dtype))
    return gx


# ---- exact GELU (BERT's): x Phi(x) -----------------------------------------------------------------------


@kernel(cache=True)
def _gelu_erf(x, out, gy, backward):
    """out = x Phi(x), Phi(x) = 0.5 erfc(-x / sqrt 2); or with ``backward`` gy (Phi(x) + x phi(x)) (flat).

    erfc in float64 (libm's), as the NumPy reference's normal_cdf: exact to a few ulps at every x, its tiny
    tail included (1 - erf would cancel); the result is rounded to x's dtype."""
    n = x.shape[0]
    for i in range(n):
        v = float(x[i])
        cdf = 0.5 * math.erfc(-v * 0.7071067811865476)
        if backward:
            pdf = math.exp(-0.5 * v * v) * 0.3989422804014327  # 1 / sqrt(2 pi)
            out[i] = gy[i] * (cdf + v * pdf)
        else:
            out[i] = v * cdf


def gelu_erf_forward(x):
    x1 = np.ascontiguousarray(x).reshape(-1)
    y = np.empty(x.shape, x.dtype)
    _gelu_erf(x1, y.reshape(-1), x1, False)
    return y


def gelu_erf_backward(x, gy):
    x1 = np.ascontiguousarray(x).reshape(-1)
    gx = np.empty(x.shape, x.dtype)
    _gelu_erf(x1, gx.reshape(-1), np.ascontiguousarray(gy, dtype=x.dtype).reshape(-1), True)
    return gx


# ---- embedding backward: scatter-add of rows ------------------------------------------------------------


@kernel(cache=True)
def _scatter_add_rows(ids, gy, gw):
    """gw[ids[i]] += gy[i], rows in order (a repeated id sums its rows in the reference's order)."""
    for i in range(ids.shape[0]):
        src, dst = gy[i], gw[ids[i]]
        for j in range(gy.shape[1]):
            dst[j] += src[j]


def embedding_backward(ids, gy, num_embeddings):
    """The (num_embeddings, dim) gradient of weight[ids] given gy of shape ids.shape + (dim,)."""
    dim = gy.shape[-1]
    gw = np.zeros((num_embeddings, dim), gy.dtype)
    gy2 = np.ascontiguousarray(gy).reshape(-1, dim)
    if gy2.size:
        flat_ids = np.ascontiguousarray(ids).reshape(-1).astype(np.int64, copy=False)
        _scatter_add_rows(flat_ids, gy2, gw)
    return gw


# ---- AdamW, in place ---------------------------------------------------------------------------------


@kernel(cache=True)  # no fastmath: the same roundings, in the same order, as the reference
def _adamw(param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size):
    n = param.shape[0]
    for b in range((n + CHUNK - 1) // CHUNK):
        lo, hi = b * CHUNK, min(n, (b + 1) * CHUNK)
        # the chunk's slices, indexed from 0: LLVM vectorises this loop (indexed from lo it did not: 5x slower)
        p_, g_, m_, v_ = param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi]
        for i in range(hi - lo):
            g = g_[i]
            p = p_[i] * decay  # decoupled weight decay: p *= 1 - lr wd
            m = m_[i] + beta1_c * (g - m_[i])  # lerp(m, g, 1 - beta1), as torch
            v = v_[i] * beta2 + beta2_c * g * g  # as torch.addcmul: (value * g) * g
            m_[i] = m
            v_[i] = v
            p_[i] = p + neg_step_size * (m / (math.sqrt(v) / bc2_sqrt + eps))


def adamw_update_(param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size):
    """The AdamW step in place on flat views; scalars arrive precomputed in the arrays' dtype.

    Returns None (the reference must run) when an array is not contiguous: a copy would not be in place."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if not all(a.flags.c_contiguous for a in arrays) or len({a.shape for a in arrays}) != 1:
        return None
    _adamw(*(a.reshape(-1) for a in arrays), decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size)
    return param
