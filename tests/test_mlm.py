"""Masked-LM data: the BERT recipe (15% chosen; 80% [MASK], 10% random, 10% kept; specials never chosen;
labels only where chosen), checked statistically over many draws; the tokenizer with added special tokens."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tinygrad_llm.data import DataLoader
from tinygrad_llm.data.mlm import IGNORE_INDEX, MLMDataset, mask_tokens
from tinygrad_llm.tokenizer import get_tokenizer, load_tokenizer, with_bert_tokens

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """count ~ Binomial(n, p) within ``sigmas`` standard deviations (a false alarm once in ~1.7 million)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_masking_follows_the_recipe_in_proportion():
    rng = np.random.default_rng(0)
    specials = [100, 101, 102, 103]
    ids = rng.integers(0, 100, size=(400, 64))
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    ids[::3, -10:-1] = 100  # some [PAD]
    inputs, labels = mask_tokens(ids, rng, mask_id=103, n_ordinary=100, special_ids=specials)
    special = np.isin(ids, specials)
    chosen = labels != IGNORE_INDEX
    assert not (chosen & special).any()  # special tokens are never chosen
    assert np.array_equal(labels[chosen], ids[chosen])  # labels: the original token, only where chosen
    assert np.array_equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    n_candidates, n_chosen = int((~special).sum()), int(chosen.sum())
    assert within(n_chosen, n_candidates, 0.15)
    masked = int((inputs[chosen] == 103).sum())
    assert within(masked, n_chosen, 0.8)
    kept = int((inputs[chosen] == ids[chosen]).sum())
    # kept: 10%, plus the random replacements that drew the same token (0.1 / 100)
    assert within(kept, n_chosen, 0.1 + 0.1 / 100)
    replaced = inputs[chosen & (inputs != 103) & (inputs != ids)]
    assert within(len(replaced), n_chosen, 0.1 - 0.1 / 100)
    assert replaced.min() >= 0 and replaced.max() < 100  # random tokens are ordinary ones
    # uniform over the ordinary vocabulary: a chi-square-like check on 10 bins of 10 ids
    counts = np.bincount(replaced // 10, minlength=10)
    assert all(within(int(c), len(replaced), 0.1) for c in counts)


def test_at_least_one_label_and_none_when_all_special():
    rng = np.random.default_rng(1)
    inputs, labels = mask_tokens(
        np.array([[1, 5, 2]]), rng, mask_id=9, n_ordinary=8, special_ids=[1, 2], mlm_probability=1e-9
    )
    assert (labels != IGNORE_INDEX).sum() == 1 and labels[0, 1] == 5
    _, labels = mask_tokens(np.array([[1, 2]]), rng, mask_id=9, n_ordinary=8, special_ids=[1, 2])
    assert (labels == IGNORE_INDEX).all()


def test_tokenizer_with_bert_tokens_round_trips(tmp_path):
    tok = with_bert_tokens(get_tokenizer("char", text=TEXT))
    base = tok.base.n_vocab
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.n_vocab) == (
        base,
        base + 1,
        base + 2,
        base + 3,
        base + 4,
    )
    ids = tok.encode("[CLS]the [MASK] fox[SEP]")
    assert ids[0] == tok.cls_id and tok.mask_id in ids and ids[-1] == tok.sep_id
    assert tok.decode(ids) == "[CLS]the [MASK] fox[SEP]"
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode("[CLS]the [MASK] fox[SEP]") == ids and again.mask_id == tok.mask_id


def test_dataset_windows_and_fixed_evaluation_masks():
    tok = with_bert_tokens(get_tokenizer("byte"))
    ids = np.asarray(tok.encode(TEXT), dtype=np.int64)
    data = MLMDataset(ids, tok, context_length=16, fixed=True, seed=3)
    inputs, labels = data[2]
    window = data.window(2)
    assert inputs.shape == labels.shape == (16,) and window[0] == tok.cls_id and window[-1] == tok.sep_id
    assert np.array_equal(window[1:-1], ids[28:42])  # stride = 14 text tokens per window
    assert labels[0] == labels[-1] == IGNORE_INDEX
    again = data[2]
    assert np.array_equal(inputs, again[0]) and np.array_equal(labels, again[1])  # fixed: the same every time
    batch_inputs, batch_labels = next(iter(DataLoader(data, batch_size=4)))
    assert batch_inputs.shape == (4, 16) and np.array_equal(batch_labels[2], labels)
    with pytest.raises(ValueError, match="with_bert_tokens"):
        MLMDataset(ids, get_tokenizer("byte"), context_length=16)
