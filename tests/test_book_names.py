"""The book's names, where its reader looks for them, doing what the book's do (the rest are tested beside
their modules: generate_text_simple in test_generate, BPETokenizerSimple in test_tokenizer,
load_weights_into_gpt in test_pretrained, plot_values through finetune-dpo's plots)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.data import DataLoader


def _windows(n=24, length=8, vocab=32, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, vocab, size=(n, length + 1))

    class Windows:
        def __len__(self):
            return n

        def __getitem__(self, i):
            return data[i, :-1], data[i, 1:]

    return Windows()


def _model(vocab=32):
    tl.manual_seed(0)
    return tl.GPTModel(
        tl.GPTConfig(vocab_size=vocab, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    )


def test_train_names_import_from_tinygrad_llm_train():
    from tinygrad_llm.train import (
        calc_loss_batch,
        calc_loss_loader,
        find_highest_gradient,
        plot_losses,
        plot_values,
        train_model,
        train_model_simple,
    )
    from tinygrad_llm.train.simple import train_model_simple as the_loop

    assert train_model_simple is the_loop
    assert all(
        callable(f)
        for f in (calc_loss_batch, calc_loss_loader, find_highest_gradient, plot_losses, plot_values, train_model)
    )


def test_appendix_d_train_model_warms_up_decays_and_clips(capsys):
    from tinygrad_llm.train import find_highest_gradient, train_model

    model = _model()
    loader = DataLoader(_windows(), batch_size=4, shuffle=True, seed=1)  # 6 steps per epoch
    optimizer = tl.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    assert find_highest_gradient(model) is None  # no gradient yet
    train_losses, val_losses, tokens_seen, lrs = train_model(
        model,
        loader,
        loader,
        optimizer,
        None,
        n_epochs=2,
        eval_freq=4,
        eval_iter=1,
        start_context=None,
        tokenizer=None,
        warmup_steps=3,
        initial_lr=1e-4,
        min_lr=1e-5,
    )
    assert len(lrs) == 12 and len(train_losses) == len(val_losses) == len(tokens_seen) == 3  # steps 0, 4, 8
    np.testing.assert_allclose(lrs[:3], [1e-4, 1e-4 + (1e-2 - 1e-4) / 3, 1e-4 + 2 * (1e-2 - 1e-4) / 3])
    assert lrs[3] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(
        1e-5 + (1e-2 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 8 / 9))
    )
    assert "(Iter 000008)" in capsys.readouterr().out
    highest = find_highest_gradient(model)
    assert highest == max(float(p.grad.max()) for p in model.parameters() if p.grad is not None)


def test_classify_review_is_classify_text_with_the_books_labels():
    from tinygrad_llm.finetune import add_classification_head, classify_review, classify_text

    tokenizer = tl.get_tokenizer("byte")
    model = tl.GPTModel(tl.GPTConfig(vocab_size=257, context_length=16, emb_dim=16, n_heads=2, n_layers=1))
    add_classification_head(model, 2)
    for text in ("You are a winner! Claim your prize", "See you at dinner?"):
        label = classify_review(text, model, tokenizer, max_length=16)
        assert label in ("spam", "not spam")
        assert label == classify_text(text, model, tokenizer, max_length=16, class_names=("not spam", "spam"))
