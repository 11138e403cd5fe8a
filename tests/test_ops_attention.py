"""F.causal_attention, the fused attention operation: held to a plain NumPy reference (the book's five steps
on arrays), to the same five steps as separate operations (values and every gradient, dropout included),
and to finite differences; and it keeps no (B, H, T, S) array for backward."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from opcheck import KERNEL_MODES, check

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch


def reference_attention(q, k, v, scale):
    """The book's steps on float64 arrays: scores, scale, causal mask with -inf, softmax, weights @ values."""
    t, s = q.shape[-2], k.shape[-2]
    scores = q @ np.swapaxes(k, -1, -2) * scale
    future = np.arange(s)[None, :] > np.arange(t)[:, None] + (s - t)  # query i sees keys j <= i + (S - T)
    scores = np.where(future, -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


@st.composite
def qkv(draw):
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    t, extra, hd = draw(st.integers(1, 6)), draw(st.integers(0, 3)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    q = rng.standard_normal(lead + (t, hd))
    k, v = rng.standard_normal((2,) + lead + (t + extra, hd))
    return q, k, v


@given(qkv(), st.sampled_from([None, 0.25, 3.0]))
def test_matches_the_reference_and_finite_differences(arrays, scale):
    q, k, v = arrays
    want_scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    check(
        lambda a, b, c: F.causal_attention(a, b, c, scale=scale),
        lambda a, b, c: reference_attention(a, b, c, want_scale),
        q,
        k,
        v,
        kernel_modes=KERNEL_MODES,
    )


def five_steps(q, k, v, p, seed):
    """The unfused operations, as the model computed attention before: the reference for dropout."""
    w = F.causal_softmax(q @ k.swapaxes(-1, -2), scale=1 / np.sqrt(q.shape[-1]))
    return F.dropout(w, p, generator=np.random.default_rng(seed)) @ v


@given(
    qkv(), st.sampled_from([0.0, 0.1, 0.5]), st.sampled_from([np.float32, np.float64]), st.sampled_from(KERNEL_MODES)
)
def test_equals_the_five_operations_with_dropout(arrays, p, dtype, mode):
    """Values and all three gradients, with the same dropout mask (the same draw from the same generator)."""
    grads = {}
    with dispatch.use(mode):
        for name, fn in (
            ("fused", lambda q, k, v: F.causal_attention(q, k, v, dropout=p, generator=np.random.default_rng(7))),
            ("steps", lambda q, k, v: five_steps(q, k, v, p, 7)),
        ):
            tensors = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
            out = fn(*tensors)
            gy = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
            out.backward(gy)
            grads[name] = [out.data] + [t.grad for t in tensors]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(grads["fused"], grads["steps"]):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_gradcheck_with_dropout_float64():
    rng = np.random.default_rng(3)
    q, k, v = (Tensor(rng.standard_normal((2, 2, 5, 3)), requires_grad=True) for _ in range(3))
    # a fresh generator per call: the same mask at every finite-difference evaluation
    assert tl.gradcheck(
        lambda a, b, c: F.causal_attention(a, b, c, dropout=0.3, generator=np.random.default_rng(0)), [q, k, v]
    )


def test_keeps_one_weights_array_and_validates_its_inputs():
    q = Tensor(np.ones((2, 3, 16, 4), np.float32), requires_grad=True)
    out = F.causal_attention(q, q, q, dropout=0.2)
    saved = [a for a in vars(out.creator).values() if isinstance(a, np.ndarray)]
    # of the (B, H, T, S) arrays, the weights once (the five separate steps keep three) and the mask as bools
    assert sorted(str(a.dtype) for a in saved if a.shape[-2:] == (16, 16)) == ["bool", "float32"]
    assert F.causal_attention(q, q, q, dropout=0.2, training=False).creator.keep is None
    for bad, match in (
        ((q, q[:, :, :3], q[:, :, :3]), "every query must see at least itself"),
        ((q, q, q[..., :2]), "must be"),
    ):
        try:
            F.causal_attention(*bad)
        except ValueError as exc:
            assert match in str(exc)
        else:
            raise AssertionError(f"no error for {match}")
