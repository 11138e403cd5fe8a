"""Token files: a corpus tokenized once, stored as raw uint16/uint32 ids, read back through a memmap.

The layout is nanoGPT's ``train.bin`` (ids back to back, native little-endian) plus a small JSON sidecar
``train.bin.json`` recording the dtype, the vocabulary size and the count, so a reader never guesses.
uint16 holds ids below 65,536 (GPT-2's 50,257 fit), halving the file; larger vocabularies use uint32.
Both files are written atomically: a crash leaves the previous version or none, never half a file.

    write_tokens("train.bin", ids, vocab_size=50257)
    tokens = load_tokens("train.bin")                  # np.memmap, read-only, nothing loaded up front
    tokenize_to_file(pieces, tokenizer.encode, "train.bin", vocab_size)   # a text of any size, in chunks
    sampler = RandomBatchSampler(tokens, batch_size=12, block_size=64, seed=0)
    inputs, targets = sampler.get_batch()              # (12, 64) int64 each, random windows
"""

from __future__ import annotations

import collections
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.data.dataset import check_positive_int
from tinygrad_llm.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

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

    def __init__(self, path, vocab_size: int, overwrite: bool = False, source: dict | None = None):
        self.path = Path(path)
        self.source = source  # recorded in the header: what the ids were made from (see tokenize_to_file)
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
        if self.source is not None:
            header["source"] = self.source
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


CHUNK_CHARS = 1 << 18  # characters encoded at a time: the id list of one chunk is all that is held
# Where a text may be cut without changing its tokens: after a letter, digit or ASCII punctuation mark and
# before a space, newline or tab. Every tokenizer here (character, byte, and the byte-level BPEs with GPT-2's
# pre-tokenizer pattern) encodes such a cut's two sides as it encodes the whole: GPT-2's pattern never puts a
# non-space and a following space in one piece (a space only ever starts a piece), and a piece ending in a
# non-space depends on nothing after it (the one look-ahead, in ``\s+(?!\S)``, ends runs of spaces). Both
# sides of the cut are whitespace and non-whitespace in every definition (Python's, Unicode's, the regex
# module's), and no special token (<|endoftext|>, [MASK]) holds a space, so none is cut either.
_SAFE_CUT = re.compile(r"[\w!-/:-@\[-`{-~](?=[ \n\t])")


def chunks_at_safe_cuts(pieces: Iterable[str], chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The text of ``pieces`` again, as chunks of at least ``chunk_chars`` characters (but the last) that end
    at a safe cut (see ``_SAFE_CUT``): encoding each chunk alone gives the ids of encoding the whole text. A
    text with no safe cut (no space at all) comes out as one chunk."""
    held: list[str] = []  # the pieces since the last cut
    held_chars = 0
    searched = 0  # held[:searched] are known to hold no cut
    for piece in pieces:
        held.append(piece)
        held_chars += len(piece)
        if held_chars < chunk_chars:
            continue
        before = held[searched - 1][-1:] if searched else ""  # a cut may fall between old and new text
        end = _last_cut(before + "".join(held[searched:]))
        if end is None:  # no cut yet: read on, and never search these pieces again
            searched = len(held)
            continue
        cut = sum(len(p) for p in held[:searched]) - len(before) + end
        text = "".join(held)
        yield text[:cut]
        rest = text[cut:]  # after the last cut: holds none
        held, held_chars, searched = ([rest], len(rest), 1) if rest else ([], 0, 0)
    if held_chars:
        yield "".join(held)


def _last_cut(text: str) -> int | None:
    """The position of the last safe cut in ``text`` (None if it has none), searched from the end."""
    size = 4096
    while True:
        start = max(len(text) - size, 0)
        last = collections.deque(_SAFE_CUT.finditer(text, start), maxlen=1)  # (every match is one character)
        if last:
            return last[0].end()
        if start == 0:
            return None
        size *= 16


def tokenize_to_file(
    pieces: Iterable[str],
    encode: Callable[[str], list[int]],
    path: str | Path,
    vocab_size: int,
    source: dict | None = None,
    total_chars: int | None = None,
    chunk_chars: int = CHUNK_CHARS,
    desc: str | None = None,
) -> Path:
    """Encode the text of ``pieces`` chunk by chunk (``chunks_at_safe_cuts``) into the token file ``path``
    (uint16 ids when ``vocab_size`` fits, else uint32; written atomically, replacing an older one), as
    nanoGPT's prepare.py does, with a progress bar on a terminal (``total_chars``: the text's length, for
    the bar). ``source`` is recorded in the header (``read_header(path)["source"]``). Only one chunk's ids
    are ever held, never the whole text's."""
    from tqdm import tqdm

    with (
        TokenFileWriter(path, vocab_size, overwrite=True, source=source) as writer,
        tqdm(
            total=total_chars,
            unit="char",
            unit_scale=True,
            desc=desc or Path(path).name,
            disable=not sys.stderr.isatty(),
        ) as bar,
    ):
        for chunk in chunks_at_safe_cuts(pieces, chunk_chars):
            writer.write(np.asarray(encode(chunk), dtype=np.int64))  # checked against the vocabulary
            bar.update(len(chunk))
    return Path(path)
