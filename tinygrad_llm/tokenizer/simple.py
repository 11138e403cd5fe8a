"""Chapter 2's word-level tokenizers: split on punctuation and whitespace, look each word up in a vocabulary.

    vocab = build_vocab(text)                  # {"!": 0, '"': 1, ..., "<|endoftext|>": 1130, "<|unk|>": 1131}
    tok = SimpleTokenizerV2(vocab)
    tok.decode(tok.encode("Hello, do you like tea?"))   # '<|unk|>, do you like tea?'

V1 knows only the words of its vocabulary (an unknown word raises); V2 maps unknown words to ``<|unk|>`` and
knows ``<|endoftext|>``, the separator the book puts between unrelated texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tinygrad_llm.tokenizer.base import ENDOFTEXT, Tokenizer, as_id_list, check_text

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.tensor import Tensor

UNK = "<|unk|>"
SPLIT_PATTERN = r'([,.:;?_!"()\']|--|\s)'  # the book's: punctuation, double dashes and whitespace


def split_words(text: str) -> list[str]:
    """The book's preprocessing: split, keep the separators, drop whitespace-only pieces."""
    preprocessed = re.split(SPLIT_PATTERN, text)
    return [item.strip() for item in preprocessed if item.strip()]


def build_vocab(text: str, special_tokens: Iterable[str] = (ENDOFTEXT, UNK)) -> dict[str, int]:
    """Sorted distinct words of ``text`` then ``special_tokens``, numbered from 0 (the book's vocabulary)."""
    check_text(text, "build_vocab")
    words = split_words(text)
    if not words:
        raise ValueError("build_vocab: text is empty (no words to build a vocabulary from)")
    all_tokens = sorted(set(words))
    all_tokens.extend(t for t in special_tokens if t not in all_tokens)
    return {token: integer for integer, token in enumerate(all_tokens)}


class UnknownWordError(KeyError, ValueError):
    """A word that is not in a SimpleTokenizerV1's vocabulary (a KeyError, as in the book)."""

    def __str__(self) -> str:
        return str(self.args[0])


class SimpleTokenizerV1(Tokenizer):
    """Word-level tokenizer over a fixed vocabulary ``{word: id}``; unknown words raise UnknownWordError."""

    version = 1

    def __init__(self, vocab: dict[str, int]):
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError(f"{type(self).__name__}: vocab must be a non-empty dict {{word: id}}, got {vocab!r:.80}")
        ids = sorted(vocab.values())
        if ids != list(range(len(vocab))):
            raise ValueError(f"{type(self).__name__}: vocab ids must be 0..{len(vocab) - 1}, each used once")
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in vocab.items()}
        self.name = f"simple-v{self.version}"
        self.special_tokens = {t: vocab[t] for t in (ENDOFTEXT, UNK) if t in vocab}

    @property
    def n_vocab(self) -> int:
        return len(self.str_to_int)

    def encode(self, text: str, **_ignored) -> list[int]:
        check_text(text, type(self).__name__)
        preprocessed = split_words(text)
        for word in preprocessed:
            if word not in self.str_to_int:
                raise UnknownWordError(
                    f"{type(self).__name__}: word {word!r} is not in the vocabulary "
                    f"({self.n_vocab} words); SimpleTokenizerV2 maps unknown words to {UNK}"
                )
        return [self.str_to_int[s] for s in preprocessed]

    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        ids = as_id_list(ids, self.n_vocab, type(self).__name__)
        text = " ".join(self.int_to_str[i] for i in ids)
        # remove the spaces before the specified punctuation
        return re.sub(r'\s+([,.?!"()\'])', r"\1", text)

    def to_dict(self) -> dict:
        return {"type": "simple", "version": self.version, "vocab": self.str_to_int}


class SimpleTokenizerV2(SimpleTokenizerV1):
    """SimpleTokenizerV1 plus ``<|unk|>`` for unknown words (the vocabulary must contain it)."""

    version = 2

    def __init__(self, vocab: dict[str, int]):
        super().__init__(vocab)
        if UNK not in vocab:
            raise ValueError(f"SimpleTokenizerV2: vocab has no {UNK} entry (build it with build_vocab(text))")

    def encode(self, text: str, **_ignored) -> list[int]:
        check_text(text, type(self).__name__)
        preprocessed = split_words(text)
        preprocessed = [item if item in self.str_to_int else UNK for item in preprocessed]
        return [self.str_to_int[s] for s in preprocessed]

    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        ids = as_id_list(ids, self.n_vocab, type(self).__name__)
        text = " ".join(self.int_to_str[i] for i in ids)
        # replace spaces before the specified punctuations
        return re.sub(r'\s+([,.:;?!"()\'])', r"\1", text)
