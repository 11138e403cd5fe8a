"""Text to train on: a file, a folder of text files, or the corpus every Python already has.

The built-in corpus is the English help text of the standard library's ``pydoc_data`` (the pages
``help("assert")`` prints: about 465,000 characters), so a first run needs no download.

A corpus is read as a stream of text pieces (``Corpus.pieces``): a file of any size is decoded a block at a
time, and checked as it is read (UTF-8, no NUL byte, not empty), so a large corpus is never held whole.
Regular files only: a device (``/dev/zero``), a FIFO or a socket would be read forever, and is refused.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BUILTIN = "pydoc"
BLOCK_BYTES = 1 << 18  # read and decoded at a time
FILE_SEPARATOR = "\n\n"  # between the files of a folder


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
