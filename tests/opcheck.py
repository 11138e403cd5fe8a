"""What the operation property tests share: Hypothesis strategies for shapes, axes and arrays, and
``check``, which holds an operation to a plain NumPy reference and to finite differences.

For each operation the tests draw shapes (size-0, size-1 and broadcast axes included), axes, layouts
(contiguous or a transposed, non-contiguous view) and values, then ``check`` asserts three things:

1. the float64 forward equals a plain NumPy reference written in the test, independently of the library;
2. the float32 forward stays float32 and equals the reference (computed in float64 from the same
   float32 inputs) within FLOAT32 below;
3. ``tinygrad_llm.gradcheck`` (float64 central differences, default tolerances) accepts the backward.

Values are kept where finite differences are meaningful (log/sqrt/div inputs away from 0, max without
ties, relu away from its kink); tolerances are never widened to make a case pass.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm.kernels import dispatch

FLOAT64 = dict(rtol=1e-10, atol=1e-12)  # the same math in the same precision: only rounding differs
FLOAT32 = dict(rtol=2e-5, atol=2e-5)  # a few float32 ulps, accumulated over at most ~64 terms
KERNEL_MODES = ("auto", "numpy")  # compiled kernels where available, and the NumPy reference


# ---- strategies --------------------------------------------------------------------------------------


def shapes(min_dims=0, max_dims=3, min_side=0, max_side=4):
    """Array shapes with small sides, size-0 and size-1 axes included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable(num_shapes=2, min_dims=0, max_dims=3, max_side=4):
    """Shapes that broadcast together (hypothesis puts 1s and missing leading axes in)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side
    ).map(lambda b: b.input_shapes)


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
        lambda axes: st.tuples(*[st.sampled_from([a, a - ndim]) for a in axes])
    )  # negatives in tuples too
    return st.one_of(st.none(), single, many)


def check(op, reference, *inputs, float32=True, kernel_modes=("auto",)):
    """op on Tensors vs reference on float64 arrays, in float64 and float32; then gradcheck.

    ``kernel_modes=KERNEL_MODES`` repeats it all with the compiled kernels and with the NumPy reference."""
    for mode in kernel_modes:
        with dispatch.use(mode):
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
