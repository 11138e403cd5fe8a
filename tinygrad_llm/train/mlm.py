"""Masked-LM pretraining of the encoder (``tinygrad-llm train --arch bert``): the pieces the training command
swaps in for the GPT's; the loop, run folder, checkpoints, resume and plot are the GPT's own.

    tokenizer = with_bert_tokens(tokenizer)                       # + [PAD] [CLS] [SEP] [MASK]
    model = build_masked_lm(GPTConfig.preset("mini", ...), tokenizer)   # a BERT of the GPT's size
    train_set, val_set = mlm_datasets(train_ids, val_ids, tokenizer, context_length=64, seed=1337)
    Trainer(model, train_set, val_set, ...).fit()                 # loss: cross_entropy(model(inputs), labels)

The loss is the mean over the masked positions only (labels -100 elsewhere), so it is not comparable with
a GPT's next-token loss on the same text: BERT sees both sides of every masked token.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.data.mlm import MLMDataset, mask_tokens
from tinygrad_llm.model.bert import BertConfig, BertForMaskedLM
from tinygrad_llm.tensor import no_grad

if TYPE_CHECKING:
    from tinygrad_llm.model.config import GPTConfig
    from tinygrad_llm.tokenizer.base import Tokenizer


def build_masked_lm(
    gpt_config: GPTConfig, tokenizer: Tokenizer, folder: str | os.PathLike | None = None, device: str | None = None
) -> BertForMaskedLM:
    """A BertForMaskedLM of ``gpt_config``'s size (width, depth, heads, context, dropout) for ``tokenizer``'s
    vocabulary; or, from ``folder`` (a checkpoint to resume, a run or Hugging Face BERT folder to start
    from), that model, whose vocabulary must be the tokenizer's."""
    if folder is not None:
        model = BertForMaskedLM.from_pretrained(folder, device=device).train()
        if model.config.vocab_size != tokenizer.n_vocab:
            raise ValueError(
                f"{folder}: the BERT has {model.config.vocab_size} token ids, the {tokenizer.name} "
                f"tokenizer {tokenizer.n_vocab}: use the tokenizer it was trained with"
            )
        return model
    model = BertForMaskedLM(BertConfig.from_gpt_config(gpt_config, pad_token_id=tokenizer.pad_id))
    if device:
        model.to(device)
    return model


def mlm_datasets(
    train_ids: Sequence[int], val_ids: Sequence[int], tokenizer: Tokenizer, context_length: int, seed: int
) -> tuple[MLMDataset, MLMDataset]:
    """(training windows, masked afresh at every batch; validation windows, masked the same at every
    evaluation). Training windows overlap by half, as the GPT's."""
    span = context_length - 2
    train_set = MLMDataset(train_ids, tokenizer, context_length, stride=max(span // 2, 1), seed=seed)
    val_set = MLMDataset(val_ids, tokenizer, context_length, fixed=True, seed=seed)
    return train_set, val_set


def fill_mask_sample(
    model: BertForMaskedLM, tokenizer: Tokenizer, text: str, context_length: int, seed: int = 0
) -> str:
    """Mask a line of ``text`` by the BERT recipe's 15% (all as [MASK]) and show what the model fills in."""
    ids = tokenizer.encode(text, allowed_special=set(), disallowed_special=())[: context_length - 2]
    if not ids:
        return "(no text to mask)"
    window = np.asarray([[tokenizer.cls_id, *ids, tokenizer.sep_id]], dtype=np.int64)
    specials = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id]
    _, labels = mask_tokens(window, np.random.default_rng(seed), tokenizer.mask_id, tokenizer.base.n_vocab, specials)
    chosen = labels != -100
    masked = np.where(chosen, tokenizer.mask_id, window)
    was_training = model.training
    model.eval()
    with no_grad():
        predicted = model(masked).data.argmax(axis=-1)  # (1, T, V) -> (1, T)
    model.train(was_training)
    filled = np.where(chosen, predicted, window)
    right = int((filled[chosen] == window[chosen]).sum())
    show = lambda row: tokenizer.decode(row[0, 1:-1].tolist())  # noqa: E731 (without [CLS] and [SEP])
    return (
        f"original: {show(window)}\nmasked:   {show(masked)}\nfilled:   {show(filled)}\n"
        f"{right} of {int(chosen.sum())} masked tokens right"
    )
