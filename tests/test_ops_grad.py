"""Property tests for every differentiable operation.

For each operation Hypothesis draws shapes (size-0, size-1 and broadcast axes included), axes, layouts
(contiguous or a transposed, non-contiguous view) and values, then checks three things:

1. the float64 forward equals a plain NumPy reference written here, independently of the library;
2. the float32 forward stays float32 and equals the reference (computed in float64 from the same
   float32 inputs) within FLOAT32 below;
3. ``tinygrad_llm.gradcheck`` (float64 central differences, default tolerances) accepts the backward.

Values are kept where finite differences are meaningful (log/sqrt/div inputs away from 0, max without
ties, relu away from its kink); tolerances are never widened to make a case pass.
"""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import Tensor, kernels

FLOAT64 = dict(rtol=1e-10, atol=1e-12)  # the same math in the same precision: only rounding differs
FLOAT32 = dict(rtol=2e-5, atol=2e-5)  # a few float32 ulps, accumulated over at most ~64 terms
KERNEL_MODES = ("auto", "numpy")  # compiled kernels where available, and the NumPy reference


# ---- strategies --------------------------------------------------------------------------------------

def shapes(min_dims=0, max_dims=3, min_side=0, max_side=4):
    """Array shapes with small sides, size-0 and size-1 axes included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable(num_shapes=2, min_dims=0, max_dims=3, max_side=4):
    """Shapes that broadcast together (hypothesis puts 1s and missing leading axes in)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             min_side=0, max_side=max_side).map(lambda b: b.input_shapes)


@st.composite
def arrays(draw, shape, low=-2.0, high=2.0, away_from_zero=None, distinct=False):
    """A float64 array of ``shape``: uniform in [low, high], or with |x| >= away_from_zero and a random
    sign, or distinct values at least 0.05 apart (for max: no ties within finite differences).
    Half the time the array is a transposed view (non-contiguous), as model code produces."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    transposed = draw(st.booleans()) and len(shape) >= 2
    base_shape = tuple(reversed(shape)) if transposed else tuple(shape)
    n = math.prod(base_shape)
    if distinct:
        values = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.02, 0.02, n)
    elif away_from_zero is not None:
        values = rng.uniform(away_from_zero, high, n) * rng.choice([-1.0, 1.0], n)
    else:
        values = rng.uniform(low, high, n)
    a = values.reshape(base_shape)
    return a.T if transposed else a


def axes_of(ndim):
    """None, an int (maybe negative) or a tuple of distinct axes of an ndim-dimensional array."""
    if ndim == 0:
        return st.sampled_from([None, ()])
    single = st.integers(-ndim, ndim - 1)
    many = st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).flatmap(
        lambda axes: st.tuples(*[st.sampled_from([a, a - ndim]) for a in axes]))  # negatives in tuples too
    return st.one_of(st.none(), single, many)


def check(op, reference, *inputs, float32=True, kernel_modes=("auto",)):
    """op on Tensors vs reference on float64 arrays, in float64 and float32; then gradcheck.

    ``kernel_modes=KERNEL_MODES`` repeats it all with the compiled kernels and with the NumPy reference."""
    for mode in kernel_modes:
        with kernels.use(mode):
            _check(op, reference, inputs, float32)


def _check(op, reference, inputs, float32):
    want = reference(*inputs)
    got = op(*[Tensor(a) for a in inputs])
    assert got.dtype == np.float64
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.numpy(), want, **FLOAT64)
    if float32:
        inputs32 = [a.astype(np.float32) for a in inputs]
        got32 = op(*[Tensor(a) for a in inputs32])
        assert got32.dtype == np.float32
        np.testing.assert_allclose(got32.numpy(), reference(*[a.astype(np.float64) for a in inputs32]), **FLOAT32)
    assert tl.gradcheck(op, [Tensor(a, requires_grad=True) for a in inputs])


# ---- elementwise arithmetic ----------------------------------------------------------------------------

@given(st.data(), broadcastable(2))
def test_add_sub_mul_broadcast(data, pair):
    a = data.draw(arrays(pair[0]))
    b = data.draw(arrays(pair[1]))
    check(lambda x, y: x + y, np.add, a, b)
    check(lambda x, y: x - y, np.subtract, a, b)
    check(lambda x, y: x * y, np.multiply, a, b)


@given(st.data(), broadcastable(2))
def test_div_broadcast(data, pair):
    a = data.draw(arrays(pair[0]))
    b = data.draw(arrays(pair[1], high=2.0, away_from_zero=0.5))
    check(lambda x, y: x / y, np.divide, a, b)


@given(st.data(), shapes(), st.floats(-3, 3).filter(lambda c: abs(c) > 0.1))
def test_python_scalars_both_sides(data, shape, c):
    x = data.draw(arrays(shape, away_from_zero=0.5))
    check(lambda t: t + c, lambda a: a + c, x)
    check(lambda t: c - t, lambda a: c - a, x)
    check(lambda t: c * t, lambda a: c * a, x)
    check(lambda t: t / c, lambda a: a / c, x)
    check(lambda t: c / t, lambda a: c / a, x)
    check(lambda t: 2.0 ** t, lambda a: 2.0 ** a, x)
    check(lambda t: -t, np.negative, x)


@given(st.data(), shapes(), st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5]))
def test_pow(data, shape, exponent):
    positive_only = not float(exponent).is_integer()
    x = data.draw(arrays(shape, high=2.0, away_from_zero=0.5))
    if positive_only:
        x = np.abs(x)
    check(lambda t: t ** exponent, lambda a: a ** exponent, x)


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    x = Tensor(np.array([0.0, 2.0, -1.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])  # not 0 * 0^-1 = nan


@given(st.data(), shapes())
def test_exp_tanh(data, shape):
    x = data.draw(arrays(shape, -3, 3))
    check(lambda t: t.exp(), np.exp, x)
    check(lambda t: t.tanh(), np.tanh, x)
    check(F.tanh, np.tanh, x)


@given(st.data(), shapes())
def test_log_sqrt(data, shape):
    x = np.abs(data.draw(arrays(shape, high=3.0, away_from_zero=0.3)))
    check(lambda t: t.log(), np.log, x)
    check(lambda t: t.sqrt(), np.sqrt, x)


@given(st.data(), shapes())
def test_relu(data, shape):
    x = data.draw(arrays(shape, high=2.0, away_from_zero=0.1))  # away from the kink at 0
    check(lambda t: t.relu(), lambda a: np.maximum(a, 0), x)
    check(F.relu, lambda a: np.maximum(a, 0), x)


# ---- matmul ------------------------------------------------------------------------------------------

@st.composite
def matmul_shapes(draw):
    """(a_shape, b_shape): 1-D x 1-D, 1-D x N-D, N-D x 1-D and batched with broadcast batch axes."""
    n, k, m = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    batch_a, batch_b = draw(broadcastable(2, max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["vec-vec", "vec-mat", "mat-vec", "mat-mat"]))
    a = (k,) if kind.startswith("vec") else (*batch_a, n, k)
    b = (k,) if kind.endswith("-vec") else (*batch_b, k, m)
    return a, b


@given(st.data(), matmul_shapes())
def test_matmul(data, ab):
    a = data.draw(arrays(ab[0]))
    b = data.draw(arrays(ab[1]))
    check(lambda x, y: x @ y, np.matmul, a, b)
    check(F.matmul, np.matmul, a, b)


# ---- reductions --------------------------------------------------------------------------------------

@given(st.data(), shapes(), st.booleans())
def test_sum_mean(data, shape, keepdims):
    axis = data.draw(axes_of(len(shape)))
    x = data.draw(arrays(shape))
    check(lambda t: t.sum(axis=axis, keepdims=keepdims), lambda a: a.sum(axis=axis, keepdims=keepdims), x)
    reduced = math.prod(shape[a] for a in F._common.normalize_axes(axis, len(shape)))
    if reduced > 0:  # the mean of nothing is NaN, tested below
        check(lambda t: t.mean(axis=axis, keepdims=keepdims), lambda a: a.mean(axis=axis, keepdims=keepdims), x)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_mean_of_empty_axis_is_nan_with_empty_gradient():
    x = Tensor(np.zeros((0, 3)), requires_grad=True)
    y = x.mean(axis=0)
    assert np.isnan(y.numpy()).all() and y.shape == (3,)
    y.sum().backward()
    assert x.grad.shape == (0, 3)


@given(st.data(), shapes(min_side=1), st.booleans())
def test_max(data, shape, keepdims):
    axis = data.draw(axes_of(len(shape)))
    x = data.draw(arrays(shape, distinct=True))
    check(lambda t: t.max(axis=axis, keepdims=keepdims), lambda a: a.max(axis=axis, keepdims=keepdims), x)


def test_max_ties_share_the_gradient():
    x = Tensor(np.array([1.0, 3.0, 3.0, 2.0]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.5, 0.5, 0.0])


# ---- shape operations --------------------------------------------------------------------------------

@given(st.data(), shapes(max_dims=4))
def test_reshape(data, shape):
    x = data.draw(arrays(shape))
    size = math.prod(shape)
    target = data.draw(st.one_of(
        st.permutations(shape).map(tuple),
        st.just((-1,)),
        st.just((size, 1)),
        st.just((1, -1)) if size else st.just((1, 0)),
    ))
    check(lambda t: t.reshape(target), lambda a: a.reshape(target), x)
    check(lambda t: t.reshape(*target), lambda a: a.reshape(target), x)


@given(st.data(), shapes(max_dims=4))
def test_transpose_T_swapaxes(data, shape):
    x = data.draw(arrays(shape))
    ndim = len(shape)
    perm = tuple(data.draw(st.permutations(range(ndim))))
    check(lambda t: t.transpose(perm), lambda a: a.transpose(perm), x)
    check(lambda t: t.transpose(), lambda a: a.transpose(), x)
    check(lambda t: t.T, lambda a: a.T, x)
    if ndim:
        i, j = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
        check(lambda t: t.swapaxes(i, j), lambda a: a.swapaxes(i, j), x)


@st.composite
def basic_keys(draw, shape):
    """Ints, slices (steps and negatives), None and Ellipsis, for an array of ``shape``."""
    items = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "all"] if n else ["slice", "all"]))
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-n - 2, n + 2)
            step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
            items.append(slice(draw(bound), draw(bound), step))
        else:
            items.append(slice(None))
    if items and draw(st.booleans()):  # an Ellipsis standing for a run of axes
        start = draw(st.integers(0, len(items)))
        stop = draw(st.integers(start, len(items)))
        items = items[:start] + [Ellipsis] + items[stop:]
    else:
        items = items[:draw(st.integers(0, len(items)))]  # trailing axes left out
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return tuple(items) if len(items) != 1 or draw(st.booleans()) else items[0]


@given(st.data(), shapes(max_dims=3))
def test_getitem_basic(data, shape):
    x = data.draw(arrays(shape))
    key = data.draw(basic_keys(shape))
    check(lambda t: t[key], lambda a: a[key], x)


@given(st.data(), shapes(min_dims=1, max_dims=3, min_side=1))
def test_getitem_integer_array_with_repeats_scatter_adds(data, shape):
    x = data.draw(arrays(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    ids = np.array(data.draw(st.lists(st.integers(-n, n - 1), max_size=6)), dtype=np.int64)
    key = (slice(None),) * axis + (ids,)
    check(lambda t: t[key], lambda a: a[key], x)
    as_list = (slice(None),) * axis + (ids.tolist(),)  # lists and int Tensors work as indices too
    check(lambda t: t[as_list], lambda a: a[key], x)
    check(lambda t: t[(slice(None),) * axis + (Tensor(ids),)], lambda a: a[key], x)
    if len(shape) >= 2:  # two index arrays, broadcast together, picking (i, j) pairs with repeats
        other = np.array([data.draw(st.integers(-shape[1], shape[1] - 1)) for _ in ids], dtype=np.int64)
        pair = (ids % shape[0] if axis else ids, other)
        check(lambda t: t[pair], lambda a: a[pair], x)


def test_getitem_repeated_ids_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 3.0, 0.0, 1.0])


@given(st.data(), shapes(min_dims=1, max_dims=3))
def test_getitem_boolean_mask(data, shape):
    x = data.draw(arrays(shape))
    k = data.draw(st.integers(1, len(shape)))
    mask = np.random.default_rng(data.draw(st.integers(0, 2**16))).random(shape[:k]) < 0.5
    check(lambda t: t[mask], lambda a: a[mask], x)
    check(lambda t: t[Tensor(mask)], lambda a: a[mask], x)


@given(st.data(), shapes(min_dims=1, max_dims=3), st.lists(st.integers(0, 3), min_size=1, max_size=3))
def test_concatenate(data, shape, lengths):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for n in lengths:
        s = list(shape)
        s[axis] = n
        pieces.append(data.draw(arrays(tuple(s))))
    check(lambda *ts: F.concatenate(ts, axis=axis), lambda *a: np.concatenate(a, axis=axis), *pieces)


@given(st.data(), shapes(max_dims=3), st.integers(1, 3))
def test_stack(data, shape, count):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    pieces = [data.draw(arrays(shape)) for _ in range(count)]
    check(lambda *ts: F.stack(ts, axis=axis), lambda *a: np.stack(a, axis=axis), *pieces)


@given(st.data(), shapes(min_dims=1, max_dims=3))
def test_split(data, shape):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    x = data.draw(arrays(shape))
    divisors = [d for d in range(1, 5) if n % d == 0]
    how = data.draw(st.sampled_from(divisors) | st.lists(st.integers(0, n), max_size=3).map(sorted))
    want = np.split(x, how, axis=axis)
    got = F.split(Tensor(x), how, axis=axis)
    assert len(got) == len(want)
    for i in range(len(want)):
        check(lambda t: F.split(t, how, axis=axis)[i], lambda a: np.split(a, how, axis=axis)[i], x)
    # all pieces together: each element of x reaches exactly one piece
    check(lambda t: F.concatenate(F.split(t, how, axis=axis), axis=axis), lambda a: a, x)


@given(st.data(), broadcastable(3))
def test_where(data, three):
    cond = np.random.default_rng(data.draw(st.integers(0, 2**16))).random(three[0]) < 0.5
    a = data.draw(arrays(three[1]))
    b = data.draw(arrays(three[2]))
    check(lambda x, y: F.where(cond, x, y), lambda x, y: np.where(cond, x, y), a, b)
    check(lambda x: F.where(cond, x, 0.5), lambda x: np.where(cond, x, 0.5), a)


@given(st.data(), shapes(max_dims=3), st.sampled_from([0.0, -1e9, -np.inf, 2.5]))
def test_masked_fill(data, shape, value):
    x = data.draw(arrays(shape))
    drop = data.draw(st.integers(0, len(shape)))  # the mask may miss leading axes and have 1s
    mask_shape = tuple(n if data.draw(st.booleans()) else 1 for n in shape[drop:])
    mask = np.random.default_rng(data.draw(st.integers(0, 2**16))).random(mask_shape) < 0.5
    reference = lambda a: np.where(mask, value, a)  # noqa: E731
    if abs(value) < 10:
        check(lambda t: t.masked_fill(mask, value), reference, x)
    else:  # -1e9/-inf would swamp finite differences of sum(out * r): check exp(out), as attention uses it
        np.testing.assert_array_equal(Tensor(x).masked_fill(mask, value).numpy(), reference(x))
        check(lambda t: t.masked_fill(mask, value).exp(), lambda a: np.exp(reference(a)), x)


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
    check(lambda t: F.softmax(t, axis=axis), lambda a: np.exp(stable_log_softmax(a, axis)), x,
          kernel_modes=KERNEL_MODES)
    check(lambda t: F.log_softmax(t, axis=axis), lambda a: stable_log_softmax(a, axis), x, kernel_modes=KERNEL_MODES)
    check(lambda t: t.softmax(axis), lambda a: np.exp(stable_log_softmax(a, axis)), x)


@given(st.data(), shape_and_axis(), st.sampled_from(KERNEL_MODES))
def test_softmax_log_softmax_extreme_logits(data, shape_axis, mode):
    """Logits of magnitude 1e4: naive exp overflows; ours must be finite and equal the stable reference."""
    shape, axis = shape_axis
    x = data.draw(arrays(shape, high=1e4, away_from_zero=1e3))
    cases = ((F.softmax, lambda a: np.exp(stable_log_softmax(a, axis))),
             (F.log_softmax, lambda a: stable_log_softmax(a, axis)))
    with kernels.use(mode):
        for (op, reference), dtype in itertools.product(cases, (np.float64, np.float32)):
            t = Tensor(x.astype(dtype), requires_grad=True)
            y = op(t, axis=axis)
            assert np.isfinite(y.numpy()).all()
            want = reference(x.astype(dtype).astype(np.float64))
            np.testing.assert_allclose(y.numpy(), want, **(FLOAT64 if dtype == np.float64 else FLOAT32))
            (y * Tensor(np.ones(shape, dtype))).sum().backward()
            assert np.isfinite(t.grad).all()
        for op, _ in cases:
            assert tl.gradcheck(lambda t: op(t, axis=axis), [Tensor(x, requires_grad=True)])


def gelu_reference(a):
    return 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a ** 3)))


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
    with kernels.use(mode):
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


@pytest.mark.parametrize("fn", [np.exp, np.sin])
def test_gradcheck_rejects_a_wrong_backward(fn):
    """gradcheck itself must fail on a wrong gradient (else every test above proves nothing)."""
    class Wrong(tl.Function):
        def forward(self, x):
            return np.exp(x)

        def backward(self, gy):
            return gy * fn(np.ones_like(gy))  # not e^x

    with pytest.raises(AssertionError, match="input 0"):
        tl.gradcheck(lambda t: Wrong()(t), [Tensor(np.array([0.3, -0.2]), requires_grad=True)])


def test_gradcheck_rejects_nan_gradient_and_checks_large_inputs_by_direction():
    class NanGrad(tl.Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy * np.nan

    with pytest.raises(AssertionError):
        tl.gradcheck(lambda t: NanGrad()(t), [Tensor(np.ones(3), requires_grad=True)])
    big = Tensor(np.random.default_rng(0).standard_normal((30, 30)), requires_grad=True)  # > 512 elements
    assert tl.gradcheck(lambda t: (t * t).sum(axis=0), [big])

    class Off(tl.Function):
        def forward(self, x):
            return x * x

        def backward(self, gy):
            return gy * 2.01 * self.inputs[0].data

    x = Tensor(np.random.default_rng(1).standard_normal((30, 30)), requires_grad=True)
    with pytest.raises(AssertionError, match="direction"):
        tl.gradcheck(lambda t: Off()(t), [x])
