"""Causal multi-head self-attention with one fused QKV projection, and the KV cache for decoding.

The chapter 3 progression (attention without weights, with trainable weights, the causal mask, dropout,
a wrapper of single heads) is in examples/ch03_attention.py; this is the efficient form the book ends
with, one step further: the query, key and value projections are one (d_in -> 3 * d_out) Linear, so a
single matrix product computes all three (as GPT-2's ``c_attn``).
"""

from __future__ import annotations

import math

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.backend import Array
from tinygrad_llm.nn import Dropout, Linear, Module
from tinygrad_llm.tensor import Tensor, no_grad


class LayerKVCache:
    """The keys and values one attention layer has computed so far: arrays (B, n_heads, max_length, head_dim)
    filled up to ``length``. Allocated on first use with the batch size, dtype and device it is given."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.keys = self.values = None
        self.length = 0

    def update(self, keys: Array, values: Array) -> tuple[Array, Array]:
        """Append new keys/values (B, H, T_new, hd); return all of them so far, (B, H, length, hd) views."""
        batch, heads, t_new, head_dim = keys.shape
        if self.length + t_new > self.max_length:
            raise RuntimeError(
                f"KV cache is full: it holds {self.length} positions and {t_new} more would pass "
                f"its capacity of {self.max_length} (the context length); call reset() and "
                f"feed the last {self.max_length} tokens again, as generate() does"
            )
        if self.keys is None:
            xp = backend.get_array_module(keys)
            shape = (batch, heads, self.max_length, head_dim)
            self.keys, self.values = xp.empty(shape, dtype=keys.dtype), xp.empty(shape, dtype=values.dtype)
        elif self.keys.shape[0] != batch:
            raise ValueError(f"KV cache was filled with a batch of {self.keys.shape[0]} sequences, got {batch}")
        end = self.length + t_new
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """One LayerKVCache per transformer block. ``length`` is the number of positions already seen, so the
    next tokens fed to the model get positions ``length, length + 1, ...``.

        cache = KVCache(model.config.n_layers, model.config.context_length)
        logits = model(prompt_ids, cache=cache)      # prefill: (B, T) -> (B, T, vocab)
        logits = model(next_ids[:, None], cache=cache)  # one step: (B, 1) -> (B, 1, vocab)
    """

    def __init__(self, n_layers: int, max_length: int):
        self.max_length = max_length
        self.layers = [LayerKVCache(max_length) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0

    def __len__(self) -> int:
        return self.length


class MultiHeadAttention(Module):
    """Multi-head self-attention: (B, T, d_in) -> (B, T, d_out); causal (GPT, the decoder) unless
    ``causal=False`` (BERT, the encoder: every token sees every other one).

    The book's signature and attribute names (``out_proj``, ``dropout``), with the three projections
    fused into ``W_qkv`` (d_in -> 3 * d_out: queries, then keys, then values along the output axis).
    ``attention_mask`` (B, S), 1 = a real token and 0 = padding, keeps queries from attending to padded
    keys; both halves take it, and it is the only thing besides ``causal`` that differs between them.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        causal: bool = True,
    ):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"MultiHeadAttention: d_out {d_out} must be divisible by num_heads {num_heads}")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length, self.causal = context_length, causal
        self.W_qkv = Linear(d_in, 3 * d_out, bias=qkv_bias)
        self.out_proj = Linear(d_out, d_out)  # combines the heads' outputs
        self.dropout = Dropout(dropout)
        self.keep_attention = False  # True: forward keeps its weights in .last_attention (tinygrad-llm attention)
        # No stored (context, context) mask: F.causal_softmax masks while it normalises (see forward).

    def forward(self, x: Tensor, cache: LayerKVCache | None = None, attention_mask: Array | None = None) -> Tensor:
        """x (B, T, d_in); ``attention_mask`` (B, S): 1/True for keys to attend to, 0/False for padding,
        S = the cached positions + T; None attends to every key (causally, for a causal layer)."""
        b, num_tokens, _ = x.shape
        h, hd = self.num_heads, self.head_dim
        qkv = self.W_qkv(x)  # (B, T, d_in) -> (B, T, 3 * d_out)
        qkv = qkv.reshape(b, num_tokens, 3, h, hd)  # (B, T, 3 * d_out) -> (B, T, 3, H, hd)
        qkv = qkv.transpose(2, 0, 3, 1, 4)  # (B, T, 3, H, hd) -> (3, B, H, T, hd)
        queries, keys, values = qkv[0], qkv[1], qkv[2]  # each (B, H, T, hd)

        if cache is not None:  # the new tokens' keys and values join the cached ones (start: cache.length)
            past_keys, past_values = cache.update(keys.data, values.data)  # (B, H, start + T, hd) each
            keys, values = Tensor._from_op(past_keys, None), Tensor._from_op(past_values, None)

        if self.causal and attention_mask is None:  # GPT's usual case: the fused operation
            # The book's five steps, as one operation (F.causal_attention; its backward recomputes the weights
            # instead of keeping three (B, H, T, S) arrays):
            #   attn_scores = queries @ keys^T                       (B, H, T, hd) @ (B, H, hd, S) -> (B, H, T, S)
            #   scale by 1/sqrt(hd), mask the future (query i sits at position start + i and sees keys
            #   j <= start + i; the book's masked_fill with -inf), softmax: rows sum to 1
            #   dropout on the weights, then attn_weights @ values  (B, H, T, S) @ (B, H, S, hd) -> (B, H, T, hd)
            context = F.causal_attention(queries, keys, values, dropout=self.dropout.p, training=self.training)
        else:  # bidirectional (BERT) or padded: the same steps written out, the mask in the softmax
            attn_scores = queries @ keys.swapaxes(-1, -2)  # (B, H, T, hd) @ (B, H, hd, S) -> (B, H, T, S)
            # scale by 1/sqrt(hd), mask (the future if causal; the padded keys: (B, S) -> (B, 1, 1, S), the same
            # for every head and query), softmax; masked weights are exactly 0
            key_mask = None
            if attention_mask is not None:
                key_mask = _key_padding_mask(attention_mask, b, keys.shape[2], queries.data)
            attn_weights = F.masked_softmax(
                attn_scores, key_mask, scale=1.0 / math.sqrt(hd), causal=self.causal
            )  # (B, H, T, S), rows sum to 1
            attn_weights = self.dropout(attn_weights)

            context = attn_weights @ values  # (B, H, T, S) @ (B, H, S, hd) -> (B, H, T, hd)
        if self.keep_attention:  # tinygrad-llm attention: the weights again, before dropout, not recorded
            with no_grad():
                key_mask = (
                    None
                    if attention_mask is None
                    else _key_padding_mask(attention_mask, b, keys.shape[2], queries.data)
                )
                scores = queries @ keys.swapaxes(-1, -2)  # (B, H, T, S)
                self.last_attention = F.masked_softmax(
                    scores, key_mask, scale=1.0 / math.sqrt(hd), causal=self.causal
                ).data
        context = context.transpose(0, 2, 1, 3)  # (B, H, T, hd) -> (B, T, H, hd)
        context = context.reshape(b, num_tokens, self.d_out)  # (B, T, H, hd) -> (B, T, d_out)
        return self.out_proj(context)  # (B, T, d_out) -> (B, T, d_out)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, context_length={self.context_length}, "
            f"causal={self.causal}"
        )


def _key_padding_mask(attention_mask, batch: int, n_keys: int, like):
    """A (B, S) mask of 1/0 (or booleans; array or Tensor) as booleans (B, 1, 1, S), on ``like``'s device."""
    xp = backend.get_array_module(like)
    mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    mask = xp.asarray(backend.to_device(mask, backend.device_of(like)))
    if mask.shape != (batch, n_keys):
        raise ValueError(
            f"attention_mask has shape {mask.shape}, expected (batch, keys) = ({batch}, {n_keys}) "
            f"(1 for tokens to attend to, 0 for padding; with a KV cache: every position so far)"
        )
    return (mask != 0)[:, None, None, :]  # (B, S) -> (B, 1, 1, S)
