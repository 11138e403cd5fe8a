"""Compiled kernels (tinygrad_llm.kernels) against the NumPy reference they replace.

Every comparison runs the same user-facing operation twice, once with ``dispatch.use("auto")`` (the Numba
kernel on the CPU, the CuPy kernel on a GPU) and once with ``dispatch.use("numpy")`` (the reference), on
Hypothesis-generated shapes and values, and compares forward and backward. Each such test runs on
device="cpu" and again on device="cuda" (skipped without CuPy and a GPU), with the same shapes and extreme
values: the CuPy kernels are held to exactly what the Numba ones are.

Tolerances, per dtype, relative to the scale of each result: float32 2e-5 (the kernels' own exp/tanh are
within a few ulp; sums run in another order); float64 1e-10 (the kernels call math.exp/tanh there; only
the summation order differs). The scale is the largest magnitude of the reference result, or for a
gradient that ends in a cancellation (softmax: y (gy - sum gy y); layer norm: gxhat - mean(gxhat) - ...)
the magnitude of the terms that cancel, passed as ``grad_scale`` times max|gy|.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-10}
DTYPES = st.sampled_from([np.float32, np.float64])
SCALES = st.sampled_from([1.0, 30.0, 1e4])  # 1e4: exp over/underflows unless the max is subtracted
LENGTHS = st.sampled_from([1, 2, 3, 7, 31, 64, 255, 1000, 4099])  # length 1, odd, large rows
LEADING = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)


cuda = pytest.mark.skipif(not backend.cuda_available(), reason="no CUDA GPU with CuPy on this machine")
DEVICES = pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[cuda, pytest.mark.cuda])])


def on(device, *arrays):
    """The arrays on ``device`` (NumPy arrays stay as they are on the CPU)."""
    return [backend.to_device(a, device) for a in arrays]


@pytest.fixture(autouse=True)
def fresh_kernels():
    """Each test starts with the kernels loaded and the mode unset, and leaves them so."""
    dispatch._reset()
    dispatch.set_mode(None)
    yield
    dispatch._reset()
    dispatch.set_mode(None)


def assert_close(got, want, dtype, what="", at_least=0.0):
    got, want = backend.to_numpy(got), backend.to_numpy(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype)
    tol = TOLERANCE[np.dtype(dtype).type]
    scale = max(float(np.max(np.abs(want), initial=0.0)), at_least, 1e-30)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)


def run_both(fn, arrays, grad_mask=None, seed=0):
    """fn(*tensors) forward and backward (with a random output gradient) under each implementation.

    Returns {mode: (output, [input grads])}; asserts that 'auto' really ran kernels (and none fell back to
    the reference: the backend is still on after the call), and that 'numpy' ran none."""
    results = {}
    backend_name = dispatch.backend_for(arrays[0])
    for mode in ("auto", "numpy"):
        with dispatch.use(mode):
            before = sum(n for (b, _), n in dispatch.calls.items() if b == backend_name)
            tensors = [tl.Tensor(a.copy(), requires_grad=True) for a in arrays]
            out = fn(*tensors)
            rng = np.random.default_rng(seed)
            gy = rng.standard_normal(out.shape).astype(out.dtype)
            if grad_mask is not None:
                gy = gy * grad_mask
            gy = backend.to_device(gy, out.device)
            out.backward(gy)
            results[mode] = (out.data, [t.grad for t in tensors], gy)
            ran = sum(n for (b, _), n in dispatch.calls.items() if b == backend_name) - before
            if mode == "auto":
                assert ran > 0 and dispatch.active(arrays[0]) == backend_name, f"no {backend_name} kernel ran"
            else:
                assert ran == 0
    return results


def compare(fn, arrays, dtype, name, grad_scale=0.0, forward_scale=0.0, device="cpu"):
    results = run_both(fn, on(device, *arrays))
    (y_k, g_k, _), (y_r, g_r, gy) = results["auto"], results["numpy"]
    assert_close(y_k, y_r, dtype, f"{name} forward", at_least=forward_scale)
    gy_max = float(np.max(np.abs(backend.to_numpy(gy)), initial=0.0))
    for i, (a, b) in enumerate(zip(g_k, g_r)):
        assert_close(a, b, dtype, f"{name} gradient of input {i}", at_least=grad_scale * gy_max)


def values(seed, shape, dtype, scale):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# ---- kernel vs reference on generated shapes ---------------------------------------------------------


@DEVICES
@given(lead=LEADING, n=LENGTHS, dtype=DTYPES, scale=SCALES, seed=st.integers(0, 2**16), with_inf=st.booleans())
def test_softmax_matches_reference(lead, n, dtype, scale, seed, with_inf, device):
    x = values(seed, lead + (n,), dtype, scale)
    if with_inf and n > 1:
        x[..., ::2] = -np.inf  # masked entries (never the whole row: index 1 stays finite)
    compare(lambda t: F.softmax(t), [x], dtype, "softmax", grad_scale=1.0, device=device)


@DEVICES
@given(
    lead=LEADING,
    t=st.integers(1, 40),
    extra=st.sampled_from([0, 0, 1, 5]),
    dtype=DTYPES,
    scale=SCALES,
    attn_scale=st.sampled_from([1.0, 0.125, 2.5]),
    seed=st.integers(0, 2**16),
)
def test_causal_softmax_matches_reference(lead, t, extra, dtype, scale, attn_scale, seed, device):
    x = values(seed, lead + (t, t + extra), dtype, scale)  # extra > 0: queries after a KV cache
    compare(
        lambda s: F.causal_softmax(s, attn_scale), [x], dtype, "causal_softmax", grad_scale=attn_scale, device=device
    )


@DEVICES
@given(
    lead=LEADING,
    n=LENGTHS,
    dtype=DTYPES,
    scale=SCALES,
    affine=st.sampled_from(["both", "weight", "none"]),
    shift=st.sampled_from([0.0, 100.0]),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_reference(lead, n, dtype, scale, affine, shift, seed, device):
    x = values(seed, lead + (n,), dtype, scale) + dtype(shift * scale)  # a large mean: two passes needed
    params = [values(seed + 1, (n,), dtype, 1.0), values(seed + 2, (n,), dtype, 1.0)]
    x64 = x.astype(np.float64)
    rstd_max = float(np.max(1 / np.sqrt(x64.var(axis=-1) + 1e-5)))
    w_max = float(np.abs(params[0]).max()) if affine != "none" else 1.0
    # gx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat)): terms of size rstd |w| |gy| sqrt(n) cancel.
    # Both sides round the mean to x's dtype (each its own way), so xhat = (x - mean) rstd is exact only to
    # a rounding of |mean| rstd: kappa, 1 for inputs centred near 0, ~100 for a mean 100x the spread.
    kappa = max(1.0, float(np.abs(x64.mean(axis=-1)).max()) * rstd_max)
    kw = dict(grad_scale=rstd_max * w_max * math.sqrt(n) * kappa, forward_scale=w_max * kappa)
    if affine == "both":
        compare(lambda a, w, b: F.layer_norm(a, w, b), [x, *params], dtype, "layer_norm", **kw, device=device)
    elif affine == "weight":
        compare(lambda a, w: F.layer_norm(a, w), [x, params[0]], dtype, "layer_norm", **kw, device=device)
    else:
        compare(lambda a: F.layer_norm(a), [x], dtype, "layer_norm", **kw, device=device)


@DEVICES
@given(lead=LEADING, n=LENGTHS, dtype=DTYPES, scale=st.sampled_from([1.0, 5.0, 1e4]), seed=st.integers(0, 2**16))
def test_gelu_matches_reference(lead, n, dtype, scale, seed, device):
    compare(F.gelu, [values(seed, lead + (n,), dtype, scale)], dtype, "gelu", device=device)


@DEVICES
@given(
    rows=st.integers(1, 9),
    n=LENGTHS,
    dtype=DTYPES,
    scale=SCALES,
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_matches_reference(rows, n, dtype, scale, reduction, seed, device):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n, rows)
    targets[rng.random(rows) < 0.3] = -100  # ignored rows
    logits = values(seed, (rows, n), dtype, scale)
    # loss = logsumexp - logit[target]: two numbers of the logits' size cancel (a confident row's loss is
    # ~0); gradient = softmax - onehot: terms of size 1 cancel at the target
    compare(
        lambda z: F.cross_entropy(z, targets, reduction=reduction),
        [logits],
        dtype,
        "cross_entropy",
        grad_scale=1.0,
        forward_scale=float(np.abs(logits).max(initial=0.0)),
        device=device,
    )


@DEVICES
@given(
    vocab=st.integers(1, 50),
    dim=st.sampled_from([1, 3, 16, 33, 768]),
    ids_shape=LEADING.map(lambda s: s + (5,)),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_embedding_backward_matches_reference(vocab, dim, ids_shape, dtype, seed, device):
    ids = np.random.default_rng(seed).integers(0, vocab, ids_shape)  # with few ids, many repeats
    compare(lambda w: F.embedding(ids, w), [values(seed, (vocab, dim), dtype, 1.0)], dtype, "embedding", device=device)


@DEVICES
def test_cross_entropy_with_every_row_ignored_sums_to_zero_with_zero_gradient(device):
    for mode in ("auto", "numpy"):
        with dispatch.use(mode):
            z = tl.Tensor(np.ones((3, 5), np.float32), requires_grad=True, device=device)
            loss = F.cross_entropy(z, np.full(3, -100), reduction="sum")
            loss.backward()
            assert loss.item() == 0.0 and not backend.to_numpy(z.grad).any()


def test_causal_softmax_is_the_books_masked_softmax():
    """The reference itself against the book's recipe: masked_fill(-inf) then softmax."""
    x = values(3, (2, 3, 6, 6), np.float64, 3.0)
    mask = np.triu(np.ones((6, 6), bool), k=1)
    want = F.softmax(tl.Tensor(x).masked_fill(mask, -np.inf) * 0.5).data
    for mode in ("auto", "numpy"):
        with dispatch.use(mode):
            got = F.causal_softmax(tl.Tensor(x * 2), 0.25).data  # scale applies to the scores
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
            assert not got[..., mask].any()


def test_causal_softmax_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        F.causal_softmax(tl.Tensor(np.zeros((2, 2))), 0.0)
    with pytest.raises(ValueError, match="fewer keys"):
        F.causal_softmax(tl.Tensor(np.zeros((3, 2))), 1.0)
    with pytest.raises(ValueError, match="2 dimensions"):
        F.causal_softmax(tl.Tensor(np.zeros(3)), 1.0)


# ---- gradchecks with kernels on and off --------------------------------------------------------------


@DEVICES
@pytest.mark.parametrize("mode", ["auto", "numpy"])
def test_gradchecks_of_user_facing_ops(mode, device):
    rng = np.random.default_rng(0)

    def leaf(*shape, scale=1.0):
        return tl.Tensor(rng.standard_normal(shape) * scale, requires_grad=True, dtype=np.float64, device=device)

    targets = np.array([[1, 4, -100], [0, 2, 3]])
    ids = np.array([[0, 2, 2], [1, 0, 2]])
    with dispatch.use(mode):
        x = leaf(2, 3, 5, scale=2.0)
        assert tl.gradcheck(lambda a: F.softmax(a), [x])
        assert tl.gradcheck(lambda a: F.causal_softmax(a, 0.4), [leaf(2, 4, 4)])
        assert tl.gradcheck(lambda a: F.causal_softmax(a, 1.5), [leaf(3, 5)])  # S > T
        assert tl.gradcheck(lambda a, w, b: F.layer_norm(a, w, b), [x, leaf(5), leaf(5)])
        assert tl.gradcheck(F.gelu, [x])
        assert tl.gradcheck(lambda z: F.cross_entropy(z, targets), [leaf(2, 3, 6, scale=3.0)])
        assert tl.gradcheck(lambda w: F.embedding(ids, w), [leaf(4, 3)])


# ---- selection: TINYGRAD_LLM_KERNELS, fallback with one warning --------------------------------------


def _exploding(*args, **kwargs):
    raise AssertionError("a kernel ran although the NumPy reference was selected")


def test_env_numpy_selects_the_reference(monkeypatch):
    from tinygrad_llm.kernels import numba_layers, numba_softmax

    x = values(0, (4, 9), np.float32, 1.0)
    monkeypatch.setattr(numba_softmax, "softmax_forward", _exploding)
    monkeypatch.setattr(numba_layers, "layer_norm_forward", _exploding)
    monkeypatch.setenv("TINYGRAD_LLM_KERNELS", "numpy")
    assert dispatch.mode() == "numpy" and dispatch.active(x) == "numpy"
    y = F.softmax(tl.Tensor(x)).data  # the reference ran: the patched kernel would have raised
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(-1, keepdims=True), rtol=1e-6)
    F.layer_norm(tl.Tensor(x))
    monkeypatch.setenv("TINYGRAD_LLM_KERNELS", "")  # unset/empty: kernels where available
    assert dispatch.active(x) == "numba"
    with pytest.raises(AssertionError, match="a kernel ran"):
        F.softmax(tl.Tensor(x))  # proves the dispatch really goes through the kernel in 'auto'
    monkeypatch.setenv("TINYGRAD_LLM_KERNELS", "fast")
    with pytest.raises(ValueError, match="TINYGRAD_LLM_KERNELS"):
        F.softmax(tl.Tensor(x))


def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    from numba.core.errors import TypingError

    from tinygrad_llm.kernels import numba_softmax

    def broken(*args, **kwargs):
        raise TypingError("simulated compile failure")

    monkeypatch.setattr(numba_softmax, "softmax_forward", broken)
    x = values(1, (3, 8), np.float32, 2.0)
    with dispatch.use("numpy"):
        want_softmax = F.softmax(tl.Tensor(x)).data
        want_ln = F.layer_norm(tl.Tensor(x)).data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = F.softmax(tl.Tensor(x)).data  # fails, warns, falls back
        F.softmax(tl.Tensor(x))  # no second warning: Numba is off for the process
        got_ln = F.layer_norm(tl.Tensor(x)).data
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "simulated compile failure" in messages[0], messages
    np.testing.assert_array_equal(got, want_softmax)
    np.testing.assert_array_equal(got_ln, want_ln)
    assert not dispatch.available("numba") and dispatch.active(x) == "numpy"


def test_missing_numba_falls_back_with_one_warning(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("tinygrad_llm.kernels.numba")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba -> ImportError
    x = values(2, (3, 8), np.float32, 1.0)
    with pytest.warns(RuntimeWarning, match="Numba kernels cannot be loaded") as record:
        F.gelu(tl.Tensor(x))
        F.softmax(tl.Tensor(x))
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1


# ---- AdamW --------------------------------------------------------------------------------------------

HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)


def _adamw_run(mode, param, grads, dtype):
    state = [param.astype(dtype), np.zeros_like(param, dtype), np.zeros_like(param, dtype)]
    before = dispatch.calls["numba", "adamw_update_"]
    with dispatch.use(mode):
        for step, g in enumerate(grads, start=1):
            F.adamw_update_(state[0], g.astype(dtype), state[1], state[2], step=step, **HYPER)
    assert dispatch.calls["numba", "adamw_update_"] - before == (len(grads) if mode == "auto" else 0)
    return state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_kernel_matches_reference_over_20_steps(dtype):
    rng = np.random.default_rng(0)
    param = rng.standard_normal(10_001)  # odd size: a partial last chunk
    grads = [rng.standard_normal(param.shape) * 10 ** rng.uniform(-3, 1) for _ in range(20)]
    kernel, reference = _adamw_run("auto", param, grads, dtype), _adamw_run("numpy", param, grads, dtype)
    for got, want, name in zip(kernel, reference, ("param", "exp_avg", "exp_avg_sq")):
        # same operations in the same order, no fastmath: equal up to one rounding per step
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps * 20, atol=0, err_msg=name)


def test_adamw_matches_torch_over_20_steps(torch):
    rng = np.random.default_rng(1)
    param = rng.standard_normal((37, 29)).astype(np.float32)
    grads = [rng.standard_normal(param.shape).astype(np.float32) for _ in range(20)]
    p = torch.nn.Parameter(torch.from_numpy(param.copy()))
    opt = torch.optim.AdamW(
        [p],
        lr=HYPER["lr"],
        betas=(HYPER["beta1"], HYPER["beta2"]),
        eps=HYPER["eps"],
        weight_decay=HYPER["weight_decay"],
        foreach=False,
    )
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    state = opt.state[p]
    for mode in ("auto", "numpy"):
        ours = _adamw_run(mode, param, grads, np.float32)
        for got, want, name in zip(
            ours, (p.detach(), state["exp_avg"], state["exp_avg_sq"]), ("param", "exp_avg", "exp_avg_sq")
        ):
            want = want.numpy()
            # float32 rounding: a few ulp of the value per step
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max(), err_msg=f"{mode} {name}")


def test_adamw_rejects_mismatched_arrays():
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="exp_avg_sq has shape"):
        F.adamw_update_(p, p.copy(), p.copy(), np.zeros(4, np.float32), step=1, **HYPER)
    with pytest.raises(ValueError, match="step counts from 1"):
        F.adamw_update_(p, p.copy(), p.copy(), p.copy(), step=0, **HYPER)


# ---- extreme values the Hypothesis scales may miss --------------------------------------------------


@DEVICES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_gradient_is_finite_far_below_zero(dtype, device):
    """exp(-2u) overflows below x ~ -10 (float32), ~ -21 (float64): the gate is 0 there and so is the
    gradient; a kernel that writes the derivative with e = exp(-2u) gets inf * 0 = NaN instead."""
    x = np.array(
        [-1e4, -300.0, -50.0, -21.5, -20.0, -12.0, -10.5, -10.0, -9.0, -3.0, -0.5, 0.0, 0.5, 3.0, 10.0, 50.0, 1e4],
        dtype,
    )
    results = run_both(F.gelu, on(device, x))
    for mode, (y, (gx,), _gy) in results.items():
        gx, y = backend.to_numpy(gx), backend.to_numpy(y)
        assert np.isfinite(gx).all() and np.isfinite(y).all(), (mode, gx)
        assert (gx[:3] == 0).all() and (y[:3] <= 0).all(), (mode, gx[:3], y[:3])  # far left: gelu(x) = -0, slope 0
    compare(F.gelu, [x], dtype, "gelu extremes", device=device)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_kernels_at_gpt_shapes(dtype):
    """GPT-2's widths (768 columns, a 50257-token vocabulary), and AdamW over 20 steps, on the GPU."""
    import cupy

    for n in (768, 50257):
        x = values(n, (6, n), dtype, 30.0)
        compare(lambda t: F.softmax(t), [x], dtype, f"cuda softmax n={n}", grad_scale=1.0, device="cuda")
        compare(F.gelu, [x], dtype, f"cuda gelu n={n}", device="cuda")
        w, b = values(1, (n,), dtype, 1.0), values(2, (n,), dtype, 1.0)
        rstd_max = float(np.max(1 / np.sqrt(x.astype(np.float64).var(axis=-1) + 1e-5)))
        # as test_layer_norm_matches_reference: terms of size rstd |w| |gy| sqrt(n) cancel in gx
        compare(
            lambda a, c, d: F.layer_norm(a, c, d),
            [x, w, b],
            dtype,
            f"cuda layer_norm n={n}",
            grad_scale=rstd_max * float(np.abs(w).max()) * math.sqrt(n),
            forward_scale=float(np.abs(w).max()),
            device="cuda",
        )
        targets = np.random.default_rng(n).integers(0, n, 6)
        targets[0] = -100
        compare(
            lambda z: F.cross_entropy(z, targets),
            [x],
            dtype,
            f"cuda cross_entropy n={n}",
            grad_scale=1.0,
            forward_scale=float(np.abs(x).max()),
            device="cuda",
        )
    compare(
        lambda s: F.causal_softmax(s, 0.125),
        [values(7, (2, 12, 256, 256), dtype, 3.0)],
        dtype,
        "cuda causal_softmax T=256",
        grad_scale=0.125,
        device="cuda",
    )
    param = np.random.default_rng(0).standard_normal(100_003)
    grads = [np.random.default_rng(i).standard_normal(param.shape) for i in range(20)]
    results = {}
    for mode in ("auto", "numpy"):
        state = on("cuda", param.astype(dtype), np.zeros_like(param, dtype), np.zeros_like(param, dtype))
        before = dispatch.calls["cuda", "adamw_update_"]
        with dispatch.use(mode):
            for step, g in enumerate(grads, start=1):
                F.adamw_update_(state[0], cupy.asarray(g.astype(dtype)), state[1], state[2], step=step, **HYPER)
        assert dispatch.calls["cuda", "adamw_update_"] - before == (len(grads) if mode == "auto" else 0)
        results[mode] = state
    for got, want, name in zip(results["auto"], results["numpy"], ("param", "exp_avg", "exp_avg_sq")):
        # same operations in the same order: equal up to one rounding per step, as the Numba kernel
        np.testing.assert_allclose(
            backend.to_numpy(got),
            backend.to_numpy(want),
            rtol=4 * np.finfo(dtype).eps * 20,
            atol=0,
            err_msg=f"cuda adamw {name}",
        )


# ---- one compiled variant: serial, on the calling thread ---------------------------------------------------


def test_each_kernel_is_compiled_once_serially_and_matches_reference():
    """The kernels run on the thread that calls them (the thread policy gives them one): each is one serial
    compiled function that releases the GIL, and each matches the reference on small shapes."""
    from numba.core.registry import CPUDispatcher

    from tinygrad_llm.kernels import numba_layers, numba_softmax

    compiled = [
        f
        for module in (numba_layers, numba_softmax)
        for f in vars(module).values()
        if isinstance(f, CPUDispatcher) and f.__module__ == module.__name__
    ]
    assert len(compiled) >= 10
    for f in compiled:
        assert not f.targetoptions.get("parallel") and f.targetoptions.get("nogil"), f.__name__
    ids = np.array([[0, 3, 3, 1], [2, 2, 0, 4]])
    for dtype in (np.float32, np.float64):
        x = values(1, (2, 3, 5, 7), dtype, 3.0)
        compare(lambda t: F.softmax(t), [x], dtype, "softmax", grad_scale=1.0)
        scores = values(2, (2, 3, 5, 5), dtype, 3.0)
        compare(lambda t: F.causal_softmax(t, 0.5), [scores], dtype, "causal softmax", grad_scale=1.0)
        compare(
            lambda t, w, b: F.layer_norm(t, w, b),
            [x, values(3, (7,), dtype, 1.0), values(4, (7,), dtype, 1.0)],
            dtype,
            "layer norm",
            grad_scale=10.0,
        )
        compare(F.gelu, [x], dtype, "gelu")
        compare(
            lambda t: F.cross_entropy(t, ids),
            [values(5, (2, 4, 6), dtype, 3.0)],
            dtype,
            "cross entropy",
            grad_scale=1.0,
        )
        compare(lambda w: F.embedding(ids, w), [values(6, (5, 33), dtype, 1.0)], dtype, "embedding")


# ---- dispatch: one call shape, one saved state -----------------------------------------------------------


def test_for_arrays_picks_the_kernels_or_none():
    x = np.ones((2, 3), np.float32)
    k = dispatch.for_arrays(x)
    from tinygrad_llm.kernels import numba_softmax

    assert k is not None and k.backend == "numba"
    np.testing.assert_array_equal(k.softmax_forward(x), numba_softmax.softmax_forward(x))
    with pytest.raises(AttributeError, match="no numba kernel named 'softmax_fwd'"):
        k.softmax_fwd  # noqa: B018  a misspelt kernel is an error, not a silent fallback
    assert dispatch.for_arrays(x.astype(np.int64)) is None  # integers: the reference
    assert dispatch.for_arrays(x, x.astype(np.float64)) is None  # mixed dtypes: the reference
    assert dispatch.for_arrays(x.astype(np.float16)) is None
    with dispatch.use("numpy"):
        assert dispatch.for_arrays(x) is None


@pytest.mark.parametrize("op", ["layer_norm", "gelu"])
def test_an_operation_saves_the_same_state_whichever_implementation_ran(op):
    """Forward keeps the same names, shapes and dtypes on the kernel path and the reference path, so a
    backward that finds the kernels switched off in between (or a reader) sees one kind of state."""
    x = values(7, (2, 3, 8), np.float32, 2.0)
    saved = {}
    for mode in ("auto", "numpy"):
        with dispatch.use(mode):
            t = tl.Tensor(x, requires_grad=True)
            w, b = tl.Tensor(np.ones(8, np.float32), requires_grad=True), tl.Tensor(np.zeros(8, np.float32))
            y = F.layer_norm(t, w, b) if op == "layer_norm" else F.gelu(t)
            saved[mode] = {
                k: (np.shape(v), getattr(v, "dtype", None))
                for k, v in vars(y.creator).items()
                if isinstance(v, np.ndarray)
            }
    assert saved["auto"] == saved["numpy"], saved
    with dispatch.use("auto"):  # forward on the kernel, backward on the reference: the same gradient
        t = tl.Tensor(x, requires_grad=True)
        y = F.layer_norm(t) if op == "layer_norm" else F.gelu(t)
    gy = values(8, x.shape, np.float32, 1.0)
    with dispatch.use("numpy"):
        y.backward(gy)
        t2 = tl.Tensor(x, requires_grad=True)
        (F.layer_norm(t2) if op == "layer_norm" else F.gelu(t2)).backward(gy)
    assert_close(t.grad, t2.grad, np.float32, op, at_least=10.0 * float(np.abs(gy).max()))


# ---- the same bits whether a kernel was compiled in this process or loaded from Numba's cache ---------------

_CACHE_PROBE = r"""
import hashlib, json, sys
import numpy as np
from numba.core.registry import CPUDispatcher
from tinygrad_llm.kernels import numba_layers as L, numba_softmax as S

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 97)).astype(np.float32)  # 97: the vector loops' main part, tail and remainder
gy = rng.standard_normal((64, 97)).astype(np.float32)
scores = rng.standard_normal((4, 9, 13)).astype(np.float32)
t = rng.integers(0, 97, 64)
w, b = rng.standard_normal(97).astype(np.float32), rng.standard_normal(97).astype(np.float32)
out = {"sm": S.softmax_forward(x, 0.7), "smb": S.softmax_backward(S.softmax_forward(x), gy, 0.7),
       "causal": S.softmax_forward(scores, 0.5, causal=True), "gelu": L.gelu_forward(x),
       "gelub": L.gelu_backward(x, gy), "emb": L.embedding_backward(t, gy, 97)}
out["ce"], out["lse"] = S.cross_entropy_forward(x, t, -100)
out["ceb"] = S.cross_entropy_backward(x, out["lse"], t, np.full(64, 1 / 64, np.float32))
y, mean, rstd = L.layer_norm_forward(x, w, b, 1e-5)
out["ln"] = y
out["lnb"] = np.concatenate([np.ravel(a) for a in L.layer_norm_backward(gy, x, w, mean, rstd)])
report = {"bits": {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in out.items()},
          "calls": {}, "loaded": []}
for module in (L, S):
    for f in vars(module).values():
        if isinstance(f, CPUDispatcher) and f.__module__ == module.__name__ and f.signatures:
            if f.stats.cache_hits:
                report["loaded"].append(f.__name__)
                continue
            for sig in f.signatures:  # compiled here: the helpers it calls instead of inlining, if any
                asm = f.inspect_asm(sig)
                report["calls"][f.__name__] = sorted(set(
                    line.split("$")[1].split(",")[0] for line in asm.splitlines()
                    if "movabsq" in line and "numba_math" in line))
print(json.dumps(report))
"""


@pytest.mark.slow  # two fresh interpreters compile and load every kernel
def test_kernels_give_the_same_bits_compiled_or_loaded_from_the_cache(tmp_path):
    """Two fresh interpreters share an empty NUMBA_CACHE_DIR: the first compiles every kernel (and writes the
    cache), the second loads them. Their outputs must agree bit for bit, or a resumed run (cache) would not
    equal a straight one (a fresh clone compiles). No kernel may call a numba_math helper (it must inline it):
    a called helper binds to whichever copy of it the process loaded first, and the copies sum in different
    orders under fastmath (softmax's last bit differed)."""
    import json
    import os
    import subprocess

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    compiled, loaded = runs
    assert compiled["calls"] and not compiled["loaded"], compiled  # the first compiled every kernel
    assert loaded["loaded"] and not loaded["calls"], loaded  # the second loaded them
    differ = sorted(k for k in compiled["bits"] if compiled["bits"][k] != loaded["bits"][k])
    assert not differ, f"compiled and cached kernels give different bits for {differ}"
    assert compiled["calls"] == {name: [] for name in compiled["calls"]}, compiled["calls"]
