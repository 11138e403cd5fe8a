"""The GPT model: parameter counts, configuration, shapes, errors, KV-cache logits, whole-model gradcheck."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.model import (
    PRESETS,
    GPTConfig,
    GPTModel,
    KVCache,
    MultiHeadAttention,
    TransformerBlock,
    count_parameters,
    estimate_memory,
)


def formula(cfg: GPTConfig, tied: bool) -> int:
    """The parameter count written out independently of the library's count_parameters."""
    C, V, T, L = cfg.emb_dim, cfg.vocab_size, cfg.context_length, cfg.n_layers
    per_block = (
        3 * C * C
        + (3 * C if cfg.qkv_bias else 0)  # W_qkv
        + C * C
        + C  # out_proj
        + (C * 4 * C + 4 * C)
        + (4 * C * C + C)  # ff.layers.0 and ff.layers.2
        + 4 * C  # norm1 and norm2: scale + shift each
    )
    return V * C + T * C + L * per_block + 2 * C + (0 if tied else V * C)


def test_gpt2_small_parameter_counts():
    cfg = GPTConfig.preset("gpt2-small")
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers, cfg.vocab_size, cfg.context_length) == (768, 12, 12, 50257, 1024)
    assert cfg.drop_rate == 0.1 and cfg.qkv_bias is False and cfg.tie_weights is False
    assert cfg.num_parameters() == 163_009_536 == formula(cfg, tied=False)
    assert cfg.num_parameters(tied=True) == 124_412_160 == formula(cfg, tied=True)


# GPT-2's published sizes (Hugging Face checkpoints: tied head, qkv_bias=True)
PUBLISHED = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_match_published_gpt2_sizes(name):
    cfg = GPTConfig.preset(name)
    assert cfg.vocab_size == 50257 and cfg.context_length == 1024
    assert count_parameters(cfg, tied=False) == formula(cfg, tied=False)
    assert count_parameters(cfg, tied=True) == formula(cfg, tied=True)
    with_bias = GPTConfig.preset(name, qkv_bias=True)
    assert with_bias.num_parameters(tied=True) == PUBLISHED[name]
    assert cfg.num_parameters(tied=True) == PUBLISHED[name] - 3 * cfg.emb_dim * cfg.n_layers


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(tie_weights=True),
        dict(qkv_bias=True),
        dict(qkv_bias=True, tie_weights=True),
    ],
)
def test_formula_equals_allocated_model(overrides):
    cfg = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=3, n_layers=2, **overrides)
    model = GPTModel(cfg)
    tied = cfg.tie_weights
    assert model.num_parameters() == cfg.num_parameters() == formula(cfg, tied)
    assert sum(v.size for v in model.state_dict().values()) == formula(cfg, tied)
    if tied:
        assert model.out_head.weight is model.tok_emb.weight
        assert "out_head.weight" not in model.state_dict()
    for name in ("tiny", "mini"):
        small = GPTModel(GPTConfig.preset(name, **overrides))
        assert small.num_parameters() == formula(small.config, tied)


def test_block_parameter_names_are_the_books():
    model = GPTModel(GPTConfig.preset("tiny", qkv_bias=True))
    names = list(model.state_dict())
    assert names[:2] == ["tok_emb.weight", "pos_emb.weight"] and names[-3:] == [
        "final_norm.scale",
        "final_norm.shift",
        "out_head.weight",
    ]
    block = [n[len("trf_blocks.0.") :] for n in names if n.startswith("trf_blocks.0.")]
    assert block == [
        "att.W_qkv.weight",
        "att.W_qkv.bias",
        "att.out_proj.weight",
        "att.out_proj.bias",
        "ff.layers.0.weight",
        "ff.layers.0.bias",
        "ff.layers.2.weight",
        "ff.layers.2.bias",
        "norm1.scale",
        "norm1.shift",
        "norm2.scale",
        "norm2.shift",
    ]
    C = model.config.emb_dim
    assert model.state_dict()["trf_blocks.0.att.W_qkv.weight"].shape == (3 * C, C)


def test_config_json_round_trip_and_errors():
    cfg = GPTConfig.preset("mini", tie_weights=True)
    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert GPTConfig.from_json(cfg.to_json()) == cfg
    assert set(cfg.to_dict()) == {
        "vocab_size",
        "context_length",
        "emb_dim",
        "n_heads",
        "n_layers",
        "drop_rate",
        "qkv_bias",
        "tie_weights",
    }
    with pytest.raises(ValueError, match="unknown keys.*n_embd"):
        GPTConfig.from_dict(dict(cfg.to_dict(), n_embd=3))
    with pytest.raises(ValueError, match="unknown GPT preset 'gpt5'"):
        GPTConfig.preset("gpt5")
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig(n_layers=0)
    assert {"gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "mini", "small-cpu"} <= set(PRESETS)


def test_model_accepts_book_dict_config():
    book = {
        "vocab_size": 50,
        "context_length": 8,
        "emb_dim": 16,
        "n_heads": 2,
        "n_layers": 1,
        "drop_rate": 0.1,
        "qkv_bias": False,
    }
    model = GPTModel(book)
    assert model.config == GPTConfig(**book)


def test_forward_shapes_and_inputs():
    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("tiny")).eval()
    ids = np.random.default_rng(0).integers(0, 256, size=(3, 7))
    logits = model(ids)
    assert logits.shape == (3, 7, 256) and logits.dtype == np.float32
    np.testing.assert_array_equal(model(tl.Tensor(ids)).data, logits.data)
    np.testing.assert_array_equal(model(ids.astype(np.int32)).data, logits.data)
    # causal: a position's logits do not depend on later tokens
    changed = ids.copy()
    changed[:, 4:] = (changed[:, 4:] + 1) % 256
    np.testing.assert_allclose(model(changed).data[:, :4], logits.data[:, :4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(model(changed).data[:, 4:], logits.data[:, 4:])


def test_forward_errors_are_clear():
    model = GPTModel(GPTConfig.preset("tiny"))
    with pytest.raises(IndexError, match=r"token id 256 is outside the vocabulary \[0, 256\)"):
        model(np.array([[1, 256]]))
    with pytest.raises(IndexError, match="token id -1"):
        model(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="65 tokens.*context length 64"):
        model(np.zeros((1, 65), dtype=np.int64))
    with pytest.raises(ValueError, match="shape \\(batch, sequence\\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(TypeError, match="integers"):
        model(np.zeros((1, 5)))
    with pytest.raises(RuntimeError, match="no_grad"):
        model(np.zeros((1, 5), dtype=np.int64), cache=model.new_cache())


def test_dropout_active_in_train_mode_only():
    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("mini"))
    ids = np.arange(20)[None, :]
    a, b = model(ids).data, model(ids).data
    assert not np.allclose(a, b)  # two different dropout masks
    model.eval()
    np.testing.assert_array_equal(model(ids).data, model(ids).data)


def test_kv_cache_logits_equal_full_forward():
    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("tiny")).eval()
    ids = np.random.default_rng(1).integers(0, 256, size=(2, 64))
    full = model(ids).data
    with tl.no_grad():
        cache = model.new_cache()
        pieces = [model(ids[:, :10], cache=cache).data]  # prefill
        for t in range(10, 64):
            pieces.append(model(ids[:, t : t + 1], cache=cache).data)  # one token per step
        assert cache.length == 64
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="after 64 cached positions.*context length 64"):
            model(ids[:, :1], cache=cache)
        cache.reset()
        assert cache.length == 0
        np.testing.assert_allclose(model(ids[:, :5], cache=cache).data, full[:, :5], rtol=1e-5, atol=1e-5)


def test_kv_cache_refuses_overflow_directly():
    cache = KVCache(n_layers=1, max_length=4)
    k = np.zeros((1, 2, 3, 8), np.float32)
    cache.layers[0].update(k, k)
    with pytest.raises(RuntimeError, match="KV cache is full.*holds 3 positions.*capacity of 4"):
        cache.layers[0].update(k, k)


def test_attention_is_causal_multihead():
    tl.manual_seed(0)
    att = MultiHeadAttention(d_in=6, d_out=8, context_length=5, dropout=0.0, num_heads=2, qkv_bias=True)
    x = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(np.float32)
    y = att(tl.Tensor(x)).data
    assert y.shape == (2, 5, 8)
    # reference in plain numpy
    qkv = x @ att.W_qkv.weight.data.T + att.W_qkv.bias.data
    q, k, v = np.split(qkv, 3, axis=-1)
    heads = lambda a: a.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    s = q @ k.transpose(0, 1, 3, 2) / 2.0
    s = np.where(np.triu(np.ones((5, 5), bool), 1), -np.inf, s)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    ctx = (w @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    np.testing.assert_allclose(y, ctx @ att.out_proj.weight.data.T + att.out_proj.bias.data, rtol=1e-5, atol=1e-5)


def test_memory_estimate():
    cfg = GPTConfig.preset("gpt2-small")
    mem = estimate_memory(cfg, batch_size=8, context_length=1024)
    n = cfg.num_parameters()
    assert mem["parameters"] == 4 * n and mem["gradients"] == 4 * n and mem["optimizer"] == 8 * n
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    half = estimate_memory(cfg, batch_size=4, context_length=1024)
    assert half["activations"] * 2 == mem["activations"]
    assert estimate_memory(cfg, 1, 256, optimizer="sgd")["optimizer"] == 4 * n
    assert 5e9 < mem["activations"] < 5e10  # gpt2-small at batch 8 x 1024: tens of GB of activations
    with pytest.raises(ValueError, match="exceeds"):
        estimate_memory(cfg, 1, 2048)


def tiny_float64_model(tie: bool):
    tl.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=11, context_length=6, emb_dim=8, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True, tie_weights=tie
    )
    model = GPTModel(cfg).double()
    rng = np.random.default_rng(0)
    for p in model.parameters():  # move LayerNorm's scale/shift off 1/0 so their gradients are generic
        p.data[...] += 0.1 * rng.standard_normal(p.shape)
    return model, rng.integers(0, 11, size=(2, 5)), rng.integers(0, 11, size=(2, 5))


@pytest.mark.slow
@pytest.mark.parametrize("tie", [False, True])
def test_whole_model_gradcheck_float64(tie):
    """Every parameter of a tiny GPT (dropout off, qkv bias on) against central differences in float64.

    On the NumPy reference path: its thousands of tiny forwards are where compiled kernels cost launch
    overhead; the next test holds the kernels' gradients equal to the reference's on the same model.
    """
    model, ids, targets = tiny_float64_model(tie)
    params = model.parameters()
    assert len(params) == 2 + 2 * 12 + 2 + (0 if tie else 1)  # embeddings, 12 per block, final norm, head
    with dispatch.use("numpy"):
        assert tl.gradcheck(lambda *ps: model(ids), params)  # logits (B, T, V), every parameter
        assert tl.gradcheck(lambda *ps: F.cross_entropy(model(ids), targets), params)


def test_whole_model_gradients_same_with_kernels():
    model, ids, targets = tiny_float64_model(tie=True)
    grads = {}
    for mode in ("numpy", "auto"):
        model.zero_grad()
        with dispatch.use(mode):
            F.cross_entropy(model(ids), targets).backward()
        grads[mode] = {name: p.grad.copy() for name, p in model.named_parameters()}
    for name, reference in grads["numpy"].items():
        np.testing.assert_allclose(grads["auto"][name], reference, rtol=1e-10, atol=1e-12, err_msg=name)


def test_transformer_block_preserves_shape():
    cfg = GPTConfig.preset("tiny")
    block = TransformerBlock(cfg)
    x = tl.Tensor(np.random.default_rng(0).standard_normal((2, 4, cfg.emb_dim)).astype(np.float32))
    assert block(x).shape == (2, 4, cfg.emb_dim)


def test_loss_helpers():
    from tinygrad_llm.train import calc_loss_batch, calc_loss_loader, perplexity

    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("tiny")).eval()
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (2, 8)), rng.integers(0, 256, (2, 8))) for _ in range(4)]
    losses = []
    for x, y in batches:
        logits = model(x).data.astype(np.float64)  # (B, T, V)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        want = (lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]).mean()
        got = calc_loss_batch(x, y, model)
        assert got.shape == () and got.requires_grad
        np.testing.assert_allclose(got.item(), want, rtol=1e-5)
        losses.append(want)
    np.testing.assert_allclose(calc_loss_loader(batches, model), np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(calc_loss_loader(batches, model, num_batches=2), np.mean(losses[:2]), rtol=1e-5)
    np.testing.assert_allclose(calc_loss_loader(iter(batches), model, num_batches=10), np.mean(losses), rtol=1e-5)
    assert np.isnan(calc_loss_loader([], model))
    assert abs(np.mean(losses) - np.log(256)) < 3  # untrained: near the uniform guess, log(vocab)
    assert perplexity(np.log(256.0)) == pytest.approx(256.0)
    assert perplexity(tl.Tensor(np.float32(0.0))) == 1.0
