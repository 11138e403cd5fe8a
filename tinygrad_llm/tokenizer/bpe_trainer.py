"""Train a byte-level BPE vocabulary on a text: the algorithm behind GPT-2's tokenizer, in one screen.

1. Pre-tokenise: split the text with GPT-2's regex into pieces (words with their leading space, numbers,
   punctuation runs, whitespace); merges never cross a piece boundary. Equal pieces are counted once with a
   multiplicity, so the work scales with the number of distinct pieces, not the text length.
2. Start from the 256 byte ids. Repeatedly find the most frequent adjacent pair of ids (ties: the smallest
   pair, so training is deterministic), give it a new id, and replace it in every piece that contains it.

Recounting every pair after each merge would cost O(text) per merge. Instead we keep the pair counts and,
for each pair, the set of pieces it occurs in: a merge touches only those pieces, subtracting their old pairs
and adding their new ones. A heap ordered by (-count, pair) finds the best pair; entries whose count has since
changed are stale and skipped when popped ("lazy deletion").

The book's own teaching BPE (its chapter-2 bonus) is ``BPETokenizerSimple`` (bpe_simple.py). It differs
from this one in three ways: its alphabet is characters (chr(0)..chr(255) plus those of the text), not
bytes, so a character it never saw cannot be encoded; it marks spaces with "Ġ" and counts pairs over the
whole text, across word boundaries, instead of within GPT-2's regex pieces; and it encodes in Python, not
through tiktoken. Both learn the most frequent pair first; ties go to the smallest pair here, to the pair
seen first there.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable

from tinygrad_llm.tokenizer.base import ENDOFTEXT, check_text
from tinygrad_llm.tokenizer.bpe import BPETokenizer, merge_pair
from tinygrad_llm.tokenizer.gpt2 import GPT2_PATTERN


def count_pieces(text: str, pattern: str, special_tokens: Iterable[str]) -> Counter:
    """{piece bytes: count} of the pre-tokenised text; special tokens are cut out (never merged into words)."""
    import regex

    parts = [text]
    if special_tokens:
        parts = regex.split("|".join(regex.escape(t) for t in special_tokens), text)
    counts: Counter = Counter()
    for part in parts:
        counts.update(regex.findall(pattern, part))
    return Counter({piece.encode("utf-8", errors="surrogatepass"): n for piece, n in counts.items()})


def train_bpe(
    text: str,
    vocab_size: int,
    special_tokens: Iterable[str] = (ENDOFTEXT,),
    pattern: str = GPT2_PATTERN,
    name: str = "bpe",
    verbose: bool = False,
) -> BPETokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``; returns a BPETokenizer.

    A text too small to offer that many merges (no adjacent pair left within any piece) stops early with a
    warning: the vocabulary is then smaller than ``vocab_size``.
    """
    check_text(text, "train_bpe")
    special_tokens = list(special_tokens)
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"train_bpe: vocab_size must be an int >= 256 + {len(special_tokens)} special tokens "
            f"= {256 + len(special_tokens)}, got {vocab_size!r}"
        )
    if not text:
        raise ValueError("train_bpe: text is empty")
    n_merges = vocab_size - 256 - len(special_tokens)

    piece_counts = count_pieces(text, pattern, special_tokens)
    words = [list(piece) for piece in piece_counts]  # each distinct piece as a list of ids
    freqs = list(piece_counts.values())  # how often it occurs in the text
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of the words it occurs in
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    token_bytes = [bytes([b]) for b in range(256)]
    known = set(token_bytes)
    merges: list[tuple[int, int]] = []
    banned: set[tuple[int, int]] = set()
    while len(merges) < n_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair in banned or pair_counts.get(pair) != -negative_count:
            continue  # stale entry: the count changed after it was pushed
        new_bytes = token_bytes[pair[0]] + token_bytes[pair[1]]
        if new_bytes in known:
            # the same bytes were already made by another pair (e.g. ab+c and a+bc): a token must be unique
            banned.add(pair)
            continue
        new_id = len(token_bytes)
        merges.append(pair)
        token_bytes.append(new_bytes)
        known.add(new_bytes)
        changed = set()
        for w in where.pop(pair):
            word = words[w]
            new_word = merge_pair(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # stale membership: an earlier merge already consumed the pair in this word
            freq = freqs[w]
            for old in zip(word, word[1:]):
                pair_counts[old] -= freq
                changed.add(old)
            for new in zip(new_word, new_word[1:]):
                pair_counts[new] += freq
                where[new].add(w)
                changed.add(new)
            words[w] = new_word
        for p in changed:
            count = pair_counts[p]
            if count > 0:
                heapq.heappush(heap, (-count, p))
            else:
                del pair_counts[p]
                where.pop(p, None)
        if verbose and len(merges) % 100 == 0:
            print(f"merge {len(merges)}/{n_merges}: {pair} -> {new_id} {new_bytes!r} ({-negative_count} occurrences)")
    if len(merges) < n_merges:
        warnings.warn(
            f"train_bpe: the text allows only {len(merges)} merges, not {n_merges}: the vocabulary has "
            f"{256 + len(merges) + len(special_tokens)} tokens instead of {vocab_size}",
            stacklevel=2,
        )
    return BPETokenizer(merges, special_tokens, pattern=pattern, name=name)
