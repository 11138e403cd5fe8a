"""Text to train on: a file, a folder of text files, or the corpus every Python already has.

The built-in corpus is the English help text of the standard library's ``pydoc_data`` (the pages
``help("assert")`` prints: about 465,000 characters), so a first run needs no download.

A corpus is read as a stream of text pieces (``Corpus.pieces``): a file of any size is decoded a block at a
time, and checked as it is read (UTF-8, no NUL byte, not empty), so a large corpus is never held whole.
Regular files only: a device (``/dev/zero``), a FIFO or a socket would be read forever, and is refused.
``encode_corpus`` streams it into nanoGPT's token files, ``train.bin`` and ``val.bin``, chunk by chunk.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.data.tokens_file import load_tokens, read_header, tokenize_to_file
from tinygrad_llm.files import json_text

if TYPE_CHECKING:
    import numpy as np

    from tinygrad_llm.tokenizer.base import Tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BUILTIN = "pydoc"
BLOCK_BYTES = 1 << 18  # read and decoded at a time
FILE_SEPARATOR = "\n\n"  # between the files of a folder
TOKEN_FILES = ("train.bin", "val.bin")  # nanoGPT's names; each has its .json header beside it
HEAD_CHARS = 1 << 16  # how much of the validation text is kept for sample prompts


class CorpusError(ValueError):
    """The training text cannot be read; the message names the file and what is wrong."""


def builtin_corpus() -> str:
    """Python's own help topics (``pydoc_data.topics``), joined in a fixed order."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some distributions strip pydoc_data
        raise CorpusError(
            "the built-in corpus needs the standard library's pydoc_data, which this Python "
            "lacks: pass --data PATH to a text file"
        ) from exc
    return "\n\n".join(topics[name] for name in sorted(topics))


def check_regular_file(path: Path) -> None:
    """``path`` exists and is a regular file (or a link to one): a CorpusError naming it otherwise."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise CorpusError(
            f"{path}: not a regular file (a device, a FIFO or a socket, which would be read without end); "
            "expected a UTF-8 text file or a folder of them"
        )


def file_pieces(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """A UTF-8 text file's content, decoded ``block_bytes`` at a time; a CorpusError naming the file (missing,
    not a regular file, empty, binary, not UTF-8) as soon as the fault is read."""
    path = Path(path)
    check_regular_file(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, blank = 0, True
    with open(path, "rb") as f:
        while True:
            block = f.read(block_bytes)
            nul = block.find(b"\x00")
            if nul >= 0:
                raise CorpusError(f"{path}: looks binary (a NUL byte at offset {offset + nul}); expected UTF-8 text")
            pending = decoder.getstate()[0]  # the start of a character cut by the previous block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                data = pending + block
                raise CorpusError(
                    f"{path}: not valid UTF-8 at byte offset {offset - len(pending) + exc.start} "
                    f"(byte 0x{data[exc.start]:02x}); expected UTF-8 text"
                ) from None
            blank = blank and not block.strip()
            if not block:
                break
            offset += len(block)
            if text:
                yield text
    if blank:
        raise CorpusError(f"{path}: the file is empty")


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content, or a CorpusError naming the file (missing, not a regular file, empty,
    binary, not UTF-8)."""
    return "".join(file_pieces(path))


@dataclasses.dataclass
class Corpus:
    """A corpus to read, piece by piece: ``files`` in order (joined by a blank line), or ``text`` in memory."""

    described: str
    files: list[Path] = dataclasses.field(default_factory=list)
    text: str | None = None

    def pieces(self, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
        """The corpus's text, in pieces of about ``block_bytes`` (the pieces joined are the whole text)."""
        if self.text is not None:
            step = max(block_bytes, 1)
            for start in range(0, len(self.text), step):
                yield self.text[start : start + step]
            return
        for i, path in enumerate(self.files):
            if i:
                yield FILE_SEPARATOR
            yield from file_pieces(path, block_bytes)

    def fingerprint(self) -> dict:
        """What identifies this text: each file's path, size and modification time (not read), or the hash of
        the text in memory."""
        if self.text is not None:  # (the built-in corpus changes with Python's version)
            return {"text": self.described, "sha256": hashlib.sha256(self.text.encode("utf-8")).hexdigest()}
        return {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files]}


def open_corpus(path: str | os.PathLike | None = None) -> Corpus:
    """The corpus at ``path``: None or "pydoc" for the built-in corpus, a file, or a folder whose text files
    (.txt .md .rst, recursively, in sorted order) are joined. Checked that it can be read, not read yet."""
    if path is None or str(path) == BUILTIN:
        return Corpus("Python's built-in help texts (pydoc_data)", text=builtin_corpus())
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise CorpusError(f"{path}: a directory with no text files ({', '.join(TEXT_SUFFIXES)})")
        return Corpus(f"{len(files)} files under {path}", files=files)
    check_regular_file(path)
    return Corpus(str(path), files=[path])


def load_corpus(path: str | os.PathLike | None = None) -> tuple[str, str]:
    """(text, description) for ``path`` (see ``open_corpus``), read whole."""
    corpus = open_corpus(path)
    return "".join(corpus.pieces()), corpus.described


def scan_corpus(corpus: Corpus, alphabet: bool = False, keep_text: bool = False) -> tuple[int, str]:
    """One pass over the corpus, checking it all: (its length in characters, its sorted distinct characters
    when ``alphabet`` (a char tokenizer's vocabulary), or the whole text when ``keep_text`` (a BPE trains on
    it), else "")."""
    n_chars, chars, parts = 0, set(), []
    for piece in corpus.pieces():
        n_chars += len(piece)
        if alphabet:
            chars.update(piece)
        if keep_text:
            parts.append(piece)
    return n_chars, "".join(parts) if keep_text else "".join(sorted(chars))


def split_pieces(pieces: Iterator[str], split: int) -> tuple[Iterator[str], Iterator[str]]:
    """The text of ``pieces`` as two streams: its first ``split`` characters, then the rest (read the first
    to its end before the second)."""
    rest: list[str] = []

    def first() -> Iterator[str]:
        seen = 0
        for piece in pieces:
            if seen + len(piece) >= split:
                head, tail = piece[: split - seen], piece[split - seen :]
                if head:
                    yield head
                rest.append(tail)
                return
            seen += len(piece)
            yield piece

    def second() -> Iterator[str]:
        yield from (piece for piece in rest if piece)
        yield from pieces

    return first(), second()


def encode_corpus(
    corpus: Corpus,
    tokenizer: Tokenizer,
    split: int,
    n_chars: int,
    folder: Path,
    allowed_special: set[str],
    log: Callable[[str], object],
) -> tuple[np.ndarray, np.ndarray, str, list[Path]]:
    """(training ids, validation ids, the first ``HEAD_CHARS`` characters of the validation text, the token
    files written): the corpus's first ``split`` of ``n_chars`` characters and the rest, each encoded in chunks
    (``tokenize_to_file``) into ``folder/train.bin`` and ``folder/val.bin`` (nanoGPT's token files: uint16
    ids, or uint32 for a larger vocabulary) and read back as memmaps. Each file's header records the text
    and tokenizer it was made from; files that record these ones are used again (a rerun, ``--resume``)."""
    source = {
        "corpus": corpus.fingerprint(),
        "tokenizer": _tokenizer_digest(tokenizer),
        "allowed_special": sorted(allowed_special),
        "chars": [0, split],
    }
    encode = functools.partial(tokenizer.encode, allowed_special=allowed_special)
    paths = [folder / file_name for file_name in TOKEN_FILES]
    sources = [source, {**source, "chars": [split, n_chars]}]
    written = []
    if all(_token_file_source(path) == want for path, want in zip(paths, sources)):
        log(f"using the token files {paths[0]} and {paths[1].name}, made from this text and tokenizer")
        val_head = _head(corpus.pieces(), split)
    else:
        train_side, val_side = split_pieces(corpus.pieces(), split)
        heads: list[str] = []
        sides = (train_side, _keep_head(val_side, heads))
        for path, side, want, chars in zip(paths, sides, sources, (split, n_chars - split)):
            written.append(path)
            tokenize_to_file(side, encode, path, tokenizer.n_vocab, want, total_chars=chars)
        val_head = "".join(heads)
    return load_tokens(paths[0]), load_tokens(paths[1]), val_head, written


def _token_file_source(path: Path) -> dict | None:
    """The source recorded in a token file's header, None where there is no intact file."""
    try:
        header = read_header(path)
        load_tokens(path)  # its size agrees with its header
    except (OSError, ValueError):
        return None
    return header.get("source")


def _tokenizer_digest(tokenizer: Tokenizer) -> str:
    """A hash of everything the tokenizer maps text with (its tokenizer.json data)."""
    described = tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else {"name": tokenizer.name}
    return hashlib.sha256(json_text([described, tokenizer.n_vocab], sort_keys=True).encode()).hexdigest()


def _keep_head(pieces: Iterator[str], heads: list[str]) -> Iterator[str]:
    """``pieces`` unchanged, their first ``HEAD_CHARS`` characters appended to ``heads`` on the way."""
    kept = 0
    for piece in pieces:
        if kept < HEAD_CHARS:
            heads.append(piece[: HEAD_CHARS - kept])
            kept += len(heads[-1])
        yield piece


def _head(pieces: Iterator[str], split: int) -> str:
    """The first ``HEAD_CHARS`` characters after the first ``split`` of ``pieces``."""
    first, rest = split_pieces(pieces, split)
    for _ in first:  # (read to its end before the rest)
        pass
    heads: list[str] = []
    for _ in _keep_head(rest, heads):
        if sum(map(len, heads)) >= HEAD_CHARS:
            break
    return "".join(heads)
