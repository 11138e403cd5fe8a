"""A byte-level BPE tokenizer from a list of merges (trained by ``train_bpe``), encoded by tiktoken.

Ids 0..255 are the bytes; merge k (a pair of ids) makes id 256 + k, whose bytes are the two parts' bytes
joined; special tokens come after the merges. ``encode_slow`` is the textbook algorithm in plain Python (the
reference the tests hold tiktoken to): split the text with the pre-tokenisation regex, then within each piece
repeatedly apply the earliest-learned merge present, all its occurrences left to right, until none applies.

One regex engine splits the text everywhere: the Python ``regex`` module, which the trainer learned the merges
on. tiktoken splits with its own (Rust) engine, whose Unicode tables may be older or newer: a character
assigned in one Unicode version but not the other (U+323B0, a CJK letter since Unicode 17, is "unassigned"
to an older table) is a letter to one engine and punctuation to the other, so the two split ``"A\U000323b0"``
differently and a merge learned across that boundary would apply in one and not the other. ASCII is the same
in every Unicode version, so ASCII text goes through tiktoken whole; other text is split here and only each
piece's merges are done by tiktoken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm.tokenizer.base import DEFAULT_ALLOWED, ENDOFTEXT, check_text, split_special
from tinygrad_llm.tokenizer.gpt2 import GPT2_PATTERN, TiktokenTokenizer

if TYPE_CHECKING:
    from collections.abc import Iterable


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` (left to right, not overlapping) by ``new_id``."""
    out, i, n = [], 0, len(ids)
    first, second = pair
    while i < n:
        if i < n - 1 and ids[i] == first and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def token_bytes_from_merges(merges: Iterable[tuple[int, int]]) -> list[bytes]:
    """The bytes of every non-special id: 256 single bytes, then one token per merge."""
    vocab = [bytes([b]) for b in range(256)]
    for k, (first, second) in enumerate(merges):
        if not (0 <= first < len(vocab) and 0 <= second < len(vocab)):
            raise ValueError(f"BPE merge {k} ({first}, {second}) refers to an id not yet defined (< {len(vocab)})")
        vocab.append(vocab[first] + vocab[second])
    return vocab


class BPETokenizer(TiktokenTokenizer):
    """Byte-level BPE: ``merges`` [(id, id), ...] in the order learned, ``special_tokens`` names (ids follow the
    merges) or {name: id}, ``pattern`` the pre-tokenisation regex (GPT-2's by default)."""

    def __init__(self, merges, special_tokens=(ENDOFTEXT,), pattern: str = GPT2_PATTERN, name: str = "bpe"):
        import tiktoken

        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self.token_bytes = token_bytes_from_merges(self.merges)
        ranks = {token: rank for rank, token in enumerate(self.token_bytes)}
        if len(ranks) != len(self.token_bytes):
            raise ValueError("BPETokenizer: two merges make the same token bytes; every token must be unique")
        if not isinstance(special_tokens, dict):
            special_tokens = {token: len(ranks) + i for i, token in enumerate(special_tokens)}
        expected = list(range(len(ranks), len(ranks) + len(special_tokens)))
        if sorted(special_tokens.values()) != expected:
            raise ValueError(f"BPETokenizer: special token ids must be {expected}, got {special_tokens}")
        encoding = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(special_tokens))
        super().__init__(encoding, name=name)

    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = DEFAULT_ALLOWED,
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        check_text(text, type(self).__name__)
        if text.isascii():  # every Unicode version classifies ASCII alike: tiktoken's split is the trainer's
            return super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        import regex

        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates become U+FFFD, as tiktoken's own encode does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        ids: list[int] = []
        piece_ids: dict[str, list[int]] = {}  # texts repeat their words: each distinct piece is merged once
        for part, special_id in split_special(text, self.special_tokens, allowed_special, disallowed_special):
            if special_id is not None:
                ids.append(special_id)
                continue
            for piece in regex.findall(self.pattern, part):
                if piece not in piece_ids:
                    piece_ids[piece] = self.encoding._core_bpe.encode_single_piece(piece.encode("utf-8"))
                ids.extend(piece_ids[piece])
        return ids

    def to_dict(self) -> dict:
        return {
            "type": "bpe",
            "name": self.name,
            "pattern": self.pattern,
            "merges": [list(pair) for pair in self.merges],
            "special_tokens": self.special_tokens,
        }

    def encode_slow(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = DEFAULT_ALLOWED,
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        """The same ids as ``encode``, computed merge by merge in Python (slow: for teaching and tests)."""
        import regex

        check_text(text, "BPETokenizer.encode_slow")
        rank_of_pair = {pair: 256 + k for k, pair in enumerate(self.merges)}
        ids: list[int] = []
        for piece, special_id in split_special(text, self.special_tokens, allowed_special, disallowed_special):
            if special_id is not None:
                ids.append(special_id)
                continue
            for word in regex.findall(self.pattern, piece):
                word_ids = list(word.encode("utf-8"))
                while len(word_ids) >= 2:
                    # the earliest-learned merge among the adjacent pairs
                    pair = min(zip(word_ids, word_ids[1:]), key=lambda p: rank_of_pair.get(p, float("inf")))
                    if pair not in rank_of_pair:
                        break
                    word_ids = merge_pair(word_ids, pair, rank_of_pair[pair])
                ids.extend(word_ids)
        return ids
