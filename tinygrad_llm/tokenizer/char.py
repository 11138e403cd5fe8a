"""Character-level and byte-level tokenizers: the smallest vocabularies.

CharTokenizer numbers the sorted distinct characters of a text (nanoGPT's shakespeare_char: 65 characters for
Tiny Shakespeare); it has no end-of-text token. ByteTokenizer needs no training: ids 0..255 are the UTF-8
bytes, and 256 is ``<|endoftext|>``; any text round-trips.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm.tokenizer.base import ENDOFTEXT, Tokenizer, as_id_list, check_text

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tensor import Tensor


class CharTokenizer(Tokenizer):
    """One id per character of ``chars`` (build it from a text with ``CharTokenizer.from_text``)."""

    def __init__(self, chars):
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer: the character set is empty (build it from a non-empty text)")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer: chars must be distinct single characters")
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.name = "char"
        self.special_tokens = {}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        check_text(text, "CharTokenizer.from_text")
        if not text:
            raise ValueError("CharTokenizer.from_text: text is empty")
        return cls(sorted(set(text)))

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    def _encode_ordinary(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            position = next(i for i, c in enumerate(text) if c not in stoi)
            raise ValueError(
                f"CharTokenizer.encode: character {text[position]!r} at position {position} is not in "
                f"the vocabulary of {self.n_vocab} characters"
            ) from None

    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        chars = self.chars
        return "".join(chars[i] for i in as_id_list(ids, self.n_vocab, "CharTokenizer"))

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, ``<|endoftext|>`` = 256."""

    def __init__(self):
        self.name = "byte"
        self.special_tokens = {ENDOFTEXT: 256}

    @property
    def n_vocab(self) -> int:
        return 257

    def _encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="surrogatepass"))

    def _decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(ENDOFTEXT.encode() if i == 256 else bytes((i,)) for i in ids) if 256 in ids else bytes(ids)

    def to_dict(self) -> dict:
        return {"type": "byte"}
