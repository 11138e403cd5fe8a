"""tinygrad_llm.grad(outputs, inputs, grad_outputs=None, retain_graph=False): gradients returned, .grad untouched."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F


def mlp(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = tl.Tensor(rng.standard_normal((4, 3)), requires_grad=True, dtype=dtype)
    w = tl.Tensor(rng.standard_normal((3, 5)), requires_grad=True, dtype=dtype)
    b = tl.Tensor(rng.standard_normal(5), requires_grad=True, dtype=dtype)
    return x, w, b


def forward(x, w, b):
    h = F.gelu(x @ w + b)  # w and x used twice: their gradients are sums over two uses
    return (h * h).sum() + (x @ w).mean()


def test_grad_matches_backward_bit_for_bit_and_leaves_grad_untouched():
    x, w, b = mlp()
    w.grad = np.full(w.shape, 7.0)  # a gradient already accumulated: grad() must neither read nor change it
    gx, gw, gb = tl.grad(forward(x, w, b), [x, w, b])
    assert x.grad is None and b.grad is None
    np.testing.assert_array_equal(w.grad, np.full(w.shape, 7.0))
    w.grad = None
    forward(x, w, b).backward()
    for got, leaf in zip((gx, gw, gb), (x, w, b)):
        assert isinstance(got, tl.Tensor) and not got.requires_grad and got.shape == leaf.shape
        np.testing.assert_array_equal(got.data, leaf.grad)
        assert not np.shares_memory(got.data, leaf.grad)


def test_one_tensor_in_one_tensor_out_and_an_intermediate_input():
    x = tl.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * x
    h.retain_grad()
    y = (h * 3.0).sum()
    gh, gx = tl.grad(y, [h, x], retain_graph=True)
    np.testing.assert_array_equal(gh.data, np.full(3, 3.0))  # dy/dh = 3
    np.testing.assert_array_equal(gx.data, 6.0 * x.data)  # dy/dx = 3 * 2x
    assert h.grad is None and x.grad is None  # retain_grad() keeps .grad for backward(), not for grad()
    (gx_alone,) = tl.grad(y, x)  # a single Tensor as inputs
    np.testing.assert_array_equal(gx_alone.data, gx.data)


def test_non_scalar_output_takes_grad_outputs_and_several_outputs_add_up():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x * x  # (2, 3): no gradient without grad_outputs
    v = np.arange(6.0).reshape(2, 3) - 2.0
    with pytest.raises(RuntimeError, match="one-element"):
        tl.grad(y, [x], retain_graph=True)
    (gx,) = tl.grad(y, [x], grad_outputs=v, retain_graph=True)  # a vector-Jacobian product: v * 2x
    np.testing.assert_array_equal(gx.data, v * 2.0 * x.data)
    z = x.sum()
    (gx,) = tl.grad([y, z], [x], grad_outputs=[v, None])  # d(sum(v * y) + z)/dx
    np.testing.assert_array_equal(gx.data, v * 2.0 * x.data + 1.0)
    with pytest.raises(ValueError, match="gradient of shape"):
        tl.grad(x * 2.0, [x], grad_outputs=np.ones(3))


def test_an_input_the_outputs_do_not_depend_on_gives_none():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    unused = tl.Tensor([5.0], requires_grad=True)
    gx, gu = tl.grad((x * 2.0).sum(), [x, unused])
    np.testing.assert_array_equal(gx.data, [2.0, 2.0])
    assert gu is None
    with pytest.raises(RuntimeError, match="does not require a gradient"):
        tl.grad((x * 2.0).sum(), [tl.Tensor([1.0])])


def test_the_graph_is_released_unless_retained_and_hooks_run():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.copy()))
    y = (x * x).sum()
    tl.grad(y, [x])
    np.testing.assert_array_equal(seen[0], [2.0, 4.0])
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        tl.grad(y, [x])


def test_grad_agrees_with_float64_central_differences():
    x, w, b = mlp(seed=3)
    grads = tl.grad(forward(x, w, b), [x, w, b])
    eps = 1e-6
    for leaf, g in zip((x, w, b), grads):
        numeric = np.zeros(leaf.shape)
        for i in np.ndindex(leaf.shape):
            saved = leaf.data[i]
            leaf.data[i] = saved + eps
            up = forward(x, w, b).item()
            leaf.data[i] = saved - eps
            down = forward(x, w, b).item()
            leaf.data[i] = saved
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g.data, numeric, rtol=1e-6, atol=1e-8)
