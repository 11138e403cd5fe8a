"""Text to train on: a file, a folder of text files, or the corpus every Python already has.

The built-in corpus is the English help text of the standard library's ``pydoc_data`` (the pages
``help("assert")`` prints: about 465,000 characters), so a first run needs no download.
"""

from __future__ import annotations

import os
from pathlib import Path

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
BUILTIN = "pydoc"


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


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content, or a CorpusError naming the file (missing, empty, binary, not UTF-8)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or directory")
    raw = path.read_bytes()
    if not raw.strip():
        raise CorpusError(f"{path}: the file is empty")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{path}: looks binary (a NUL byte at offset {nul}); expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path}: not valid UTF-8 at byte offset {exc.start} (byte 0x{raw[exc.start]:02x}); expected UTF-8 text"
        ) from None


def load_corpus(path: str | os.PathLike | None = None) -> tuple[str, str]:
    """(text, description) for ``path``: None or "pydoc" for the built-in corpus, a file, or a folder
    whose text files (.txt .md .rst, recursively, in sorted order) are joined."""
    if path is None or str(path) == BUILTIN:
        return builtin_corpus(), "Python's built-in help texts (pydoc_data)"
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise CorpusError(f"{path}: a directory with no text files ({', '.join(TEXT_SUFFIXES)})")
        return "\n\n".join(read_text_file(p) for p in files), f"{len(files)} files under {path}"
    return read_text_file(path), str(path)
