"""PyTorch as an independent oracle: forward values and gradients agree with torch.autograd.

Each case runs the same function on the same inputs in tinygrad_llm and in torch, reduces the output
with the same random cotangent, and compares the outputs and every input's gradient:
float64 within FLOAT64 (rounding only), float32 within FLOAT32 (a few float32 ulps after ~100-term sums).
Skipped with a stated reason when torch is not installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygrad_llm import Tensor
from tinygrad_llm import functional as F

FLOAT64 = dict(rtol=1e-10, atol=1e-10)
FLOAT32 = dict(rtol=1e-4, atol=1e-5)
RNG_SEED = 1234


def _rng(name):
    return np.random.default_rng([RNG_SEED, sum(map(ord, name))])


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    return lambda rng: rng.uniform(0.3, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def distinct(*shape):
    return lambda rng: (rng.permutation(math.prod(shape)).reshape(shape) - 3.0) * 0.1


def transposed(*shape):
    """A non-contiguous input: the transpose of a contiguous array."""
    return lambda rng: rng.standard_normal(tuple(reversed(shape))).T


def extreme(*shape):
    return lambda rng: rng.uniform(-1e4, 1e4, shape)


IDS = np.array([[1, 3, 1], [0, 3, 3]])
TARGETS = np.array([[2, -100, 0], [4, 4, 1]])
TARGETS_4 = np.array([[2, 1, 0], [4, 4, 1]])  # with ignore_index=4: two rows ignored
MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, True, False]])
CAUSAL = np.triu(np.ones((3, 3), dtype=bool), k=1)


def cases(torch):
    tF = torch.nn.functional
    t = lambda a: torch.as_tensor(a)  # noqa: E731  integer/boolean arguments for torch
    return {
        # name: (tinygrad_llm fn, torch fn, input makers)
        "add_broadcast": (lambda a, b: a + b, lambda a, b: a + b, [normal(3, 1, 4), normal(2, 4)]),
        "sub_broadcast": (lambda a, b: a - b, lambda a, b: a - b, [normal(4), normal(3, 1)]),
        "mul_broadcast": (lambda a, b: a * b, lambda a, b: a * b, [normal(2, 3, 1), normal(1, 4)]),
        "div_broadcast": (lambda a, b: a / b, lambda a, b: a / b, [normal(3, 4), away_from_zero(4)]),
        "scalars": (
            lambda a: (2.0 - a) * 3 / 1.5 + 1 - 2.0**a,
            lambda a: (2.0 - a) * 3 / 1.5 + 1 - 2.0**a,
            [normal(3, 4)],
        ),
        "rdiv": (lambda a: 2.0 / a, lambda a: 2.0 / a, [away_from_zero(5)]),
        "neg": (lambda a: -a, lambda a: -a, [transposed(3, 4)]),
        "pow_3": (lambda a: a**3, lambda a: a**3, [normal(3, 4)]),
        "pow_half": (lambda a: a**0.5, lambda a: a**0.5, [positive(3, 4)]),
        "pow_neg": (lambda a: a**-1.5, lambda a: a**-1.5, [positive(3, 4)]),
        "exp": (lambda a: a.exp(), lambda a: a.exp(), [normal(3, 4)]),
        "log": (lambda a: a.log(), lambda a: a.log(), [positive(3, 4)]),
        "sqrt": (lambda a: a.sqrt(), lambda a: a.sqrt(), [positive(3, 4)]),
        "tanh": (lambda a: a.tanh(), lambda a: a.tanh(), [transposed(3, 4)]),
        "relu": (lambda a: a.relu(), lambda a: a.relu(), [away_from_zero(3, 4)]),
        "matmul_vec_vec": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(4), normal(4)]),
        "matmul_vec_batch": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(4), normal(2, 4, 3)]),
        "matmul_batch_vec": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(2, 3, 4), normal(4)]),
        "matmul_broadcast_batch": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(2, 1, 3, 4), normal(5, 4, 2)]),
        "matmul_weight_shared": (lambda a, b: a @ b, lambda a, b: a @ b, [normal(2, 3, 4), transposed(4, 5)]),
        "sum_axes_keepdims": (
            lambda a: a.sum(axis=(0, 2), keepdims=True),
            lambda a: a.sum(dim=(0, 2), keepdim=True),
            [normal(2, 3, 4)],
        ),
        "sum_all": (lambda a: a.sum(), lambda a: a.sum(), [transposed(3, 4)]),
        "mean_neg_axis": (lambda a: a.mean(axis=-1), lambda a: a.mean(dim=-1), [normal(2, 3, 4)]),
        "mean_all": (lambda a: a.mean(), lambda a: a.mean(), [normal(2, 3)]),
        "max_axis": (lambda a: a.max(axis=1), lambda a: a.amax(dim=1), [distinct(2, 3, 4)]),
        "max_tuple_keepdims": (
            lambda a: a.max(axis=(0, 2), keepdims=True),
            lambda a: a.amax(dim=(0, 2), keepdim=True),
            [distinct(2, 3, 4)],
        ),
        "reshape": (lambda a: a.reshape(4, -1) * 2.0, lambda a: a.reshape(4, -1) * 2.0, [transposed(2, 3, 4)]),
        "transpose_axes": (lambda a: a.transpose(2, 0, 1) * 2.0, lambda a: a.permute(2, 0, 1) * 2.0, [normal(2, 3, 4)]),
        "T": (lambda a: a.T * 2.0, lambda a: a.T * 2.0, [normal(3, 4)]),
        "swapaxes": (lambda a: a.swapaxes(-1, 0) * 2.0, lambda a: a.transpose(-1, 0) * 2.0, [normal(2, 3, 4)]),
        "getitem_basic": (lambda a: a[1:, ::-2, None, 2], lambda a: a[1:].flip(1)[:, ::2, None, 2], [normal(3, 4, 5)]),
        "getitem_ellipsis": (lambda a: a[..., 1:3], lambda a: a[..., 1:3], [normal(2, 3, 4)]),
        "getitem_int_array_repeats": (
            lambda a: a[np.array([2, 0, 2, 2])],
            lambda a: a[t(np.array([2, 0, 2, 2]))],
            [normal(3, 4)],
        ),
        "getitem_bool_mask": (lambda a: a[MASK], lambda a: a[t(MASK)], [normal(3, 4)]),
        "concatenate": (
            lambda a, b: F.concatenate([a, b], axis=1),
            lambda a, b: torch.cat([a, b], dim=1),
            [normal(2, 3), normal(2, 1)],
        ),
        "stack": (
            lambda a, b: F.stack([a, b], axis=-1),
            lambda a, b: torch.stack([a, b], dim=-1),
            [normal(2, 3), normal(2, 3)],
        ),
        "split": (
            lambda a: F.split(a, [1, 3], axis=1)[1] * 2.0,
            lambda a: torch.split(a, [1, 2, 1], dim=1)[1] * 2.0,
            [normal(2, 4)],
        ),
        "where": (lambda a, b: F.where(MASK, a, b), lambda a, b: torch.where(t(MASK), a, b), [normal(3, 4), normal(4)]),
        "masked_fill": (
            lambda a: a.masked_fill(CAUSAL, -np.inf).softmax(-1),
            lambda a: a.masked_fill(t(CAUSAL), -np.inf).softmax(-1),
            [normal(2, 3, 3)],
        ),
        "softmax": (lambda a: F.softmax(a, axis=1), lambda a: torch.softmax(a, dim=1), [normal(2, 5, 3)]),
        "log_softmax": (lambda a: F.log_softmax(a), lambda a: torch.log_softmax(a, dim=-1), [transposed(5, 4)]),
        "softmax_extreme": (lambda a: F.softmax(a), lambda a: torch.softmax(a, dim=-1), [extreme(3, 5)]),
        "log_softmax_extreme": (lambda a: F.log_softmax(a), lambda a: torch.log_softmax(a, dim=-1), [extreme(3, 5)]),
        "layer_norm": (
            lambda x, w, b: F.layer_norm(x, w, b),
            lambda x, w, b: tF.layer_norm(x, (6,), w, b),
            [normal(2, 3, 6), normal(6), normal(6)],
        ),
        "layer_norm_plain": (lambda x: F.layer_norm(x), lambda x: tF.layer_norm(x, (6,)), [normal(4, 6)]),
        "gelu": (F.gelu, lambda x: tF.gelu(x, approximate="tanh"), [normal(3, 4)]),
        "dropout_eval": (
            lambda x: F.dropout(x, 0.5, training=False) * 1.0,
            lambda x: tF.dropout(x, 0.5, training=False) * 1.0,
            [normal(3, 4)],
        ),
        "embedding": (lambda w: F.embedding(IDS, w), lambda w: tF.embedding(t(IDS), w), [normal(5, 3)]),
        "linear_bias_3d": (F.linear, tF.linear, [normal(2, 3, 4), normal(5, 4), normal(5)]),
        "linear_no_bias_2d": (F.linear, tF.linear, [normal(3, 4), normal(5, 4)]),
        "cross_entropy_mean": (
            lambda z: F.cross_entropy(z, TARGETS),
            lambda z: tF.cross_entropy(z.reshape(-1, 5), t(TARGETS).reshape(-1)),
            [normal(2, 3, 5)],
        ),
        "cross_entropy_sum": (
            lambda z: F.cross_entropy(z, TARGETS, reduction="sum"),
            lambda z: tF.cross_entropy(z.reshape(-1, 5), t(TARGETS).reshape(-1), reduction="sum"),
            [normal(2, 3, 5)],
        ),
        "cross_entropy_none": (
            lambda z: F.cross_entropy(z, TARGETS, reduction="none"),
            lambda z: tF.cross_entropy(z.reshape(-1, 5), t(TARGETS).reshape(-1), reduction="none").reshape(2, 3),
            [normal(2, 3, 5)],
        ),
        "cross_entropy_ignore_4": (
            lambda z: F.cross_entropy(z, TARGETS_4, ignore_index=4),
            lambda z: tF.cross_entropy(z.reshape(-1, 5), t(TARGETS_4).reshape(-1), ignore_index=4),
            [normal(2, 3, 5)],
        ),
        "cross_entropy_extreme": (
            lambda z: F.cross_entropy(z, TARGETS),
            lambda z: tF.cross_entropy(z.reshape(-1, 5), t(TARGETS).reshape(-1)),
            [extreme(2, 3, 5)],
        ),
    }


CASE_NAMES = [
    "add_broadcast",
    "sub_broadcast",
    "mul_broadcast",
    "div_broadcast",
    "scalars",
    "rdiv",
    "neg",
    "pow_3",
    "pow_half",
    "pow_neg",
    "exp",
    "log",
    "sqrt",
    "tanh",
    "relu",
    "matmul_vec_vec",
    "matmul_vec_batch",
    "matmul_batch_vec",
    "matmul_broadcast_batch",
    "matmul_weight_shared",
    "sum_axes_keepdims",
    "sum_all",
    "mean_neg_axis",
    "mean_all",
    "max_axis",
    "max_tuple_keepdims",
    "reshape",
    "transpose_axes",
    "T",
    "swapaxes",
    "getitem_basic",
    "getitem_ellipsis",
    "getitem_int_array_repeats",
    "getitem_bool_mask",
    "concatenate",
    "stack",
    "split",
    "where",
    "masked_fill",
    "softmax",
    "log_softmax",
    "softmax_extreme",
    "log_softmax_extreme",
    "layer_norm",
    "layer_norm_plain",
    "gelu",
    "dropout_eval",
    "embedding",
    "linear_bias_3d",
    "linear_no_bias_2d",
    "cross_entropy_mean",
    "cross_entropy_sum",
    "cross_entropy_none",
    "cross_entropy_ignore_4",
    "cross_entropy_extreme",
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_forward_and_gradients_match_torch(torch, name, dtype):
    ours_fn, torch_fn, makers = cases(torch)[name]
    rng = _rng(name)
    inputs = [make(rng) for make in makers]
    np_dtype = np.dtype(dtype)

    ours_in = [Tensor(a.astype(np_dtype, order="K"), requires_grad=True) for a in inputs]  # keeps transposed views
    ours = ours_fn(*ours_in)
    cotangent = rng.standard_normal(ours.shape).astype(np_dtype)
    (ours * Tensor(cotangent)).sum().backward()

    theirs_in = [torch.tensor(np.ascontiguousarray(a, dtype=np_dtype), requires_grad=True) for a in inputs]
    theirs = torch_fn(*theirs_in)
    (theirs * torch.from_numpy(cotangent)).sum().backward()

    tol = FLOAT64 if dtype == "float64" else FLOAT32
    assert ours.dtype == np_dtype and ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **tol, err_msg=f"{name} forward")
    for i, (a, b) in enumerate(zip(ours_in, theirs_in)):
        assert a.grad is not None and a.grad.dtype == np_dtype, f"{name}: input {i} got no {dtype} gradient"
        scale = max(1.0, float(np.abs(b.grad.numpy()).max(initial=0)))  # extreme logits: gradients up to ~1
        np.testing.assert_allclose(
            a.grad, b.grad.numpy(), rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=f"{name} gradient of input {i}"
        )


def test_every_case_is_listed(torch):
    assert sorted(cases(torch)) == sorted(CASE_NAMES)


def test_dropout_gradient_is_its_mask_like_torch(torch):
    """Masks differ between libraries' generators; both must scale survivors by 1/(1-p) and route the
    gradient through exactly the survivors."""
    x = np.random.default_rng(0).uniform(0.5, 1.5, (50, 40))
    for p in (0.2, 0.7):
        ours_x = Tensor(x, requires_grad=True)
        ours = F.dropout(ours_x, p, generator=np.random.default_rng(1))
        ours.sum().backward()
        theirs_x = torch.tensor(x, requires_grad=True)
        torch.manual_seed(1)
        theirs = torch.nn.functional.dropout(theirs_x, p, training=True)
        theirs.sum().backward()
        for out, grad in ((ours.numpy(), ours_x.grad), (theirs.detach().numpy(), theirs_x.grad.numpy())):
            kept = out != 0
            np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
            np.testing.assert_allclose(grad, kept / (1 - p), rtol=1e-12)
            assert abs(1 - kept.mean() - p) < 0.05


# ---- shapes of Hypothesis' choosing ------------------------------------------------------------------------


def _torch_agrees(torch, ours_fn, torch_fn, arrays, seed):
    """float64 forward and gradients of ours_fn and torch_fn on the same arrays and cotangent."""
    ours_in = [Tensor(a, requires_grad=True) for a in arrays]
    ours = ours_fn(*ours_in)
    cotangent = np.random.default_rng(seed).standard_normal(ours.shape)
    (ours * Tensor(cotangent)).sum().backward()
    theirs_in = [torch.tensor(a, requires_grad=True) for a in arrays]
    theirs = torch_fn(*theirs_in)
    (theirs * torch.from_numpy(cotangent)).sum().backward()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **FLOAT64)
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **FLOAT64)


@given(
    hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, min_side=0, max_side=4),
    st.integers(0, 2**16),
)
def test_matmul_any_shapes_matches_torch(torch, shapes, seed):
    """Batched, broadcast batch axes and the 1-D cases (the signature (n?,k),(k,m?)->(n?,m?))."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes.input_shapes)
    _torch_agrees(torch, lambda x, y: x @ y, lambda x, y: x @ y, [a, b], seed)


@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4), st.data())
def test_reductions_any_axes_match_torch(torch, shape, data):
    ndim = len(shape)
    axes = tuple(
        data.draw(st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim, unique_by=lambda a: a % ndim))
    )
    keepdims = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2**16))
    x = (np.random.default_rng(seed).permutation(math.prod(shape)).reshape(shape) - 5.0) * 0.1  # no ties
    _torch_agrees(
        torch, lambda t: t.sum(axis=axes, keepdims=keepdims), lambda t: t.sum(dim=axes, keepdim=keepdims), [x], seed
    )
    _torch_agrees(
        torch, lambda t: t.mean(axis=axes, keepdims=keepdims), lambda t: t.mean(dim=axes, keepdim=keepdims), [x], seed
    )
    _torch_agrees(
        torch, lambda t: t.max(axis=axes, keepdims=keepdims), lambda t: t.amax(dim=axes, keepdim=keepdims), [x], seed
    )
    _torch_agrees(
        torch, lambda t: F.log_softmax(t, axis=axes[0]), lambda t: torch.log_softmax(t, dim=axes[0]), [x * 30], seed
    )
