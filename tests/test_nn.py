"""nn: registration, named_parameters, state_dict round trips and errors, train/eval, tied weights, layers."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import nn


class TwoLayer(nn.Module):
    def __init__(self, tie: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(6, 4, bias=False)
        self.drop = nn.Dropout(0.5)
        self.blocks = nn.ModuleList([nn.LayerNorm(4), nn.LayerNorm(4)])
        if tie:
            self.extra = nn.Linear(6, 4, bias=False)
            self.extra.weight = self.fc2.weight  # shared

    def forward(self, x):
        return self.blocks[1](self.blocks[0](self.drop(self.fc2(self.act(self.fc1(x))))))


def test_registration_and_dotted_names():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "blocks.0.scale",
        "blocks.0.shift",
        "blocks.1.scale",
        "blocks.1.shift",
    ]
    assert m.num_parameters() == 4 * 6 + 6 + 6 * 4 + 4 * 4
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    m.fc1 = nn.Linear(4, 6, bias=False)  # re-assignment replaces, no stale entry
    assert [n for n, _ in m.named_parameters()][:2] == ["fc1.weight", "fc2.weight"]
    m.fc1 = None  # assigning a non-module unregisters
    assert "fc1.weight" not in dict(m.named_parameters())


def test_parameter_is_float_tensor_requiring_grad():
    p = nn.Parameter(np.zeros((2, 3), dtype=np.float32))
    assert isinstance(p, tl.Tensor) and p.requires_grad and p.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        nn.Parameter(np.zeros(3, dtype=np.int64))
    assert repr(p).startswith("Parameter(")


def test_module_needs_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(RuntimeError, match="super"):
        Bad()


def test_tied_parameters_counted_and_listed_once():
    m = TwoLayer(tie=True)
    names = [n for n, _ in m.named_parameters()]
    assert "extra.weight" not in names and names.count("fc2.weight") == 1
    assert m.num_parameters() == 4 * 6 + 6 + 6 * 4 + 4 * 4
    assert set(m.state_dict()) == set(names)
    # loading under the alias name fills the shared parameter
    sd = {k: v.copy() for k, v in m.state_dict().items()}
    sd["extra.weight"] = sd.pop("fc2.weight") + 1
    m.load_state_dict(sd)
    np.testing.assert_array_equal(m.extra.weight.data, sd["extra.weight"])
    assert m.extra.weight is m.fc2.weight


def test_state_dict_round_trip():
    tl.manual_seed(1)
    a = TwoLayer()
    tl.manual_seed(2)
    b = TwoLayer()
    x = tl.Tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32))
    a.eval(), b.eval()
    assert not np.allclose(a(x).data, b(x).data)
    identity = {id(p) for p in b.parameters()}
    result = b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    assert result == {"missing_keys": [], "unexpected_keys": []}
    np.testing.assert_array_equal(a(x).data, b(x).data)
    assert {id(p) for p in b.parameters()} == identity  # loaded in place: optimizers stay valid
    sd = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["fc1.weight"].shape == (6, 4)  # (out, in) as torch


def test_load_state_dict_errors_name_the_key_and_shapes():
    m = TwoLayer()
    sd = {k: v.copy() for k, v in m.state_dict().items()}
    bad = dict(sd, **{"fc1.weight": np.zeros((4, 6), np.float32)})
    with pytest.raises(ValueError, match=r"'fc1.weight'.*\(4, 6\).*\(6, 4\)"):
        m.load_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "fc2.weight"}
    with pytest.raises(KeyError, match="missing keys.*fc2.weight"):
        m.load_state_dict(missing)
    extra = dict(sd, **{"fc3.weight": np.zeros((1,), np.float32)})
    with pytest.raises(KeyError, match="unexpected keys.*fc3.weight"):
        m.load_state_dict(extra)
    result = m.load_state_dict(extra, strict=False)
    assert result["unexpected_keys"] == ["fc3.weight"]
    result = m.load_state_dict(missing, strict=False)
    assert result["missing_keys"] == ["fc2.weight"]
    # a failed load changes nothing
    before = m.fc1.weight.data.copy()
    with pytest.raises(ValueError):
        m.load_state_dict(dict(sd, **{"fc1.weight": sd["fc1.weight"] + 1, "fc1.bias": np.zeros(5, np.float32)}))
    np.testing.assert_array_equal(m.fc1.weight.data, before)


def test_train_eval_toggles_dropout():
    m = TwoLayer()
    assert m.training and all(mod.training for mod in m.modules())
    x = tl.Tensor(np.ones((64, 4), dtype=np.float32))
    h = m.act(m.fc1(x))
    tl.manual_seed(0)
    m.train()
    out = m.drop(h)
    assert (out.data == 0).any() and not np.allclose(out.data, h.data)
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    np.testing.assert_array_equal(m.drop(h).data, h.data)
    m.train()
    assert m.drop.training


def test_zero_grad_and_to_dtype():
    m = TwoLayer()
    loss = m(tl.Tensor(np.ones((2, 4), np.float32))).sum()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    params = m.parameters()
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    assert m.to("cpu").device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        m.to("tpu")


def test_linear_matches_numpy_and_torch_like_init():
    tl.manual_seed(0)
    layer = nn.Linear(256, 100)
    bound = 1 / np.sqrt(256)
    w = layer.weight.data
    assert w.shape == (100, 256) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound  # the std of U(-b, b)
    x = np.random.default_rng(1).standard_normal((2, 3, 256)).astype(np.float32)
    np.testing.assert_allclose(layer(tl.Tensor(x)).data, x @ w.T + layer.bias.data, rtol=1e-5, atol=1e-5)
    tl.manual_seed(0)
    again = nn.Linear(256, 100)
    np.testing.assert_array_equal(again.weight.data, w)  # seeded: reproducible


def test_embedding_layernorm_gelu():
    tl.manual_seed(0)
    emb = nn.Embedding(1000, 32)
    assert abs(emb.weight.data.std() - 1) < 0.05 and abs(emb.weight.data.mean()) < 0.05
    ids = np.array([[3, 999], [0, 3]])
    np.testing.assert_array_equal(emb(ids).data, emb.weight.data[ids])
    with pytest.raises(IndexError, match="1000"):
        emb(np.array([1000]))
    ln = nn.LayerNorm(5)
    assert [n for n, _ in ln.named_parameters()] == ["scale", "shift"]
    assert ln.weight is ln.scale and ln.bias is ln.shift
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32) * 4 + 2
    y = ln(tl.Tensor(x)).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-6)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-4)
    np.testing.assert_allclose(nn.GELU()(tl.Tensor(x)).data, F.gelu(tl.Tensor(x)).data)


def test_sequential_and_module_list():
    seq = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.GELU)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq(tl.Tensor(np.ones((4, 3), np.float32))).shape == (4, 2)
    with pytest.raises(TypeError, match="Module"):
        nn.ModuleList([3])
    assert "Linear(in_features=3" in repr(seq)
