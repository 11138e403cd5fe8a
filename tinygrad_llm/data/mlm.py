"""Masked-language-model data (BERT's pretraining): windows of text as [CLS] ... [SEP], some tokens masked.

    inputs, labels = mask_tokens(ids, rng, mask_id=tok.mask_id, n_ordinary=tok.base.n_vocab,
                                 special_ids=[tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id])
    dataset = MLMDataset(token_ids, tok, context_length=128)     # dataset[i] -> (inputs, labels), (128,) each

The recipe of the BERT paper (section 3.1, "Task #1: Masked LM"): each token is chosen with probability
15%; special tokens never are. A chosen token becomes [MASK] 80% of the time, a random ordinary token 10%
and stays itself 10% (so the model cannot learn that only [MASK] positions matter). Its label is the
original token; every other label is -100, which ``F.cross_entropy`` ignores: the loss is only on the
chosen positions. With ``labels`` so written, the GPT's training loop trains BERT unchanged:
``cross_entropy(model(inputs), labels)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.data.dataset import as_token_array, check_positive_int

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array

IGNORE_INDEX = -100
MLM_PROBABILITY = 0.15


def mask_tokens(
    ids: Array,
    rng: np.random.Generator,
    mask_id: int,
    n_ordinary: int,
    special_ids: Iterable[int] = (),
    mlm_probability: float = MLM_PROBABILITY,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) for token ids (any shape) by the recipe above; ``n_ordinary``: random replacements
    are drawn from ids [0, n_ordinary), the ordinary vocabulary (never a special token).

    At least one position is chosen whenever one can be (a batch with no label would have no loss)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not 0 < mlm_probability < 1:
        raise ValueError(f"mask_tokens: mlm_probability must be in (0, 1), got {mlm_probability}")
    candidate = ~np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))  # special tokens are never chosen
    chosen = (rng.random(ids.shape) < mlm_probability) & candidate
    if not chosen.any() and candidate.any():
        flat = np.flatnonzero(candidate)
        chosen.flat[flat[rng.integers(len(flat))]] = True
    labels = np.where(chosen, ids, IGNORE_INDEX)
    action = rng.random(ids.shape)  # one uniform per position: < 0.8 mask, < 0.9 random token, else keep
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    inputs = ids.copy()
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.integers(0, n_ordinary, size=int(to_random.sum()))
    return inputs, labels


class MLMDataset:
    """Windows of ``context_length`` tokens: [CLS], ``context_length - 2`` tokens of the text, [SEP]; each
    masked by ``mask_tokens`` when it is batched.

    tokenizer: a ``WithSpecialTokens`` (``with_bert_tokens(...)``): it gives the [CLS]/[SEP]/[MASK]/[PAD]
    ids and the size of the ordinary vocabulary. ``fixed=True`` (evaluation) masks window i the same way
    every time (a generator seeded with (seed, i)); otherwise the masks come from the library's CPU
    generator (``tinygrad_llm.manual_seed``), whose state every checkpoint keeps, so a resumed run draws
    the same masks it would have drawn without stopping.
    """

    def __init__(
        self,
        data,
        tokenizer,
        context_length: int,
        stride: int | None = None,
        fixed: bool = False,
        seed: int = 0,
        mlm_probability: float = MLM_PROBABILITY,
    ):
        for name in ("cls_id", "sep_id", "mask_id", "pad_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(f"MLMDataset: the tokenizer has no {name}: wrap it with with_bert_tokens()")
        self.context_length = check_positive_int(context_length, "context_length", "MLMDataset")
        if self.context_length < 3:
            raise ValueError(f"MLMDataset: context_length must be >= 3 ([CLS], a token, [SEP]), got {context_length}")
        self.span = self.context_length - 2  # text tokens per window
        self.stride = self.span if stride is None else check_positive_int(stride, "stride", "MLMDataset")
        self.token_ids = as_token_array(data, tokenizer, who="MLMDataset")
        n = len(self.token_ids)
        if n < self.span:
            raise ValueError(
                f"MLMDataset: the text has {n} tokens, fewer than one window of {self.span} "
                f"(context_length {self.context_length} minus [CLS] and [SEP])"
            )
        self.starts = np.arange(0, n - self.span + 1, self.stride, dtype=np.int64)
        self.tokenizer, self.fixed, self.seed, self.mlm_probability = tokenizer, fixed, int(seed), mlm_probability
        # the base's own specials (<|endoftext|>) are never chosen either, nor drawn as random replacements:
        # every tokenizer here puts them after its ordinary ids
        self.special_ids = [
            tokenizer.pad_id,
            tokenizer.cls_id,
            tokenizer.sep_id,
            tokenizer.mask_id,
            *tokenizer.base.special_tokens.values(),
        ]
        self.n_ordinary = tokenizer.base.n_vocab - len(tokenizer.base.special_tokens)

    def __len__(self) -> int:
        return len(self.starts)

    def window(self, index: int) -> np.ndarray:
        """Window ``index`` unmasked: [CLS] tokens [SEP], (context_length,) int64."""
        start = int(self.starts[index])
        body = np.asarray(self.token_ids[start : start + self.span], dtype=np.int64)
        return np.concatenate([[self.tokenizer.cls_id], body, [self.tokenizer.sep_id]])

    def _mask(self, ids, rng):
        return mask_tokens(ids, rng, self.tokenizer.mask_id, self.n_ordinary, self.special_ids, self.mlm_probability)

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"MLMDataset: index {index} out of range for {n} windows")
        index = index % n
        rng = np.random.default_rng([self.seed, index]) if self.fixed else backend.get_generator("cpu")
        return self._mask(self.window(index), rng)

    def get_batch(self, indices: Iterable[int] | Array) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (B, T), labels (B, T)) for the DataLoader."""
        indices = [int(i) for i in indices]
        if self.fixed:
            pairs = [self[i] for i in indices]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        return self._mask(np.stack([self.window(i) for i in indices]), backend.get_generator("cpu"))
