"""Data: token ids into (inputs, targets) batches for next-token prediction.

loader = create_dataloader(text, batch_size=8, max_length=4, stride=4, shuffle=False)   # the book's
train_text, val_text = train_val_split(text, train_ratio=0.9)
write_tokens("train.bin", ids, vocab_size=50257); tokens = load_tokens("train.bin")    # nanoGPT's
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm.data.dataset import GPTDataset, GPTDatasetV1
from tinygrad_llm.data.loader import DataLoader
from tinygrad_llm.data.tokens_file import (
    RandomBatchSampler,
    TokenFileWriter,
    get_batch,
    load_tokens,
    token_dtype,
    token_file_vocab_size,
    write_tokens,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tokenizer.base import Tokenizer


def create_dataloader(
    text: str | Sequence[int] | Array,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer: Tokenizer | None = None,
    seed: int | None = None,
) -> DataLoader:
    """The book's ``create_dataloader_v1``: tokenize ``text`` (GPT-2's BPE unless ``tokenizer`` is given; token ids
    are accepted too), cut it into sliding windows, batch them. ``num_workers`` exists for the book's calls
    and must be 0: loading runs in the calling process."""
    if num_workers != 0:
        raise ValueError(f"create_dataloader: num_workers={num_workers!r}; only 0 is supported (in-process loading)")
    dataset = GPTDataset(text, max_length, stride, tokenizer=tokenizer)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)


create_dataloader_v1 = create_dataloader


def train_val_split(
    data: str | Sequence[int] | Array, train_ratio: float = 0.9
) -> tuple[str | Sequence[int] | Array, str | Sequence[int] | Array]:
    """The first ``train_ratio`` of ``data`` (text, a list or an array of ids) and the rest, as the book:
    ``split_idx = int(train_ratio * len(data))``."""
    if isinstance(train_ratio, bool) or not isinstance(train_ratio, (int, float)) or not 0 < train_ratio < 1:
        raise ValueError(f"train_val_split: train_ratio must be in (0, 1), got {train_ratio!r}")
    if len(data) == 0:
        raise ValueError("train_val_split: data is empty")
    split_idx = int(train_ratio * len(data))
    if split_idx == 0 or split_idx == len(data):
        raise ValueError(f"train_val_split: {len(data)} items with train_ratio={train_ratio} leave one side empty")
    return data[:split_idx], data[split_idx:]


__all__ = [
    "DataLoader",
    "GPTDataset",
    "GPTDatasetV1",
    "RandomBatchSampler",
    "TokenFileWriter",
    "create_dataloader",
    "create_dataloader_v1",
    "get_batch",
    "load_tokens",
    "token_dtype",
    "token_file_vocab_size",
    "train_val_split",
    "write_tokens",
]
