"""Chapter 6 with the encoder: BERT classifies a message from its [CLS] position (``finetune-classifier --arch bert``).

    tokenizer = with_bert_tokens(get_tokenizer("byte"))
    train_set = BertSpamDataset(texts, labels, tokenizer)               # [CLS] message [SEP] [PAD] ...
    model = BertForSequenceClassification(BertConfig.from_gpt_config(GPTConfig.preset("tiny", ...), ...))
    set_trainable_bert(model, "all")
    ... classifier.train_classifier_simple(model, ...)                 # the GPT's loop: logits (B, classes)

Where the GPT reads the last token (the only one that has seen the whole message, behind a causal mask),
BERT reads the first: every position of a bidirectional encoder sees the whole message, and pretraining
never asks anything of [CLS], so the classifier makes it the sentence's summary. The padding is masked out
of attention ([PAD] ids, see BertForSequenceClassification), so a short message is read without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.finetune.spam_data import SpamDataset

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tinygrad_llm.model.bert import BertForSequenceClassification
    from tinygrad_llm.tokenizer.base import Tokenizer


class BertSpamDataset(SpamDataset):
    """Messages as ``[CLS] ids [SEP]`` padded with [PAD] to one length; otherwise a ``SpamDataset``.

    ``max_length``: None pads to the longest message (+2); a number truncates the message so that [SEP]
    still ends it. Item i is ``(ids (max_length,), label)``.
    """

    def __init__(
        self, texts: Sequence[str], labels: Sequence[int], tokenizer: Tokenizer, max_length: int | None = None
    ):
        if len(texts) != len(labels):
            raise ValueError(f"BertSpamDataset: {len(texts)} texts but {len(labels)} labels")
        if getattr(tokenizer, "cls_id", None) is None:
            raise ValueError("BertSpamDataset: the tokenizer has no [CLS]: wrap it with with_bert_tokens()")
        encoded = [tokenizer.encode(text, allowed_special=set(), disallowed_special=()) for text in texts]
        longest = max((len(ids) for ids in encoded), default=1) + 2
        self.max_length = int(longest if max_length is None else max_length)
        if self.max_length < 3:
            raise ValueError(f"BertSpamDataset: max_length must be >= 3 ([CLS], a token, [SEP]), got {max_length}")
        self.pad_token_id = tokenizer.pad_id
        self.labels = np.asarray(labels, dtype=np.int64)
        ids = np.full((len(texts), self.max_length), self.pad_token_id, dtype=np.int64)
        for row, message in enumerate(encoded):
            body = message[: self.max_length - 2]
            ids[row, : len(body) + 2] = [tokenizer.cls_id, *body, tokenizer.sep_id]
        self.input_ids = ids  # (N, max_length)


def set_trainable_bert(model: BertForSequenceClassification, trainable: str = "all") -> BertForSequenceClassification:
    """Which parameters of a BertForSequenceClassification learn: "all"; "head" (pooler and classifier);
    "last-N" / "last-block" (the last N encoder layers, the pooler and the classifier)."""
    layers = model.bert.encoder
    if trainable == "all":
        blocks = len(layers)
    elif trainable == "head":
        blocks = 0
    elif trainable == "last-block":
        blocks = 1
    elif trainable.startswith("last-") and trainable[5:].isdigit() and int(trainable[5:]) >= 1:
        blocks = min(int(trainable[5:]), len(layers))
    else:
        raise ValueError(f"trainable must be all, head, last-block or last-N (N >= 1), got {trainable!r}")
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
        p.grad = None
    to_train = [model.classifier, model.bert.pooler] + [layers[i] for i in range(len(layers) - blocks, len(layers))]
    for module in to_train:
        for p in module.parameters():
            p.requires_grad_(True)
    return model
