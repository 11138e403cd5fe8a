"""Numba kernels for softmax over the last axis (plain, or scaled and causally masked) and cross-entropy.

The references they replace are ``Softmax``/``CausalSoftmax`` in ``functional/activation.py`` and
``CrossEntropy`` in ``functional/loss.py``. Each row is handled by one thread in a few passes that stay in
the L1/L2 cache; NumPy instead makes a full pass over memory (and a temporary array) per operation.

Causal rows: an input of shape (..., T, S) holds T queries that are the last T positions of S keys, so
query i sees keys j <= i + (S - T) (with S == T: the usual lower triangle). The masked part is never read;
its output is 0.
"""

from __future__ import annotations

import math

import numpy as np

from tinygrad_llm.kernels.numba_math import FAST, ONE, ZERO, exp_row, kernel, row_max

# row_max and exp_row are inlined into these kernels (numba_math.HELPER), never called: a called helper's bits
# depended on whether this process compiled the kernel or loaded it from Numba's cache. (Numba's cache keys on
# this file only: an edit here is also what makes an existing cache of these kernels rebuild.)


@kernel(fastmath=FAST, cache=True)
def _softmax_rows(x, y, scale, n_queries, causal):
    """y[r, :n] = softmax(scale * x[r, :n]) with n = S, or the causal limit; y[r, n:] = 0."""
    rows, width = x.shape
    bits = np.empty(width, np.int32)
    for r in range(rows):
        n = r % n_queries + width - n_queries + 1 if causal else width
        xr, yr = x[r], y[r]
        m = row_max(xr, n)
        total = exp_row(xr[:n], m, scale, yr[:n], bits)  # scale > 0, so max(scale x) = scale max(x)
        inv = ONE / total
        for j in range(n):
            yr[j] *= inv
        for j in range(n, width):
            yr[j] = 0


@kernel(fastmath=FAST, cache=True)
def _softmax_backward_rows(y, gy, gx, scale, n_queries, causal):
    """gx = scale * y * (gy - sum(gy * y)) per row; masked entries (y == 0 there) get 0."""
    rows, width = y.shape
    for r in range(rows):
        n = r % n_queries + width - n_queries + 1 if causal else width
        yr, gyr, gxr = y[r], gy[r], gx[r]
        dot = ZERO
        for j in range(n):
            dot += gyr[j] * yr[j]
        for j in range(n):
            gxr[j] = scale * yr[j] * (gyr[j] - dot)
        for j in range(n, width):
            gxr[j] = 0


def _rows(a):
    """a as a C-contiguous (rows, last) array (a view when it already is contiguous)."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def softmax_forward(x, scale=1.0, causal=False):
    """softmax(scale * x) over the last axis, causally masked over the last two when ``causal``."""
    if x.size == 0:
        return np.empty_like(x)
    x2 = _rows(x)
    y = np.empty(x.shape, x.dtype)  # the array returned owns its memory (no .base): no copy downstream
    n_queries = x.shape[-2] if causal else 1
    _softmax_rows(x2, y.reshape(x2.shape), x.dtype.type(scale), n_queries, causal)
    return y


def softmax_backward(y, gy, scale=1.0, causal=False):
    """The gradient of softmax_forward from its output y and the output gradient gy."""
    if y.size == 0:
        return np.empty_like(y)
    y2, gy2 = _rows(y), _rows(gy)
    gx = np.empty(y.shape, y.dtype)
    n_queries = y.shape[-2] if causal else 1
    _softmax_backward_rows(y2, gy2, gx.reshape(y2.shape), y.dtype.type(scale), n_queries, causal)
    return gx


# ---- cross-entropy ------------------------------------------------------------------------------------


@kernel(fastmath=FAST, cache=True)
def _cross_entropy_rows(logits, targets, ignore_index, losses, lse):
    """lse[r] = logsumexp(logits[r]); losses[r] = lse[r] - logits[r, t] (0 where t == ignore_index)."""
    rows, classes = logits.shape
    bits = np.empty(classes, np.int32)
    probs = np.empty(classes, logits.dtype)  # unnormalised; stays in cache, never in memory
    for r in range(rows):
        lr = logits[r]
        m = row_max(lr, classes)
        exp_row(lr, m, ONE, probs, bits)
        total = 0.0  # float64: 50,257 terms
        for j in range(classes):
            total += probs[j]
        lse[r] = m + math.log(total)
        t = targets[r]
        losses[r] = 0 if t == ignore_index else lse[r] - lr[t]


@kernel(fastmath=FAST, cache=True)
def _cross_entropy_backward_rows(logits, lse, targets, row_scale, g):
    """g[r] = row_scale[r] * (softmax(logits[r]) - onehot(targets[r])); rows with scale 0 are 0."""
    rows, classes = logits.shape
    bits = np.empty(classes, np.int32)
    for r in range(rows):
        gr, c = g[r], row_scale[r]
        if c == 0:
            for j in range(classes):
                gr[j] = 0
            continue
        exp_row(logits[r], lse[r], ONE, gr, bits)  # the probabilities, written straight into the gradient
        for j in range(classes):
            gr[j] *= c
        gr[targets[r]] -= c


def cross_entropy_forward(logits, targets, ignore_index):
    """(losses (N,), lse (N,)) for (N, C) logits and (N,) integer targets; ignored rows have loss 0."""
    logits = np.ascontiguousarray(logits)
    losses = np.empty(logits.shape[0], logits.dtype)
    lse = np.empty(logits.shape[0], logits.dtype)
    if logits.shape[0]:
        _cross_entropy_rows(logits, np.ascontiguousarray(targets, dtype=np.int64), ignore_index, losses, lse)
    return losses, lse


def cross_entropy_backward(logits, lse, targets, row_scale):
    """dL/dlogits given each row's weight in the loss (gy / count for 'mean', 0 for ignored rows)."""
    logits = np.ascontiguousarray(logits)
    g = np.empty_like(logits)
    if logits.shape[0]:
        _cross_entropy_backward_rows(
            logits,
            np.ascontiguousarray(lse),
            np.ascontiguousarray(targets, dtype=np.int64),
            np.ascontiguousarray(row_scale, dtype=logits.dtype),
            g,
        )
    return g
