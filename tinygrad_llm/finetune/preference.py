"""Chapter 7's preference data: each instruction with a ``chosen`` and a ``rejected`` response, for DPO.

    data = load_preference_data("instruction-data-with-preference.json")
    train_data, test_data, val_data = split_instruction_data(data)      # 935 / 110 / 55, in file order
    train_set = PreferenceDataset(train_data, tokenizer, allowed_max_length=1024)
    train_loader = DataLoader(train_set, batch_size=8, shuffle=True, drop_last=True, seed=123)
    batch = next(iter(train_loader))   # {"prompt", "chosen", "rejected", "chosen_mask", "rejected_mask", "index"}

Each response is appended to the chapter-7 prompt exactly as in instruction fine-tuning
(``format_input(entry) + "\\n\\n### Response:\\n" + response``). ``preference_collate_fn`` is the book's
``custom_collate_fn`` of its DPO notebook: chosen and rejected sequences of a batch are padded with
end-of-text (50256) to one common length (the longest plus one), and each gets a boolean mask that is True
only on the response: False over the prompt (and the two newline tokens that open the response header, as
the book's ``prompt length + 2``) and over the padding. The masks select the tokens whose log-probabilities
DPO compares (``finetune.dpo.compute_logprobs``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.finetune.instruction import format_input, load_instruction_data

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.tokenizer.base import Tokenizer

PREFERENCE_KEYS = ("chosen", "rejected")


def load_preference_data(path: str | os.PathLike) -> list[dict]:
    """A JSON list of {instruction, input, output?, chosen, rejected}; anything else raises ValueError naming
    the file and the first bad record."""
    data = load_instruction_data(path, required=("instruction", "chosen", "rejected"))
    return data


def format_preference_pair(entry: dict) -> tuple[str, str, str]:
    """(prompt, prompt + chosen response, prompt + rejected response), as the book's PreferenceDataset."""
    prompt = format_input(entry)
    return (prompt, f"{prompt}\n\n### Response:\n{entry['chosen']}", f"{prompt}\n\n### Response:\n{entry['rejected']}")


def preference_collate_fn(
    batch: Sequence[dict],
    pad_token_id: int = 50256,
    allowed_max_length: int | None = None,
    mask_prompt_tokens: bool = True,
) -> dict:
    """A batch dict from items {"prompt", "chosen", "rejected"} (token-id lists), as the book's DPO collate.

    Returns {"prompt": list of (P_i,) arrays, "chosen"/"rejected": (B, L) int64, "chosen_mask"/"rejected_mask":
    (B, L) bool}, where L is the longest chosen or rejected sequence plus one, cut to ``allowed_max_length``.
    A mask is True on the sequence's own tokens, minus the prompt and the two newlines after it when
    ``mask_prompt_tokens``; never on padding.
    """
    if not batch:
        raise ValueError("preference_collate_fn: empty batch")
    max_length_common = max(len(item[key]) + 1 for item in batch for key in PREFERENCE_KEYS)
    out = {"prompt": [np.asarray(item["prompt"], dtype=np.int64) for item in batch]}
    for key in PREFERENCE_KEYS:
        padded = np.full((len(batch), max_length_common), pad_token_id, dtype=np.int64)  # (B, L)
        mask = np.zeros((len(batch), max_length_common), dtype=bool)  # (B, L)
        for row, item in enumerate(batch):
            sequence = item[key]
            padded[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = True  # the padding is never compared
            if mask_prompt_tokens:
                mask[row, : len(item["prompt"]) + 2] = False  # +2: the "\n\n" that opens "### Response:"
        if allowed_max_length is not None:
            padded, mask = padded[:, :allowed_max_length], mask[:, :allowed_max_length]
        out[key], out[f"{key}_mask"] = padded, mask
    return out


class PreferenceDataset:
    """Records encoded as {"prompt", "chosen", "rejected"} token-id lists (the book's item).

    ``get_batch(indices)`` collates with ``preference_collate_fn`` and adds "index" (the records' positions),
    so the library's ``DataLoader`` yields batch dicts. After ``set_reference_logprobs(chosen, rejected)``
    (see ``finetune.dpo.precompute_reference_logprobs``) each batch also carries the reference model's
    log-probabilities as "reference_chosen_logprobs" / "reference_rejected_logprobs" (B,), so the frozen
    reference model is run once before training instead of at every step.
    """

    def __init__(
        self,
        data: Sequence[dict],
        tokenizer: Tokenizer,
        pad_token_id: int | None = None,
        allowed_max_length: int | None = None,
        mask_prompt_tokens: bool = True,
    ):
        if pad_token_id is None:
            if tokenizer.eot_id is None:
                raise ValueError(
                    f"PreferenceDataset: tokenizer {tokenizer.name!r} has no <|endoftext|>; pass pad_token_id"
                )
            pad_token_id = tokenizer.eot_id
        self.data = list(data)
        self.pad_token_id, self.allowed_max_length = int(pad_token_id), allowed_max_length
        self.mask_prompt_tokens = bool(mask_prompt_tokens)
        self.encoded_texts = []
        for entry in self.data:
            prompt, chosen, rejected = format_preference_pair(entry)
            self.encoded_texts.append(
                {
                    "prompt": tokenizer.encode(prompt),
                    "chosen": tokenizer.encode(chosen),
                    "rejected": tokenizer.encode(rejected),
                }
            )
        self.reference_logprobs = None

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)

    def set_reference_logprobs(self, chosen: Array, rejected: Array) -> None:
        """Attach the reference model's per-record log-probabilities, (N,) each, to every later batch."""
        chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
        if chosen.shape != (len(self),) or rejected.shape != (len(self),):
            raise ValueError(
                f"PreferenceDataset: reference log-probabilities must have shape ({len(self)},), got "
                f"{chosen.shape} and {rejected.shape}"
            )
        self.reference_logprobs = (chosen, rejected)

    def records_without_preference(self) -> list[int]:
        """The indices of the records whose chosen and rejected sequences are the same within
        ``allowed_max_length``: the same answer twice, or two answers cut off before they differ. The policy
        gives both one log-probability, so such a pair's DPO loss is ln 2 and its gradient zero."""
        limit = self.allowed_max_length
        return [i for i, item in enumerate(self.encoded_texts) if item["chosen"][:limit] == item["rejected"][:limit]]

    def get_batch(self, indices: Sequence[int] | Array) -> dict:
        indices = np.asarray([int(i) for i in indices], dtype=np.int64)
        batch = preference_collate_fn(
            [self.encoded_texts[i] for i in indices],
            self.pad_token_id,
            self.allowed_max_length,
            self.mask_prompt_tokens,
        )
        batch["index"] = indices
        if self.reference_logprobs is not None:
            batch["reference_chosen_logprobs"] = self.reference_logprobs[0][indices]
            batch["reference_rejected_logprobs"] = self.reference_logprobs[1][indices]
        return batch
