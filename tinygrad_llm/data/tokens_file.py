"""Token files: a corpus tokenized once, stored as raw uint16/uint32 ids, read back through a memmap.

The layout is nanoGPT's ``train.bin`` (ids back to back, native little-endian) plus a small JSON sidecar
``train.bin.json`` recording the dtype, the vocabulary size and the count, so a reader never guesses.
uint16 holds ids below 65,536 (GPT-2's 50,257 fit), halving the file; larger vocabularies use uint32.
Both files are written atomically: a crash leaves the previous version or none, never half a file.

    write_tokens("train.bin", ids, vocab_size=50257)
    tokens = load_tokens("train.bin")                  # np.memmap, read-only, nothing loaded up front
    sampler = RandomBatchSampler(tokens, batch_size=12, block_size=64, seed=0)
    inputs, targets = sampler.get_batch()              # (12, 64) int64 each, random windows
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.data.dataset import check_positive_int
from tinygrad_llm.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array

FORMAT = "tinygrad_llm.tokens/1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def header_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


class TokenFileWriter:
    """Append token ids chunk by chunk (a corpus too big to hold), then publish the file on ``close``.

    with TokenFileWriter("train.bin", vocab_size=50257) as writer:
        for document in documents:
            writer.write(tokenizer.encode(document) + [tokenizer.eot_id])
    """

    def __init__(self, path, vocab_size: int, overwrite: bool = False):
        self.path = Path(path)
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", "TokenFileWriter")
        if vocab_size > 1 << 32:
            raise ValueError(f"TokenFileWriter: vocab_size={vocab_size} does not fit uint32 ids")
        if not overwrite and (self.path.exists() or header_path(self.path).exists()):
            raise FileExistsError(
                f"TokenFileWriter: {self.path} already exists (token files are written once; "
                "pass overwrite=True to replace it)"
            )
        self.dtype = token_dtype(vocab_size)
        self.count = 0
        self._context = atomic_write(self.path, "wb")
        self._file = self._context.__enter__()

    def write(self, ids: Iterable[int] | Array) -> None:
        ids = np.asarray(ids)
        if ids.size == 0:
            return
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"TokenFileWriter.write: expected a 1-D sequence of integer ids, got shape {ids.shape} "
                f"dtype {ids.dtype}"
            )
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"TokenFileWriter.write: token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        self._file.write(ids.astype(self.dtype).tobytes())
        self.count += ids.size

    def close(self) -> Path:
        """Publish the data file, then its header (a reader checks the two agree)."""
        if self._context is None:
            return self.path
        context, self._context = self._context, None
        context.__exit__(None, None, None)
        header = {
            "format": FORMAT,
            "dtype": self.dtype.name,
            "byteorder": "little",
            "vocab_size": self.vocab_size,
            "count": self.count,
        }
        with atomic_write(header_path(self.path), "w") as f:
            json.dump(header, f)
            f.write("\n")
        return self.path

    def abort(self) -> None:
        """Discard what was written; the previous file (if any) stays."""
        if self._context is not None:
            context, self._context = self._context, None
            try:
                context.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_tokens(path: str | Path, ids: Iterable[int] | Array, vocab_size: int, overwrite: bool = False) -> Path:
    """Write ``ids`` to ``path`` (+ ``path.json`` header) in one go; returns ``path``."""
    with TokenFileWriter(path, vocab_size, overwrite=overwrite) as writer:
        writer.write(ids)
    return Path(path)


def read_header(path: str | Path) -> dict:
    hpath = header_path(path)
    if not hpath.is_file():
        raise FileNotFoundError(
            f"load_tokens: {hpath} (the header of {path}) does not exist; write token files with write_tokens()"
        )
    header = json.loads(hpath.read_text(encoding="utf-8"))
    if header.get("format") != FORMAT:
        raise ValueError(f"load_tokens: {hpath} has format {header.get('format')!r}, expected {FORMAT!r}")
    return header


def load_tokens(path: str | Path) -> np.ndarray:
    """The ids of a token file as a read-only ``np.memmap`` (an empty array for an empty file)."""
    path = Path(path)
    header = read_header(path)
    dtype = np.dtype(header["dtype"]).newbyteorder("<")
    if not path.is_file():
        raise FileNotFoundError(f"load_tokens: {path} does not exist")
    size = os.path.getsize(path)
    if size != header["count"] * dtype.itemsize:
        raise ValueError(
            f"load_tokens: {path} has {size} bytes but its header says {header['count']} ids of "
            f"{dtype.name} ({header['count'] * dtype.itemsize} bytes); the file is damaged"
        )
    if header["count"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(header["count"],))


def token_file_vocab_size(path: str | Path) -> int:
    return int(read_header(path)["vocab_size"])


def get_batch(
    tokens: Array, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """nanoGPT's ``get_batch``: ``batch_size`` windows of ``block_size`` ids at offsets drawn from ``rng``, and the
    same windows shifted by one as targets; (inputs, targets), each (batch_size, block_size) int64."""
    batch_size = check_positive_int(batch_size, "batch_size", "get_batch")
    block_size = check_positive_int(block_size, "block_size", "get_batch")
    if len(tokens) < block_size + 1:
        raise ValueError(
            f"get_batch: {len(tokens)} tokens, but block_size={block_size} needs at least "
            f"{block_size + 1} (block_size + 1, for the shifted target)"
        )
    starts = rng.integers(0, len(tokens) - block_size, size=batch_size)  # (B,)
    rows = starts[:, None] + np.arange(block_size)  # (B, T)
    return np.asarray(tokens[rows], dtype=np.int64), np.asarray(tokens[rows + 1], dtype=np.int64)


class RandomBatchSampler:
    """Endless random batches from ``tokens`` (an array or ``load_tokens`` memmap) via ``get_batch``, seeded;
    ``state_dict()`` holds the generator's state (JSON-able) so a resumed run draws the same batches."""

    def __init__(self, tokens, batch_size: int, block_size: int, seed: int | None = None):
        self.tokens = tokens
        self.batch_size = check_positive_int(batch_size, "batch_size", "RandomBatchSampler")
        self.block_size = check_positive_int(block_size, "block_size", "RandomBatchSampler")
        if len(tokens) < self.block_size + 1:
            raise ValueError(
                f"RandomBatchSampler: {len(tokens)} tokens, but block_size={self.block_size} needs at "
                f"least {self.block_size + 1} (block_size + 1, for the shifted target)"
            )
        self.rng = np.random.default_rng(seed)

    def get_batch(self) -> tuple[np.ndarray, np.ndarray]:
        return get_batch(self.tokens, self.batch_size, self.block_size, self.rng)

    def __iter__(self):
        return self

    def __next__(self):
        return self.get_batch()

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
