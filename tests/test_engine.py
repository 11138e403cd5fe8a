"""The engine's behaviour: accumulation, hooks, retain_grad, no_grad, long chains, dtypes, memory,
graph release, aliasing, and the errors bad input gets (each naming the operation and what it got)."""

from __future__ import annotations

import gc
import sys
import tracemalloc
import types
import weakref

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import Tensor, backend
from tinygrad_llm import functional as F


def leaf(values, dtype=np.float64):
    return Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# ---- accumulation ------------------------------------------------------------------------------------


def test_tensor_used_twice_accumulates():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])
    y = leaf([1.0, 2.0])
    (y + y).sum().backward()
    np.testing.assert_array_equal(y.grad, [2.0, 2.0])
    z = leaf(2.0)  # 0-d: NumPy hands back immutable scalars, which must still accumulate
    (z * z * z).backward()
    assert z.grad == 12.0 and isinstance(z.grad, np.ndarray)
    w = leaf(2.0)
    (w * 1 + w * 1 + w * 1 + w * 1).backward()
    assert w.grad == 4.0


def test_diamond_graph():
    x = leaf([0.5, -1.5])
    a, b = x * 2.0, x.exp()
    (a * b).sum().backward()  # d(2x e^x)/dx = 2 e^x + 2x e^x
    np.testing.assert_allclose(x.grad, 2 * np.exp(x.data) * (1 + x.data), rtol=1e-14)


def test_shared_intermediate_reached_by_paths_of_different_lengths():
    """r = a + 2a where a = 3x: a must receive both gradients before passing them on (topological order)."""
    for build in (lambda a: a + a * 2.0, lambda a: a * 2.0 + a, lambda a: (a * 2.0).exp().log() + a):
        x = leaf([1.0, 2.0])
        a = x * 3.0
        build(a).sum().backward()
        np.testing.assert_allclose(x.grad, [9.0, 9.0], rtol=1e-14)
    x = leaf(1.0)
    y = x * 2.0
    (x + y).backward()  # the leaf itself reached directly and through y
    assert x.grad == 3.0


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0 + 2.0, 3.0 + 4.0])
    x.zero_grad()
    assert x.grad is None


# ---- hooks and retain_grad ----------------------------------------------------------------------------


def test_hooks_see_and_replace_gradients():
    x = leaf([1.0, 2.0])
    seen = []
    h = x * 3.0
    h.register_hook(lambda g: seen.append(g.copy()))
    h.register_hook(lambda g: g * 10.0)  # replaces the gradient flowing on into x
    x.register_hook(lambda g: seen.append(g.copy()))
    (h * h).sum().backward()
    np.testing.assert_array_equal(seen[0], 2 * h.data)  # the intermediate's gradient, before replacing
    np.testing.assert_array_equal(seen[1], 10 * 2 * h.data * 3.0)
    np.testing.assert_array_equal(x.grad, 10 * 2 * h.data * 3.0)
    y = leaf([1.0])
    y.register_hook(lambda g: Tensor(np.array([7.0])))  # a hook on a leaf replaces what .grad stores
    (y * 2.0).sum().backward()
    np.testing.assert_array_equal(y.grad, [7.0])


def test_hook_returning_wrong_shape_is_named():
    x = leaf([1.0, 2.0])
    h = x * 2.0
    h.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match=r"register_hook.*\(3,\).*\(2,\)"):
        h.sum().backward()


def test_retain_grad_and_intermediates_free_their_grad():
    x = leaf([1.0, 2.0])
    h = x * 3.0
    k = h * 2.0
    h.retain_grad()
    k.sum().backward()
    np.testing.assert_array_equal(h.grad, [2.0, 2.0])
    assert k.grad is None  # not retained
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    with pytest.raises(RuntimeError, match="retain_grad"):
        Tensor([1.0]).retain_grad()


# ---- grad mode ---------------------------------------------------------------------------------------


def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = (x * 2.0).exp().sum()
        with tl.enable_grad():
            z = x * 2.0
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y.creator is None
    assert z.requires_grad and z.creator is not None
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        y.backward()
    try:
        with tl.no_grad():
            raise KeyError
    except KeyError:
        pass
    assert tl.is_grad_enabled()  # restored after an exception


def test_no_bookkeeping_without_requires_grad():
    a, b = Tensor([1.0, 2.0]), Tensor([3.0, 4.0])
    y = (a * b + 1.0).sum()
    assert not y.requires_grad and y.creator is None and y.is_leaf


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0])
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, d.data)


# ---- long chains, dtypes ------------------------------------------------------------------------------


def test_chain_of_10000_ops_backward_has_no_recursion_limit():
    x = leaf([1.0, 2.0])
    y = x
    for _ in range(5000):
        y = (y * 1.0001) + 0.0  # 10,000 operations
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(depth + 100)  # a recursive traversal of 10,000 ops could not run
        y.sum().backward()
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(x.grad, [1.0001**5000] * 2, rtol=1e-10)


def test_float32_stays_float32_and_float64_is_kept():
    for dtype in (np.float32, np.float64):
        x = Tensor(np.array([[0.5, -1.0, 2.0]], dtype=dtype), requires_grad=True)
        w = Tensor(np.ones((4, 3), dtype=dtype), requires_grad=True)
        b = Tensor(np.zeros(4, dtype=dtype), requires_grad=True)
        h = F.gelu(F.linear(x, w, b)) * 2.5 + 1  # Python scalars never promote
        h = (2.0 - h) / 3 + 2.0 ** h.tanh() + h.relu().sqrt() - h**2
        h = F.layer_norm(h, None, None) + F.softmax(h) + F.log_softmax(h).exp()
        loss = F.cross_entropy(h, np.array([1])) + h.mean() + h.max()
        assert h.dtype == dtype and loss.dtype == dtype
        loss.backward()
        assert x.grad.dtype == dtype and w.grad.dtype == dtype and b.grad.dtype == dtype
        assert x.grad.shape == x.shape
    assert Tensor([1.0, 2.0]).dtype == np.float32  # Python floats default to float32
    assert Tensor(np.array([1.0])).dtype == np.float64  # a float64 array is kept


# ---- memory and graph release ----------------------------------------------------------------------------


def _mlp_step(params, x, targets):
    w1, b1, w2, b2 = params
    for p in params:
        p.zero_grad()
    h = F.gelu(F.linear(x, w1, b1))
    loss = F.cross_entropy(F.linear(h, w2, b2), targets)
    loss.backward()
    for p in params:
        p.data -= 0.01 * p.grad
    return loss.item()


def test_memory_of_repeated_forward_backward_stays_flat():
    rng = np.random.default_rng(0)
    params = [
        Tensor(rng.standard_normal(s).astype(np.float32) * 0.1, requires_grad=True)
        for s in ((32, 16), (32,), (5, 32), (5,))
    ]
    x = Tensor(rng.standard_normal((8, 16)).astype(np.float32))
    targets = rng.integers(0, 5, 8)
    tracemalloc.start()
    try:
        for _ in range(20):  # warm up: what lives across steps (grads, caches) is allocated here
            _mlp_step(params, x, targets)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            _mlp_step(params, x, targets)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One step's graph holds ~20 KB of arrays: keeping it alive would add ~4 MB over 200 steps.
    assert after - before < 32 * 1024, f"memory grew by {after - before} bytes over 200 steps"


def test_graph_released_after_backward():
    x = leaf(np.ones((3, 3)))
    h = x * 2.0
    creator = weakref.ref(h.creator)
    alive = weakref.ref(h)
    y = h.exp().sum()
    del h
    y.backward()
    gc.collect()
    assert alive() is None  # nothing behind y holds the intermediate any more
    assert creator() is None
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


# ---- aliasing -----------------------------------------------------------------------------------------


def test_grads_never_alias_each_other_or_the_seed():
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (x + y).sum().backward()
    x.grad += 1.0
    np.testing.assert_array_equal(y.grad, [1.0, 1.0])
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    s = a + b
    seed = np.ones(2)
    s.backward(seed)
    a.grad *= 5
    np.testing.assert_array_equal(seed, [1.0, 1.0])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    s2 = a + b
    s2.backward(seed)  # accumulating into a.grad must not write through into b.grad or the seed
    np.testing.assert_array_equal(b.grad, [2.0, 2.0])
    np.testing.assert_array_equal(seed, [1.0, 1.0])
    m = leaf(np.ones((2, 3)))
    m.T.sum().backward()  # a view gradient (transpose) is stored as its own writable array
    m.grad[0, 0] = 5.0
    assert m.grad.flags.writeable and m.grad.shape == (2, 3)
    r = leaf([1.0, 2.0])
    h = r * 1.0
    h.retain_grad()
    (h + r).sum().backward()
    h.grad += 1
    np.testing.assert_array_equal(r.grad, [2.0, 2.0])


# ---- conversions and comparisons ---------------------------------------------------------------------------


def test_comparisons_return_non_grad_boolean_tensors():
    x = leaf([1.0, -2.0, 3.0])
    for result in (x > 0, x < 0, x >= 1.0, x <= Tensor([1.0, 1.0, 1.0]), x == 3.0, x != 3.0):
        assert isinstance(result, Tensor)
        assert result.dtype == bool and not result.requires_grad and result.creator is None
    np.testing.assert_array_equal((x > 0).numpy(), [True, False, True])


def test_tensor_basics():
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.shape == (2, 2) and t.ndim == 2 and t.device == "cpu" and len(t) == 2
    assert t.to("cpu") is t
    assert Tensor(5.0).item() == 5.0
    assert isinstance(t.numpy(), np.ndarray)
    assert "requires_grad=True" in repr(leaf([1.0]))
    assert "grad_fn=Mul" in repr(leaf([1.0]) * 2.0)


# ---- bad input ----------------------------------------------------------------------------------------


def test_binary_shape_mismatch_names_op_and_shapes():
    a, b = leaf(np.ones((2, 3))), leaf(np.ones(4))
    for op, name in ((lambda: a + b, "Add"), (lambda: a - b, "Sub"), (lambda: a * b, "Mul"), (lambda: a / b, "Div")):
        with pytest.raises(ValueError, match=rf"{name}.*\(2, 3\).*\(4,\)"):
            op()
    with pytest.raises(ValueError, match=r"MatMul.*\(2, 3\).*\(4,\)"):
        a @ b
    with pytest.raises(ValueError, match=r"MatMul.*\(2, 3\).*\(2, 3\)"):
        a @ a
    with pytest.raises(ValueError, match=r"MatMul.*\(2, 3\).*\(\)"):
        a @ leaf(1.0)
    with pytest.raises(ValueError, match=r"Where.*\(2, 3\).*\(4,\)"):
        F.where(np.ones((2, 3), dtype=bool), a, b)


def test_backward_needs_a_seed_for_non_scalars():
    y = leaf(np.ones((2, 3))) * 2.0
    with pytest.raises(RuntimeError, match=r"\(2, 3\).*grad="):
        y.backward()
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 3\)"):
        y.backward(np.ones(3))


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int64.*\\(2,\\)"):
        Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="bool"):
        Tensor(np.array([True]), requires_grad=True)


@pytest.mark.skipif(tl.cuda_available(), reason="CuPy and a GPU are present: the missing-CuPy error cannot occur")
def test_cuda_without_cupy_names_cupy_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed, even where it is
    monkeypatch.setattr(backend, "_cupy", None)
    for make in (lambda: Tensor([1.0], device="cuda"), lambda: Tensor([1.0]).to("cuda")):
        with pytest.raises(RuntimeError, match=r"CuPy.*tinygrad-llm\[cuda12\]"):
            make()
    monkeypatch.setattr(backend, "nvidia_driver_present", lambda: False)
    with pytest.raises(RuntimeError, match=r"no NVIDIA GPU.*CuPy is not installed.*device 'cpu'"):
        Tensor([1.0], device="cuda")
    monkeypatch.setenv("TINYGRAD_LLM_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="CuPy"):
        Tensor([1.0])
    monkeypatch.setenv("TINYGRAD_LLM_DEVICE", "tpu")
    with pytest.raises(ValueError, match="TINYGRAD_LLM_DEVICE='tpu'"):
        Tensor([1.0])
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        Tensor([1.0], device="tpu")


def test_mixing_devices_names_op_and_devices(monkeypatch):
    """Without a GPU: a fake 'cupy' whose arrays are a NumPy subclass drives the same device check."""

    class FakeGpuArray(np.ndarray):
        pass

    monkeypatch.setattr(backend, "_cupy", types.SimpleNamespace(ndarray=FakeGpuArray, __name__="cupy"))
    on_gpu = Tensor._from_op(np.ones((2, 3)).view(FakeGpuArray), None)
    on_cpu = leaf(np.ones((2, 3)))
    assert on_gpu.device == "cuda" and on_cpu.device == "cpu"
    for op in (lambda: on_gpu + on_cpu, lambda: on_cpu * on_gpu, lambda: F.concatenate([on_cpu, on_gpu])):
        with pytest.raises(
            RuntimeError,
            match=r"(Add|Mul|Concatenate): inputs are on different devices.*cuda.*cpu|"
            r"(Add|Mul|Concatenate): inputs are on different devices.*cpu.*cuda",
        ):
            op()


def test_bad_axes_are_named():
    x = leaf(np.ones((2, 3)))
    for op, pattern in (
        (lambda: x.sum(axis=2), r"sum: axis 2"),
        (lambda: x.mean(axis=-3), r"mean: axis -3"),
        (lambda: x.max(axis=(0, 0)), r"max: axis"),
        (lambda: x.transpose(0, 5), r"transpose.*\(2, 3\)"),
        (lambda: x.transpose(0), r"transpose"),
        (lambda: x.swapaxes(0, 4), r"swapaxes: axis 4.*\(2, 3\)"),
        (lambda: F.split(x, 2, axis=3), r"split: axis 3"),
        (lambda: F.split(x, 2, axis=1), r"split.*length 3"),
        (lambda: F.softmax(x, axis=4), r"Softmax.*\(2, 3\)"),
        (lambda: F.stack([x, x], axis=5), r"Stack"),
        (lambda: F.concatenate([x, leaf(np.ones((3, 3)))], axis=1), r"Concatenate.*\(2, 3\).*\(3, 3\)"),
        (lambda: F.stack([x, leaf(np.ones(3))]), r"stack.*\(2, 3\).*\(3,\)"),
        (lambda: leaf(np.ones((0, 3))).max(axis=0), r"max.*zero-length"),
    ):
        with pytest.raises(ValueError, match=pattern):
            op()


def test_bad_reshape_is_named():
    x = leaf(np.ones((2, 3)))
    for shape in ((4, 2), (-1, 4), (-1, -1), (0, -1)):
        with pytest.raises(ValueError, match=r"reshape.*\(2, 3\).*6 elements"):
            x.reshape(shape)


def test_index_errors_are_named():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(IndexError, match=r"GetItem.*\(2, 3\)"):
        x[5]
    with pytest.raises(IndexError, match=r"GetItem.*\(2, 3\)"):
        x[np.array([0, 2])]
    w = leaf(np.ones((4, 2)))
    with pytest.raises(IndexError, match=r"embedding: id 4 .*\[0, 4\).*\(4, 2\)"):
        F.embedding(np.array([0, 4]), w)
    with pytest.raises(IndexError, match=r"embedding: id -1"):
        F.embedding(np.array([-1]), w)
    with pytest.raises(TypeError, match=r"embedding: ids must be integers.*float"):
        F.embedding(np.array([0.0]), w)
    logits = leaf(np.zeros((2, 3)))
    with pytest.raises(IndexError, match=r"cross_entropy: target 3 .*\[0, 3\)"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(IndexError, match=r"cross_entropy: target -2"):
        F.cross_entropy(logits, np.array([-2, 0]))
    with pytest.raises(ValueError, match=r"cross_entropy.*\(2, 3\).*\(2,\).*\(3,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be integers"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))


def test_other_bad_arguments_are_named():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(TypeError, match="masked_fill: mask must be boolean"):
        x.masked_fill(np.ones((2, 3)), 0.0)
    with pytest.raises(ValueError, match=r"masked_fill.*\(4,\).*\(2, 3\)"):
        x.masked_fill(np.ones(4, dtype=bool), 0.0)
    with pytest.raises(TypeError, match="where: condition must be boolean"):
        F.where(np.ones((2, 3)), x, x)
    with pytest.raises(TypeError, match="pow"):
        x**x
    with pytest.raises(ValueError, match=r"linear.*\(2, 3\).*\(4, 4\)"):
        F.linear(x, leaf(np.ones((4, 4))))
    with pytest.raises(ValueError, match=r"layer_norm: weight of shape \(2,\)"):
        F.layer_norm(x, leaf(np.ones(2)))
    with pytest.raises(ValueError, match="dropout: p must be in"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"item\(\).*\(2, 3\)"):
        x.item()


# ---- in-place changes after recording (PyTorch's version counter) -------------------------------------------


def test_an_input_changed_in_place_after_recording_makes_backward_refuse():
    """y = x * w records w; changing w in place through the tensor before backward would give x the gradient
    of the new w: backward raises PyTorch's error, naming the shape and the operation."""
    x, w = leaf(np.ones(3)), leaf(np.full(3, 2.0))
    y = (x * w).sum()
    w.data -= 1.0  # in place: the same array, changed (SGD's update)
    with pytest.raises(
        RuntimeError,
        match=r"modified by an inplace operation: \[float64 tensor of shape \(3,\)\], an input of Mul, "
        r"is at version 1; expected version 0",
    ):
        y.backward()
    # the same through tl.grad, and through t[...] = v inside no_grad (PyTorch's way to set weights)
    y = (x * w).sum()
    with tl.no_grad():
        w[...] = 5.0
    assert np.all(w.data == 5.0)
    with pytest.raises(RuntimeError, match="is at version 2; expected version 1"):
        tl.grad(y, [x])
    # a tensor that records refuses the write itself, as PyTorch's leaves do
    with pytest.raises(RuntimeError, match=r"shape \(3,\) that requires grad is being used in an in-place"):
        w[0] = 1.0


def test_updates_after_backward_and_new_arrays_are_not_refused():
    """Optimizers change parameters after backward (the graph is gone): nothing to refuse. A new array
    (t.data = other) leaves the recorded one as it was, so the gradient is the recorded computation's."""
    x, w = leaf(np.ones(3)), leaf(np.full(3, 2.0))
    for _ in range(3):  # forward, backward, update in place, again
        (x * w).sum().backward()
        w.data -= 0.1 * w.grad
        x.zero_grad(), w.zero_grad()
    np.testing.assert_allclose(w.data, 2.0 - 0.3)
    y = (x * w).sum()
    recorded = w.data.copy()
    w.data = np.zeros(3)  # rebinding: the Mul kept the array it saw
    y.backward()
    np.testing.assert_allclose(x.grad, recorded)
    plain = Tensor(np.zeros(2))  # no gradient: t[...] = v is plain NumPy assignment
    plain[1] = Tensor(3.0)
    plain[np.array([0])] = 1.0
    np.testing.assert_array_equal(plain.data, [1.0, 3.0])
