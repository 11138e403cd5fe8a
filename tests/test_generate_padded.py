"""Padding masks for GPT batches: prompts of different lengths, left-padded into one batch, decode to the same
tokens as each prompt alone (greedy), with and without the KV cache, across the sliding window."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.generate import generate, pad_prompts
from tinygrad_llm.model import GPTConfig, GPTModel

PROMPTS = [[5, 9, 2, 7, 1, 3, 8], [4], [6, 6, 1], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]


@pytest.fixture(scope="module")
def model():
    tl.manual_seed(3)
    return GPTModel(GPTConfig(vocab_size=13, context_length=12, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0))


def test_pad_prompts_pads_on_the_left():
    ids, mask = pad_prompts([[1, 2, 3], [7]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 7]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_padded_generation_equals_each_prompt_alone(model, use_cache):
    ids, mask = pad_prompts(PROMPTS, pad_id=0)
    new = 8  # the longest prompt (10) + 8 passes the context of 12: the window slides, the cache refills
    out = generate(model, ids, new, attention_mask=mask, use_cache=use_cache, context_size=12)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(model, np.array([prompt]), new, use_cache=use_cache, context_size=12)
        assert out[row, -new:].tolist() == alone[0, -new:].tolist(), row


def test_padded_rows_logits_equal_alone(model):
    """The model itself: a left-padded row's logits at its real positions are the row's own."""
    ids, mask = pad_prompts(PROMPTS, pad_id=0)
    with tl.no_grad():
        batched = model.eval()(ids, attention_mask=mask).data
        for row, prompt in enumerate(PROMPTS):
            alone = model(np.array([prompt])).data[0]
            np.testing.assert_allclose(batched[row, -len(prompt) :], alone, rtol=1e-5, atol=1e-5)


def test_without_a_mask_padding_changes_the_tokens(model):
    """The check above can fail: the same batch without its mask decodes the short prompts differently."""
    ids, mask = pad_prompts(PROMPTS, pad_id=0)
    assert not np.array_equal(generate(model, ids, 6), generate(model, ids, 6, attention_mask=mask))


def test_right_padding_is_refused(model):
    with pytest.raises(ValueError, match="pad on the left"):
        generate(model, np.array([[1, 2, 0]]), 2, attention_mask=np.array([[1, 1, 0]]))
