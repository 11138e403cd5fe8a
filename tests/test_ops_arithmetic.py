"""Property tests of the arithmetic operations, matmul and the reductions (see opcheck.py for what
``check`` asserts), and of gradcheck itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opcheck import arrays, axes_of, broadcastable, check, shapes

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm import functional as F

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
    check(lambda t: 2.0**t, lambda a: 2.0**a, x)
    check(lambda t: -t, np.negative, x)


@given(st.data(), shapes(), st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5]))
def test_pow(data, shape, exponent):
    positive_only = not float(exponent).is_integer()
    x = data.draw(arrays(shape, high=2.0, away_from_zero=0.5))
    if positive_only:
        x = np.abs(x)
    check(lambda t: t**exponent, lambda a: a**exponent, x)


CAST_DIFFERENCES = {np.float32: dict(eps=1e-2, atol=1e-4, rtol=1e-4)}  # float32 rounding / (2 eps) < atol


@given(st.data(), shapes(), st.sampled_from([np.float32, np.float16]))
def test_cast(data, shape, low):
    """cast/astype: forward is NumPy's astype; backward hands the gradient back unchanged in the input's
    dtype (d cast(x)/dx = 1), in both directions; finite differences through a round trip to float32
    agree within float32's precision."""
    x = data.draw(arrays(shape))
    y = Tensor(x).astype(low)
    assert y.dtype == low
    np.testing.assert_array_equal(y.numpy(), x.astype(low))

    rng = np.random.default_rng(len(shape))
    r = rng.standard_normal(shape).astype(low)
    t = Tensor(x, requires_grad=True)
    (F.cast(t, low) * Tensor(r)).sum().backward()
    assert t.grad.dtype == np.float64
    np.testing.assert_array_equal(t.grad, r.astype(np.float64))

    t_low = Tensor(x.astype(low), requires_grad=True)
    (t_low.astype(np.float64) * Tensor(r.astype(np.float64))).sum().backward()
    assert t_low.grad.dtype == low
    np.testing.assert_array_equal(t_low.grad, r)

    if low in CAST_DIFFERENCES:
        assert tl.gradcheck(
            lambda v: v.astype(low).astype(np.float64) * 1.5, [Tensor(x, requires_grad=True)], **CAST_DIFFERENCES[low]
        )


def test_cast_to_the_same_dtype_records_nothing_and_to_integers_is_not_differentiable():
    x = Tensor(np.array([1.7, -2.2]), requires_grad=True)
    assert x.astype(np.float64) is x
    ids = x.astype(np.int64)
    assert ids.dtype == np.int64 and not ids.requires_grad and ids.creator is None
    np.testing.assert_array_equal(ids.numpy(), [1, -2])


def test_pow_zero_exponent_has_zero_gradient_at_zero():
    x = Tensor(np.array([0.0, 2.0, -1.0]), requires_grad=True)
    (x**0).sum().backward()
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
