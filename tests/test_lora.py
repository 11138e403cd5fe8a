"""LoRA (appendix E): initialisation, merged == adapted, gradients only to A and B, gradcheck, frozen
parameters untouched by AdamW, and the book's trainable-parameter count for GPT-2 124M."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import GPTConfig, GPTModel, Tensor, gradcheck
from tinygrad_llm.finetune import (
    LinearWithLoRA,
    LoRALayer,
    add_classification_head,
    count_trainable_parameters,
    freeze,
    lora_parameter_count,
    merge_lora,
    replace_linear_with_lora,
)
from tinygrad_llm.nn import Linear
from tinygrad_llm.optim import AdamW

CONFIG = GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)


def _randomise_b(model, seed=0):
    """B starts at zero (the adapted model equals the base); give it values so the adapters matter."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith(".B"):
            p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) * 0.1


def test_lora_layer_init_and_zero_start():
    tl.manual_seed(0)
    layer = LoRALayer(64, 10, rank=4, alpha=8)
    assert layer.A.shape == (64, 4) and layer.B.shape == (4, 10)
    assert layer.scale == 2.0
    assert np.all(layer.B.data == 0)
    bound = 1 / math.sqrt(4)  # torch's kaiming_uniform_(a=sqrt(5)) on (in, rank): fan_in = rank
    assert np.abs(layer.A.data).max() <= bound and np.abs(layer.A.data).max() > 0.8 * bound
    linear = Linear(64, 10)
    x = Tensor(np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32))
    np.testing.assert_array_equal(LinearWithLoRA(linear, 4, 8)(x).data, linear(x).data)


def test_merged_model_equals_adapted_model():
    tl.manual_seed(1)
    model = GPTModel(CONFIG).eval()
    add_classification_head(model, 3)
    freeze(model)
    replace_linear_with_lora(model, rank=4, alpha=8)
    _randomise_b(model)
    ids = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (2, 8))
    adapted = model(ids).data.copy()
    merge_lora(model)
    assert not any(isinstance(m, LinearWithLoRA) for m in model.modules())
    merged = model(ids).data
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5)
    # the merged state dict loads into a plain model of the same architecture
    plain = GPTModel(CONFIG).eval()
    add_classification_head(plain, 3)
    plain.load_state_dict(model.state_dict())
    np.testing.assert_allclose(plain(ids).data, adapted, rtol=1e-5, atol=1e-5)


def test_split_qkv_lora_equals_three_separate_loras():
    """A fused (C, 3C) projection with one LoRA per block computes what three adapted (C, C) Linears do."""
    tl.manual_seed(3)
    fused = Linear(6, 9, bias=True)
    adapted = LinearWithLoRA(fused, rank=2, alpha=4, n_splits=3)
    _randomise_b(adapted)
    x = Tensor(np.random.default_rng(4).standard_normal((2, 5, 6)).astype(np.float32))
    pieces = []
    for j, lora in enumerate(adapted.lora):
        w = fused.weight.data[3 * j : 3 * j + 3]  # (3, 6): block j of the fused weight
        pieces.append(
            x.data @ w.T + fused.bias.data[3 * j : 3 * j + 3] + lora.scale * (x.data @ lora.A.data @ lora.B.data)
        )
    np.testing.assert_allclose(adapted(x).data, np.concatenate(pieces, axis=-1), rtol=1e-5, atol=1e-6)


def test_gradients_flow_only_to_lora_parameters():
    tl.manual_seed(5)
    model = GPTModel(CONFIG)
    freeze(model)
    replace_linear_with_lora(model, rank=2, alpha=2)
    _randomise_b(model)
    ids = np.random.default_rng(6).integers(0, CONFIG.vocab_size, (2, 8))
    tl.functional.cross_entropy(model(ids), np.roll(ids, -1, axis=1)).backward()
    for name, p in model.named_parameters():
        is_adapter = name.endswith((".A", ".B"))
        assert p.requires_grad == is_adapter, name
        if is_adapter:
            assert p.grad is not None and np.abs(p.grad).sum() > 0, name
        else:
            assert p.grad is None, name


def test_gradcheck_through_linear_with_lora():
    tl.manual_seed(7)
    layer = LinearWithLoRA(Linear(5, 6), rank=3, alpha=6, n_splits=2).double()
    _randomise_b(layer)
    x = Tensor(np.random.default_rng(8).standard_normal((2, 4, 5)), requires_grad=True, dtype=np.float64)
    params = [layer.linear.weight, layer.linear.bias] + [p for m in layer.lora for p in (m.A, m.B)]

    def fn(x, *ps):
        return layer(x)

    assert gradcheck(fn, [x, *params])


def test_frozen_parameters_get_no_update_and_no_optimizer_state():
    tl.manual_seed(9)
    model = GPTModel(CONFIG)
    freeze(model)
    replace_linear_with_lora(model, rank=2, alpha=2)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # frozen ones included on purpose
    ids = np.random.default_rng(10).integers(0, CONFIG.vocab_size, (2, 8))
    for _ in range(2):
        optimizer.zero_grad()
        tl.functional.cross_entropy(model(ids), np.roll(ids, -1, axis=1)).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if name.endswith((".A", ".B")):
            assert p in optimizer.state and not np.array_equal(p.data, before[name]), name
        else:
            assert p not in optimizer.state, name
            np.testing.assert_array_equal(p.data, before[name], err_msg=name)


def test_trainable_parameter_count_matches_book_for_gpt2_small():
    """The book: 2,666,528 trainable parameters for GPT-2 124M, rank 16, a 2-class head."""
    config = GPTConfig.preset("gpt2-small")
    assert lora_parameter_count(config, rank=16, num_classes=2) == 2_666_528
    # one LoRA on the fused (768 -> 2304) projection: 16 * (768 + 2304) per block instead of the book's
    # 3 * 16 * (768 + 768), i.e. 16 * 2 * 768 fewer per block: 2,371,616 in all
    assert lora_parameter_count(config, rank=16, num_classes=2, split_qkv=False) == 2_666_528 - 12 * 16 * 2 * 768


@pytest.mark.parametrize("split_qkv", [True, False])
def test_parameter_count_formula_matches_a_real_model(split_qkv):
    model = GPTModel(CONFIG)
    add_classification_head(model, 2)
    freeze(model)
    replace_linear_with_lora(model, rank=3, alpha=3, split_qkv=split_qkv)
    assert count_trainable_parameters(model) == lora_parameter_count(CONFIG, 3, 2, split_qkv=split_qkv)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(4, 4, rank=0, alpha=1)
    with pytest.raises(TypeError, match="Linear"):
        LinearWithLoRA(object(), 2, 2)
    with pytest.raises(ValueError, match="equal blocks"):
        LinearWithLoRA(Linear(4, 10), 2, 2, n_splits=3)


def test_tied_output_head_is_left_alone():
    model = GPTModel(GPTConfig(**{**CONFIG.to_dict(), "tie_weights": True}))
    freeze(model)
    replace_linear_with_lora(model, rank=2, alpha=2)
    assert isinstance(model.out_head, Linear) and model.out_head.weight is model.tok_emb.weight
    merge_lora(model)
    assert model.out_head.weight is model.tok_emb.weight
