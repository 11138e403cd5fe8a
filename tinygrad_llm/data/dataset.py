"""Chapter 2's sliding-window dataset: every window of ``max_length`` token ids, and the same window shifted by one
as the next-token targets.

    ids:      [ 40, 367, 2885, 1464, 1807, 3619, 402, 271, ...]
    window 0: input [40, 367, 2885, 1464]      target [367, 2885, 1464, 1807]
    window 1: input [1807, 3619, 402, 271]     target [3619, 402, 271, 10899]     (stride 4)

Windows start at 0, stride, 2*stride, ... while a full target fits: ``len(range(0, N - max_length, stride))``
windows for N ids, exactly as the book's ``GPTDatasetV1``. The ids are kept as one array (a NumPy array, or
a read-only memmap of a token file) and windows are sliced on demand, so overlapping windows cost nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tokenizer.base import Tokenizer


def check_positive_int(value: int, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{who}: {name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{who}: {name} must be positive, got {value}")
    return int(value)


def as_token_array(
    data: str | Sequence[int] | Array, tokenizer: Tokenizer | None = None, who: str = "GPTDataset"
) -> np.ndarray:
    """A 1-D integer array of token ids from text (encoded with ``tokenizer``, GPT-2's by default) or ids."""
    if isinstance(data, str):
        if not data:
            raise ValueError(f"{who}: text is empty")
        if tokenizer is None:
            from tinygrad_llm.tokenizer import get_tokenizer

            tokenizer = get_tokenizer("gpt2")
        return np.asarray(tokenizer.encode(data, allowed_special={"<|endoftext|>"}), dtype=np.int64)
    if hasattr(data, "data") and hasattr(data, "backward"):  # a Tensor
        data = data.data
    if hasattr(data, "get") and not isinstance(data, (dict, np.ndarray)):  # CuPy
        data = data.get()
    array = data if isinstance(data, np.ndarray) else np.asarray(data)
    if array.size == 0:
        raise ValueError(f"{who}: token ids are empty")
    if array.ndim != 1:
        raise ValueError(f"{who}: token ids must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who}: token ids must be integers, got dtype {array.dtype}")
    return array


class GPTDataset:
    """Sliding windows over token ids: ``dataset[i]`` is (input, target), int64 arrays of shape (max_length,).

    ``data`` is text (encoded with ``tokenizer``, GPT-2's BPE when None) or token ids (list, array, memmap).
    ``stride`` defaults to ``max_length`` (windows side by side, no overlap).
    The book's argument order also works: ``GPTDataset(txt, tokenizer, max_length, stride)``.
    """

    def __init__(self, data, max_length, stride=None, tokenizer=None):
        if hasattr(max_length, "encode"):  # the book's order: (txt, tokenizer, max_length, stride)
            tokenizer, max_length, stride = max_length, stride, tokenizer
        self.max_length = check_positive_int(max_length, "max_length", "GPTDataset")
        self.stride = self.max_length if stride is None else check_positive_int(stride, "stride", "GPTDataset")
        self.token_ids = as_token_array(data, tokenizer)
        n = len(self.token_ids)
        if n < self.max_length + 1:
            raise ValueError(
                f"GPTDataset: the text has {n} tokens, but max_length={self.max_length} needs at least "
                f"{self.max_length + 1} (max_length + 1, for the shifted target); "
                "use a longer text or a smaller max_length"
            )
        # window i starts at i * stride (not kept as an array: 8 bytes a window, as much as a large text's ids)
        self._n_windows = len(range(0, n - self.max_length, self.stride))
        self._offsets = np.arange(self.max_length, dtype=np.int64)

    def __len__(self) -> int:
        return self._n_windows

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"GPTDataset: index {index} out of range for {n} windows")
        start = int(index % n) * self.stride
        chunk = np.asarray(self.token_ids[start : start + self.max_length + 1], dtype=np.int64)
        return chunk[:-1], chunk[1:]  # input, and the same window shifted one token to the right

    def get_batch(self, indices: Iterable[int] | Array) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``indices`` stacked: (inputs, targets), each (len(indices), max_length) int64."""
        indices, n = np.asarray(indices, dtype=np.int64), len(self)
        if indices.size and not (-n <= indices.min() and indices.max() < n):
            raise IndexError(f"GPTDataset: indices out of range for {n} windows")
        starts = (indices % n) * self.stride  # (B,)
        rows = starts[:, None] + self._offsets  # (B, T)
        inputs = np.asarray(self.token_ids[rows], dtype=np.int64)
        targets = np.asarray(self.token_ids[rows + 1], dtype=np.int64)
        return inputs, targets

    def __repr__(self) -> str:
        return (
            f"GPTDataset({len(self.token_ids)} tokens, max_length={self.max_length}, stride={self.stride}, "
            f"{len(self)} windows)"
        )


class GPTDatasetV1(GPTDataset):
    """The book's class and argument order: ``GPTDatasetV1(txt, tokenizer, max_length, stride)``."""

    def __init__(self, txt, tokenizer, max_length, stride):
        super().__init__(txt, max_length, stride, tokenizer=tokenizer)
