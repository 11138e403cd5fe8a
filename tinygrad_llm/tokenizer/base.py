"""The interface every tokenizer shares, and the special-token rules they all follow.

    tok.encode(text) -> list[int]     tok.decode(ids) -> str
    tok.n_vocab                       tok.eot_id (the id of <|endoftext|>, or None)
    tok.name                          tok.save(folder) / load_tokenizer(folder)

Special tokens follow tiktoken's convention and defaults: ``encode`` turns the text of a special token into
its id only when the token is in ``allowed_special`` (by default none: pass ``allowed_special={"<|endoftext|>"}``
as the book does); the text of any other special token raises ValueError, unless it is left out of
``disallowed_special``, in which case it is encoded as ordinary text. So ``encode("a <|endoftext|>")`` raises,
as ``tiktoken.get_encoding("gpt2").encode`` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.files import atomic_write

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tensor import Tensor

ENDOFTEXT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_ALLOWED = frozenset()  # tiktoken's default: no special token unless allowed


class Tokenizer:
    """Base class: subclasses implement ``_encode_ordinary``, ``_decode_bytes`` (or ``decode``) and ``to_dict``."""

    name: str = "tokenizer"
    special_tokens: dict[str, int] = {}

    @property
    def n_vocab(self) -> int:
        raise NotImplementedError

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(ENDOFTEXT)

    # -- encoding -------------------------------------------------------------------------------------------
    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = DEFAULT_ALLOWED,
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        """Token ids of ``text``; see the module docstring for the special-token rules."""
        check_text(text, type(self).__name__)
        ids: list[int] = []
        for piece, special_id in split_special(text, self.special_tokens, allowed_special, disallowed_special):
            if special_id is None:
                ids.extend(self._encode_ordinary(piece))
            else:
                ids.append(special_id)
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    # -- decoding -------------------------------------------------------------------------------------------
    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        """Text of ``ids`` (a list, a 1-D array or Tensor). Invalid UTF-8 (a byte sequence cut mid-character,
        possible for byte-level tokenizers mid-generation) decodes to U+FFFD instead of raising."""
        ids = as_id_list(ids, self.n_vocab, type(self).__name__)
        return self._decode_bytes(ids).decode("utf-8", errors="replace")

    def _decode_bytes(self, ids: list[int]) -> bytes:
        raise NotImplementedError

    # -- saving ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, as JSON-able data with a "type" field."""
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        """Files beside tokenizer.json that rebuilding this tokenizer needs (GPT-2's vocabulary): none here."""
        return {}

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` (and the files it needs) atomically; ``load_tokenizer(directory)``
        restores it, offline."""
        path = Path(directory) / TOKENIZER_FILE
        for name, data in self.files().items():
            with atomic_write(Path(directory) / name) as f:
                f.write(data)
        with atomic_write(path, "w") as f:
            json.dump(self.to_dict(), f, ensure_ascii=True, indent=1)
            f.write("\n")
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_vocab={self.n_vocab}, eot_id={self.eot_id})"


def check_text(text: object, who: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{who}.encode: text must be a str, got {type(text).__name__}")


def as_id_list(ids: Iterable[int] | Array | Tensor, n_vocab: int, who: str) -> list[int]:
    """``ids`` as a list of Python ints, each checked to lie in [0, n_vocab)."""
    if hasattr(ids, "data") and hasattr(ids, "backward"):  # a tinygrad_llm Tensor
        ids = ids.data
    if hasattr(ids, "get") and not isinstance(ids, dict):  # a CuPy array: bring it to the host
        ids = ids.get()
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"{who}.decode: ids must be 1-D, got shape {ids.shape} (decode each row separately)")
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"{who}.decode: ids must be integers, got dtype {ids.dtype}")
        ids = ids.tolist()
    else:
        ids = list(ids)
        for i in ids:
            if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
                raise TypeError(f"{who}.decode: ids must be integers, got {i!r} ({type(i).__name__})")
        ids = [int(i) for i in ids]
    if ids:
        low, high = min(ids), max(ids)
        if low < 0 or high >= n_vocab:
            bad = low if low < 0 else high
            raise ValueError(f"{who}.decode: token id {bad} is outside the vocabulary [0, {n_vocab})")
    return ids


def disallowed_special_error(token: str) -> ValueError:
    # the same wording as tiktoken's, so users of either see one message
    return ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}.\n"
        f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
        f"e.g. `allowed_special={{{token!r}, ...}}`.\n"
        f"If you want this text to be encoded as normal text, disable the check for this token by passing "
        f"`disallowed_special=(tokenizer.special_tokens.keys() - {{{token!r}}})`.\n"
        "To disable this check for all special tokens, pass `disallowed_special=()`.\n"
    )


def resolve_special(
    special_tokens: Iterable[str], allowed_special: str | Iterable[str], disallowed_special: str | Iterable[str]
) -> tuple[set[str], set[str]]:
    """tiktoken's defaults: "all" allowed means every special token; "all" disallowed means every one not allowed.

    Only special tokens this tokenizer has count: allowing ``<|endoftext|>`` on a tokenizer without it is a no-op.
    """
    specials = set(special_tokens)
    allowed = specials if allowed_special == "all" else set(allowed_special) & specials
    disallowed = specials - allowed if disallowed_special == "all" else set(disallowed_special) & specials
    return allowed, disallowed


def split_special(
    text: str,
    special_tokens: dict[str, int],
    allowed_special: str | Iterable[str],
    disallowed_special: str | Iterable[str],
) -> Iterator[tuple[str, int | None]]:
    """Yield (piece, None) for ordinary text and (token, id) for each allowed special token, in order."""
    allowed, disallowed = resolve_special(special_tokens, allowed_special, disallowed_special)
    if disallowed:
        match = re.search("|".join(map(re.escape, sorted(disallowed, key=len, reverse=True))), text)
        if match:
            raise disallowed_special_error(match.group())
    if not allowed:
        yield text, None
        return
    pattern = re.compile("|".join(map(re.escape, sorted(allowed, key=len, reverse=True))))
    start = 0
    for match in pattern.finditer(text):
        if match.start() > start:
            yield text[start : match.start()], None
        yield match.group(), special_tokens[match.group()]
        start = match.end()
    if start < len(text):
        yield text[start:], None
