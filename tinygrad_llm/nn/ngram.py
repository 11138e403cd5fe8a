"""Hashed n-gram embeddings: each position also gets a vector for the n-gram of tokens that ends there.

    ngrams = HashedNGramEmbedding(sizes=(2, 3, 4), buckets=2048, embedding_dim=64)
    x = tok_emb(ids) + ngrams(ids) + pos_emb(...)        # ids (B, T) -> (B, T, C)

A bigram, trigram or 4-gram table would have 257^n rows; instead each n-gram is hashed into one of
``buckets`` rows of a table per size n (collisions are shared rows: the price of a fixed size). This is
fastText's subword trick (Bojanowski et al. 2017) and the Byte Latent Transformer's hash n-gram embeddings
(Pagnoni et al. 2024), both of which add the n-gram vectors to the token's own.

Why a GPT wants them: a model trained from scratch on a thousand short messages of bytes has to learn from
those messages alone that "FREE", "txt" or "0800" are units, with attention over learned absolute
positions, which must learn each word anew at every position it appears. The n-gram vectors hand the first
block those units directly, at any position. On the SMS spam task they earn their place on validation
accuracy alone (``benchmarks/spam_recipe.py``, five fresh splits): +1.9 points [+0.3, +3.5] over the same
model without them.

The n-gram at position i is made of the tokens i-n+1 .. i only, so the model stays causal: a KV cache
carries the last ``max(sizes) - 1`` ids of the sequence to the next call (``context``), and positions
before the start of the sequence (or padding) read as a boundary value of their own.
"""

from __future__ import annotations

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.backend import Array
from tinygrad_llm.nn.layers import Embedding
from tinygrad_llm.nn.module import Module, ModuleList
from tinygrad_llm.tensor import Tensor

BOUNDARY = -1  # the id of a position before the sequence (or of padding): not a token of any vocabulary
_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: each token shifts the hash by a step
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's 64-bit finaliser constant: spreads the bits


def ngram_buckets(ids: Array, n: int, buckets: int, context: Array | None = None) -> Array:
    """Row of each position's n-gram, ids (B, T) -> (B, T) in [0, buckets).

    The n-gram at position i is ids[i-n+1 .. i]; ``context`` (B, k) are the ids just before ``ids`` (a KV
    cache's tail), and any position before those reads as BOUNDARY. Integer arithmetic on the ids' own
    backend (wrapping 64-bit products, as NumPy and CuPy both do), so one n-gram lands in one bucket on
    every device."""
    xp = backend.get_array_module(ids)
    batch, length = ids.shape
    ids = ids.astype(np.int64)
    before = xp.full((batch, n - 1), BOUNDARY, dtype=np.int64)  # positions before the known ones
    if context is not None:
        before = xp.concatenate([before, context.astype(np.int64)], axis=1)
    window = xp.concatenate([before[:, before.shape[1] - (n - 1) :], ids], axis=1)  # (B, n - 1 + T)
    h = xp.zeros((batch, length), dtype=np.uint64)
    for k in range(n):  # oldest token first: window[:, k + i] is token i - (n - 1) + k
        h = h * _MULTIPLIER + (window[:, k : k + length] + 2).astype(np.uint64)  # +2: BOUNDARY -> 1, never 0
    h ^= h >> np.uint64(33)
    h *= _MIX
    h ^= h >> np.uint64(33)
    return (h % np.uint64(buckets)).astype(np.int64)


class HashedNGramEmbedding(Module):
    """Sum over n in ``sizes`` of table_n[hash(n-gram ending at each position)]: ids (B, T) -> (B, T, C).

    One ``Embedding(buckets, embedding_dim)`` per size (``tables.0`` for sizes[0], ...), drawn from N(0, 1)
    like the token embedding they are added to."""

    def __init__(self, sizes, buckets: int, embedding_dim: int, dtype=np.float32):
        super().__init__()
        self.sizes, self.buckets = tuple(int(n) for n in sizes), int(buckets)
        self.tables = ModuleList([Embedding(self.buckets, embedding_dim, dtype=dtype) for _ in self.sizes])

    @property
    def context_size(self) -> int:
        """How many ids before the current ones an n-gram can reach back to: max(sizes) - 1."""
        return max(self.sizes) - 1

    def forward(self, ids: Tensor | Array, context: Array | None = None) -> Tensor:
        ids = ids.data if isinstance(ids, Tensor) else ids
        out = None
        for n, table in zip(self.sizes, self.tables):
            rows = F.embedding(ngram_buckets(ids, n, self.buckets, context), table.weight, check=False)  # (B, T, C)
            out = rows if out is None else out + rows
        return out

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, buckets={self.buckets}"
