"""Property tests of the operations that move, select or join elements (see opcheck.py for what
``check`` asserts)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from opcheck import arrays, broadcastable, check, shapes

from tinygrad_llm import Tensor
from tinygrad_llm import functional as F

# ---- shape operations --------------------------------------------------------------------------------


@given(st.data(), shapes(max_dims=4))
def test_reshape(data, shape):
    x = data.draw(arrays(shape))
    size = math.prod(shape)
    target = data.draw(
        st.one_of(
            st.permutations(shape).map(tuple),
            st.just((-1,)),
            st.just((size, 1)),
            st.just((1, -1)) if size else st.just((1, 0)),
        )
    )
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
        items = items[: draw(st.integers(0, len(items)))]  # trailing axes left out
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
