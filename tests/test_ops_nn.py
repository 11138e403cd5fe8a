"""Property tests of the neural-network operations: activations, dropout, layers, cross-entropy, and a
small attention block through many of them (see opcheck.py for what ``check`` asserts)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from opcheck import FLOAT32, FLOAT64, KERNEL_MODES, arrays, check, shapes

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch

# ---- functional: activations ---------------------------------------------------------------------------


def stable_log_softmax(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


@st.composite
def shape_and_axis(draw, min_dims=1, max_dims=3):
    """A shape and one of its axes, that axis at least 1 long (softmax over nothing is undefined)."""
    shape = list(draw(shapes(min_dims=min_dims, max_dims=max_dims)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    shape[axis] = max(shape[axis], 1)
    return tuple(shape), axis


@given(st.data(), shape_and_axis(), st.sampled_from([1.0, 30.0]))
def test_softmax_log_softmax(data, shape_axis, scale):
    shape, axis = shape_axis
    x = data.draw(arrays(shape)) * scale
    check(
        lambda t: F.softmax(t, axis=axis), lambda a: np.exp(stable_log_softmax(a, axis)), x, kernel_modes=KERNEL_MODES
    )
    check(lambda t: F.log_softmax(t, axis=axis), lambda a: stable_log_softmax(a, axis), x, kernel_modes=KERNEL_MODES)
    check(lambda t: t.softmax(axis), lambda a: np.exp(stable_log_softmax(a, axis)), x)


@given(st.data(), shape_and_axis(), st.sampled_from(KERNEL_MODES))
def test_softmax_log_softmax_extreme_logits(data, shape_axis, mode):
    """Logits of magnitude 1e4: naive exp overflows; ours must be finite and equal the stable reference."""
    shape, axis = shape_axis
    x = data.draw(arrays(shape, high=1e4, away_from_zero=1e3))
    cases = (
        (F.softmax, lambda a: np.exp(stable_log_softmax(a, axis))),
        (F.log_softmax, lambda a: stable_log_softmax(a, axis)),
    )
    with dispatch.use(mode):
        for (op, reference), dtype in itertools.product(cases, (np.float64, np.float32)):
            t = Tensor(x.astype(dtype), requires_grad=True)
            y = op(t, axis=axis)
            assert np.isfinite(y.numpy()).all()
            want = reference(x.astype(dtype).astype(np.float64))
            np.testing.assert_allclose(y.numpy(), want, **(FLOAT64 if dtype == np.float64 else FLOAT32))
            (y * Tensor(np.ones(shape, dtype))).sum().backward()
            assert np.isfinite(t.grad).all()
        # Finite differences need outputs of moderate size. log_softmax's are ~1e4 here, and float64 rounding
        # of a sum of such terms, divided by 2 eps, is as large as gradcheck's tolerance: check instead
        # exp(log_softmax(x)), which is O(1) and whose gradient runs through the same LogSoftmax.backward.
        for op in (lambda t: F.softmax(t, axis=axis), lambda t: F.log_softmax(t, axis=axis).exp()):
            assert tl.gradcheck(op, [Tensor(x, requires_grad=True)])


def gelu_reference(a):
    return 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a**3)))


@given(st.data(), shapes())
def test_gelu(data, shape):
    x = data.draw(arrays(shape, -4, 4))
    check(F.gelu, gelu_reference, x, kernel_modes=KERNEL_MODES)


@given(st.data(), shapes(), st.sampled_from([0.1, 0.5, 0.9]), st.integers(0, 2**16))
def test_dropout_seeded(data, shape, p, seed):
    x = data.draw(arrays(shape, high=2.0, away_from_zero=0.5))  # nonzero: a zero output means dropped
    op = lambda t: F.dropout(t, p, generator=np.random.default_rng(seed))  # noqa: E731  same mask each call
    t = Tensor(x, requires_grad=True)
    y = op(t)
    out = y.numpy()
    kept = out != 0
    np.testing.assert_allclose(out, np.where(kept, x / (1 - p), 0.0), **FLOAT64)  # survivors scaled 1/(1-p)
    y.backward(np.ones(shape))
    np.testing.assert_allclose(t.grad, kept / (1 - p), **FLOAT64)  # gradient = mask * scale
    assert tl.gradcheck(op, [Tensor(x, requires_grad=True)])
    # the library's own seeded generator: the same seed gives the same mask
    tl.manual_seed(seed)
    first = F.dropout(Tensor(x), p).numpy()
    tl.manual_seed(seed)
    np.testing.assert_array_equal(F.dropout(Tensor(x), p).numpy(), first)


@given(st.data(), shapes(), st.sampled_from([0.0, 0.3, 1.0]))
def test_dropout_not_training_is_identity(data, shape, p):
    x = data.draw(arrays(shape))
    t = Tensor(x, requires_grad=True)
    y = F.dropout(t, p, training=False)
    np.testing.assert_array_equal(y.numpy(), x)
    y.backward(np.ones(shape))
    np.testing.assert_array_equal(t.grad, np.ones(shape))


def test_dropout_fraction_dropped_matches_p():
    tl.manual_seed(1)
    y = F.dropout(Tensor(np.ones((200, 200))), 0.3).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.01  # 40,000 Bernoulli draws: std 0.0023
    assert set(np.unique(y).round(6)) == {0.0, round(1 / 0.7, 6)}


# ---- functional: layers ------------------------------------------------------------------------------


@given(st.data(), shapes(max_dims=2, max_side=3), st.integers(1, 5), st.integers(1, 4))
def test_embedding_repeated_ids(data, id_shape, n_rows, dim):
    weight = data.draw(arrays((n_rows, dim)))
    ids = np.random.default_rng(data.draw(st.integers(0, 2**16))).integers(0, n_rows, id_shape)
    check(lambda w: F.embedding(ids, w), lambda w: w[ids], weight, kernel_modes=KERNEL_MODES)
    check(lambda w: F.embedding(Tensor(ids), w), lambda w: w[ids], weight)


def test_embedding_gradient_counts_repeats():
    w = Tensor(np.zeros((3, 2)), requires_grad=True)
    F.embedding(np.array([[2, 0], [2, 2]]), w).sum().backward()
    np.testing.assert_array_equal(w.grad, [[1, 1], [0, 0], [3, 3]])


@given(st.data(), shapes(max_dims=2, max_side=3), st.integers(0, 4), st.integers(0, 4), st.booleans())
def test_linear(data, batch, n_in, n_out, with_bias):
    x = data.draw(arrays((*batch, n_in)))
    w = data.draw(arrays((n_out, n_in)))
    if with_bias:
        b = data.draw(arrays((n_out,)))
        check(F.linear, lambda x, w, b: x @ w.T + b, x, w, b)
    else:
        check(F.linear, lambda x, w: x @ w.T, x, w)


def test_linear_bias_gradient_sums_every_row():
    """dL/db adds gy over every row of every batch axis (a mean would pass where the cases drawn above have
    one row, as the derandomized "ci" profile's do)."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    check(F.linear, lambda x, w, b: x @ w.T + b, x, w, b)


def layer_norm_reference(a, w=None, b=None, eps=1e-5):
    mean = a.mean(axis=-1, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (a - mean) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


@given(st.data(), shapes(max_dims=2, max_side=3), st.integers(1, 6), st.booleans(), st.booleans())
def test_layer_norm(data, batch, dim, with_weight, with_bias):
    x = data.draw(arrays((*batch, dim))) * 3 + 1
    params = []
    if with_weight:
        params.append(data.draw(arrays((dim,))))
    if with_bias:
        params.append(data.draw(arrays((dim,))))

    def op(x, *p):
        it = iter(p)
        return F.layer_norm(x, next(it) if with_weight else None, next(it) if with_bias else None)

    def reference(x, *p):
        it = iter(p)
        return layer_norm_reference(x, next(it) if with_weight else None, next(it) if with_bias else None)

    check(op, reference, x, *params, kernel_modes=KERNEL_MODES)


# ---- functional: loss --------------------------------------------------------------------------------


def cross_entropy_reference(logits, targets, ignore_index, reduction):
    c = logits.shape[-1]
    flat, t = logits.reshape(-1, c), targets.reshape(-1)
    valid = t != ignore_index
    logp = stable_log_softmax(flat, -1)
    losses = np.where(valid, -logp[np.arange(len(t)), np.where(valid, t, 0)], 0.0)
    if reduction == "none":
        return losses.reshape(targets.shape)
    return losses.sum() if reduction == "sum" else losses.sum() / valid.sum()


@st.composite
def cross_entropy_cases(draw, scale=3.0):
    batch = draw(shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    n_classes = draw(st.integers(1, 5))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    ignore_index = draw(st.sampled_from([-100, 0, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    targets = rng.integers(0, n_classes, batch)
    targets[rng.random(batch) < 0.3] = ignore_index
    if reduction == "mean" and (targets == ignore_index).all():
        targets.reshape(-1)[0] = (ignore_index + 1) % n_classes if ignore_index >= 0 else 0
        if targets.reshape(-1)[0] == ignore_index:  # one class and it is ignored: make another row count
            ignore_index = -100
    logits = draw(arrays((*batch, n_classes))) * scale
    return logits, targets, ignore_index, reduction


@given(cross_entropy_cases())
def test_cross_entropy(case):
    logits, targets, ignore_index, reduction = case
    op = lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index, reduction=reduction)  # noqa: E731
    check(op, lambda z: cross_entropy_reference(z, targets, ignore_index, reduction), logits, kernel_modes=KERNEL_MODES)


@given(cross_entropy_cases(scale=1e4), st.sampled_from(KERNEL_MODES))
def test_cross_entropy_extreme_logits(case, mode):
    logits, targets, ignore_index, reduction = case
    with dispatch.use(mode):
        _check_cross_entropy_extreme(logits, targets, ignore_index, reduction)


def _check_cross_entropy_extreme(logits, targets, ignore_index, reduction):
    op = lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index, reduction=reduction)  # noqa: E731
    for dtype, tol in ((np.float64, FLOAT64), (np.float32, dict(rtol=2e-5, atol=2e-5 * 1e4))):
        z = Tensor(logits.astype(dtype), requires_grad=True)
        loss = op(z)
        assert np.isfinite(loss.numpy()).all()
        want = cross_entropy_reference(logits.astype(dtype).astype(np.float64), targets, ignore_index, reduction)
        np.testing.assert_allclose(loss.numpy(), want, **tol)  # float32 atol: losses are ~1e4 large
        loss.backward(np.ones(loss.shape, dtype))
        assert np.isfinite(z.grad).all() and z.grad.dtype == dtype
    assert tl.gradcheck(op, [Tensor(logits, requires_grad=True)])


def test_cross_entropy_mean_counts_only_non_ignored():
    logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    loss = F.cross_entropy(Tensor(logits), np.array([0, -100, 1]))
    np.testing.assert_allclose(loss.item(), -(np.log(0.5) + np.log(0.8)) / 2, rtol=1e-12)


def test_cross_entropy_all_ignored_mean_is_nan_with_zero_gradient():
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loss = F.cross_entropy(z, np.array([-100, -100]))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(z.grad, np.zeros((2, 3)))


# ---- composite: a small attention block through many operations -----------------------------------------


@given(st.data(), st.integers(1, 2), st.integers(1, 4), st.sampled_from([2, 4]))
def test_causal_attention_composite(data, batch, seq, dim):
    x = data.draw(arrays((batch, seq, dim)))
    w = data.draw(arrays((3 * dim, dim))) * 0.5
    mask = np.triu(np.ones((seq, seq), dtype=bool), k=1)

    def op(x, w):
        q, k, v = F.split(F.linear(x, w), 3, axis=-1)
        scores = (q @ k.swapaxes(-1, -2)) / math.sqrt(dim)
        return F.softmax(scores.masked_fill(mask, -np.inf), axis=-1) @ v

    def reference(x, w):
        q, k, v = np.split(x @ w.T, 3, axis=-1)
        scores = np.where(mask, -np.inf, q @ k.swapaxes(-1, -2) / math.sqrt(dim))
        return np.exp(stable_log_softmax(scores, -1)) @ v

    # the NumPy reference path: the kernels are checked op by op above, and gradcheck's ~200 forwards
    # per example would mostly time Numba's thread start-up on tiny arrays
    check(op, reference, x, w, kernel_modes=("numpy",))
