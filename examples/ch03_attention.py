"""Chapter 3: coding attention mechanisms, step by step, on tinygrad_llm tensors.

    python examples/ch03_attention.py [--device cpu|cuda]

1. simplified self-attention without trainable weights (dot products, softmax, weighted sums)
2. self-attention with trainable query/key/value weights (SelfAttention_v1 and _v2)
3. the causal mask (hide the future), and dropout on the attention weights
4. a compact causal attention class, and multi-head attention as a wrapper of several heads
5. the library's MultiHeadAttention (one fused QKV projection), the one GPTModel uses

The six-token sentence "Your journey starts with one step" with 3-dimensional embeddings, as the book.
"""

from __future__ import annotations

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import nn
from tinygrad_llm.cli.common import example_parser, run_example  # --help, --device, Ctrl-C
from tinygrad_llm.model import MultiHeadAttention

np.set_printoptions(precision=4, suppress=True)

INPUTS = np.array(
    [
        [0.43, 0.15, 0.89],  # Your     (x^1)
        [0.55, 0.87, 0.66],  # journey  (x^2)
        [0.57, 0.85, 0.64],  # starts   (x^3)
        [0.22, 0.58, 0.33],  # with     (x^4)
        [0.77, 0.25, 0.10],  # one      (x^5)
        [0.05, 0.80, 0.55],
    ],  # step    (x^6)
    dtype=np.float32,
)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


# ---- 3.3 simplified self-attention --------------------------------------------------------------------


def simplified_attention(inputs: tl.Tensor) -> None:
    section("3.3 simplified self-attention (no trainable weights)")
    query = inputs[1]  # the second token, "journey", as the query: (3,)
    attn_scores_2 = inputs @ query  # (6, 3) @ (3,) -> (6,): one dot product per token
    print("attention scores of 'journey':", attn_scores_2.numpy())
    attn_weights_2 = F.softmax(attn_scores_2, axis=0)  # normalised: positive, summing to 1
    print("attention weights:", attn_weights_2.numpy(), "sum:", float(attn_weights_2.sum().item()))
    context_vec_2 = (attn_weights_2.reshape(6, 1) * inputs).sum(axis=0)  # (6, 1) * (6, 3) -> (3,)
    print("context vector z^2:", context_vec_2.numpy())

    attn_scores = inputs @ inputs.T  # (6, 3) @ (3, 6) -> (6, 6): all pairs at once
    attn_weights = F.softmax(attn_scores, axis=-1)  # each row sums to 1
    print("all attention weights:\n", attn_weights.numpy())
    all_context_vecs = attn_weights @ inputs  # (6, 6) @ (6, 3) -> (6, 3)
    print("all context vectors:\n", all_context_vecs.numpy())


# ---- 3.4 self-attention with trainable weights ----------------------------------------------------------


class SelfAttention_v1(nn.Module):
    """Self-attention with weight matrices as bare Parameters (d_in, d_out)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        gen = np.random.default_rng(123)
        self.W_query = nn.Parameter(gen.random((d_in, d_out), dtype=np.float32))
        self.W_key = nn.Parameter(gen.random((d_in, d_out), dtype=np.float32))
        self.W_value = nn.Parameter(gen.random((d_in, d_out), dtype=np.float32))

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        keys = x @ self.W_key  # (6, d_in) @ (d_in, d_out) -> (6, d_out)
        queries = x @ self.W_query
        values = x @ self.W_value
        attn_scores = queries @ keys.T  # (6, d_out) @ (d_out, 6) -> (6, 6)
        attn_weights = F.softmax(attn_scores / keys.shape[-1] ** 0.5, axis=-1)  # scaled dot-product
        return attn_weights @ values  # (6, 6) @ (6, d_out) -> (6, d_out)


class SelfAttention_v2(nn.Module):
    """The same with Linear layers (weights stored (d_out, d_in), a better initialisation)."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        keys, queries, values = self.W_key(x), self.W_query(x), self.W_value(x)  # (6, d_in) -> (6, d_out)
        attn_scores = queries @ keys.T  # (6, 6)
        attn_weights = F.softmax(attn_scores / keys.shape[-1] ** 0.5, axis=-1)
        return attn_weights @ values  # (6, d_out)


def trainable_attention(inputs: tl.Tensor, device: str) -> SelfAttention_v2:
    section("3.4 self-attention with trainable weights")
    d_in, d_out = inputs.shape[1], 2
    sa_v1 = SelfAttention_v1(d_in, d_out).to(device)
    print("SelfAttention_v1 output (6, 2):\n", sa_v1(inputs).numpy())
    tl.manual_seed(789)
    sa_v2 = SelfAttention_v2(d_in, d_out).to(device)
    print("SelfAttention_v2 output (6, 2):\n", sa_v2(inputs).numpy())
    return sa_v2


# ---- 3.5 causal attention -------------------------------------------------------------------------------


def causal_masking(inputs: tl.Tensor, sa_v2: SelfAttention_v2) -> None:
    section("3.5 hiding future words with causal attention")
    queries, keys = sa_v2.W_query(inputs), sa_v2.W_key(inputs)
    attn_scores = queries @ keys.T  # (6, 6)
    context_length = attn_scores.shape[0]

    # first way: softmax, zero the upper triangle, renormalise the rows
    attn_weights = F.softmax(attn_scores / keys.shape[-1] ** 0.5, axis=-1)
    mask_simple = np.tril(np.ones((context_length, context_length), dtype=np.float32))
    masked_simple = attn_weights * mask_simple
    masked_simple_norm = masked_simple / masked_simple.sum(axis=-1, keepdims=True)
    print("masked and renormalised weights:\n", masked_simple_norm.numpy())

    # better: -inf above the diagonal before the softmax (exp(-inf) = 0), one pass
    mask = np.triu(np.ones((context_length, context_length), dtype=bool), k=1)
    masked = attn_scores.masked_fill(mask, -np.inf)
    print("scores with -inf above the diagonal:\n", masked.numpy())
    attn_weights = F.softmax(masked / keys.shape[-1] ** 0.5, axis=-1)
    print("causal attention weights (same as above):\n", attn_weights.numpy())

    section("3.5.2 dropout on the attention weights (p = 0.5: survivors scaled by 2)")
    tl.manual_seed(123)
    dropout = nn.Dropout(0.5)
    ones = tl.Tensor(np.ones((6, 6), np.float32), device=inputs.device)
    print("dropout of a (6, 6) matrix of ones:\n", dropout(ones).numpy())
    print("dropout of the attention weights:\n", dropout(attn_weights).numpy())


class CausalAttention(nn.Module):
    """Self-attention for batches (B, T, d_in) with the causal mask and dropout: one head."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", np.triu(np.ones((context_length, context_length), dtype=bool), k=1))

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        b, num_tokens, d_in = x.shape
        keys, queries, values = self.W_key(x), self.W_query(x), self.W_value(x)  # (B, T, d_out) each
        attn_scores = queries @ keys.swapaxes(1, 2)  # (B, T, d_out) @ (B, d_out, T) -> (B, T, T)
        attn_scores = attn_scores.masked_fill(self.mask[:num_tokens, :num_tokens], -np.inf)
        attn_weights = F.softmax(attn_scores / keys.shape[-1] ** 0.5, axis=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values  # (B, T, T) @ (B, T, d_out) -> (B, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """Several CausalAttention heads side by side; their outputs concatenated on the last axis."""

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int, qkv_bias: bool = False
    ):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        return F.concatenate([head(x) for head in self.heads], axis=-1)  # H x (B, T, d_out) -> (B, T, H*d_out)


def multi_head(inputs: tl.Tensor, device: str) -> None:
    batch = F.stack([inputs, inputs], axis=0)  # two copies: (2, 6, 3)
    print(f"\nbatch shape: {batch.shape}")

    section("3.5.3 a compact causal attention class")
    tl.manual_seed(123)
    ca = CausalAttention(3, 2, batch.shape[1], 0.0).to(device)
    context_vecs = ca(batch)
    print("context_vecs.shape:", context_vecs.shape)

    section("3.6.1 stacking single heads: MultiHeadAttentionWrapper (2 heads of 2)")
    tl.manual_seed(123)
    mha = MultiHeadAttentionWrapper(3, 2, batch.shape[1], 0.0, num_heads=2).to(device)
    context_vecs = mha(batch)
    print(context_vecs.numpy())
    print("context_vecs.shape:", context_vecs.shape)

    section("3.6.2 efficient multi-head attention (tinygrad_llm.model.MultiHeadAttention, fused QKV)")
    tl.manual_seed(123)
    mha = MultiHeadAttention(d_in=3, d_out=2, context_length=batch.shape[1], dropout=0.0, num_heads=2).to(device)
    print(mha)
    context_vecs = mha(batch)
    print(context_vecs.numpy())
    print("context_vecs.shape:", context_vecs.shape)
    gpt2 = MultiHeadAttention(d_in=768, d_out=768, context_length=1024, dropout=0.0, num_heads=12)
    print(
        f"GPT-2 small's attention layer: {gpt2.num_parameters():,} parameters "
        f"(W_qkv {tuple(gpt2.W_qkv.weight.shape)}, out_proj {tuple(gpt2.out_proj.weight.shape)})"
    )


def main(argv=None) -> None:
    parser = example_parser(__doc__)
    args = parser.parse_args(argv)
    try:
        inputs = tl.Tensor(INPUTS, device=args.device)
    except RuntimeError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"inputs: {inputs.shape} (6 tokens, 3-dimensional embeddings) on {inputs.device}")
    simplified_attention(inputs)
    sa_v2 = trainable_attention(inputs, args.device)
    causal_masking(inputs, sa_v2)
    multi_head(inputs, args.device)


if __name__ == "__main__":
    run_example(main)
