# %% [markdown]
# # Chapter 3: attention, step by step
#
# Six tokens, "Your journey starts with one step", each a 3-dimensional embedding. We compute what every
# token should look at (attention weights) and what it sees (context vectors): first with plain dot
# products, then with trainable query/key/value weights, then with the causal mask that hides later
# tokens, and finally with several heads at once, as the GPT of chapter 4 does.
#
# The last part opens the engine: one attention head's forward pass, its graph, `backward()`, every
# gradient beside a finite-difference estimate, and the softmax's gradient derived by hand.
#
# Run it as a script (`python examples/ch03_attention.py`, pictures go into `--out`) or open it as a
# notebook (`jupyter lab examples/`, pictures inline).

# %%
"""Chapter 3: coding attention mechanisms, step by step, on tinygrad_llm tensors.

    python examples/ch03_attention.py [--device cpu|cuda] [--out runs/ch03]

Simplified self-attention, trainable query/key/value weights, the causal mask and dropout, multi-head
attention, then one head's graph and gradients checked against finite differences. The attention maps and
the graph are written into --out (inline when run as a notebook).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import nn
from tinygrad_llm.cli.common import example_parser
from tinygrad_llm.cli.example import example_args, show_graph, show_or_save  # flags; pictures inline or to files
from tinygrad_llm.model import MultiHeadAttention
from tinygrad_llm.train.figures import plot_attention

np.set_printoptions(precision=4, suppress=True)

parser = example_parser(__doc__)
parser.add_argument("--out", default="runs/ch03", help="folder for the attention maps and the graph")
args = example_args(parser)
out = Path(args.out)

WORDS = ["Your", "journey", "starts", "with", "one", "step"]
INPUTS = np.array(
    [
        [0.43, 0.15, 0.89],  # Your     (x^1)
        [0.55, 0.87, 0.66],  # journey  (x^2)
        [0.57, 0.85, 0.64],  # starts   (x^3)
        [0.22, 0.58, 0.33],  # with     (x^4)
        [0.77, 0.25, 0.10],  # one      (x^5)
        [0.05, 0.80, 0.55],  # step     (x^6)
    ],
    dtype=np.float32,
)
try:
    inputs = tl.Tensor(INPUTS, device=args.device)
except RuntimeError as exc:  # --device cuda without a GPU
    parser.exit(1, f"error: {exc}\n")
print(f"inputs: {inputs.shape} (6 tokens, 3-dimensional embeddings) on {inputs.device}")

# %% [markdown]
# ## 3.3 Attention without trainable weights
#
# Take "journey" as the query. Its score against each token is a dot product, (6, 3) @ (3,) -> (6,);
# a softmax turns the scores into weights that are positive and sum to 1; the context vector is the
# weighted sum of all six inputs, a (3,) vector.

# %%
query = inputs[1]  # "journey": (3,)
attn_scores_2 = inputs @ query  # (6, 3) @ (3,) -> (6,): one dot product per token
print("attention scores of 'journey':", attn_scores_2.numpy())
attn_weights_2 = F.softmax(attn_scores_2, axis=0)
print("attention weights:", attn_weights_2.numpy(), "sum:", float(attn_weights_2.sum().item()))
context_vec_2 = (attn_weights_2.reshape(6, 1) * inputs).sum(axis=0)  # (6, 1) * (6, 3) -> (3,)
print("context vector z^2:", context_vec_2.numpy())

# %% [markdown]
# All queries at once are one matrix product, (6, 3) @ (3, 6) -> (6, 6): row i holds what token i looks
# at. In the picture each row sums to 1; similar words ("journey", "starts") look at each other most.

# %%
attn_scores = inputs @ inputs.T  # (6, 3) @ (3, 6) -> (6, 6): all pairs at once
attn_weights = F.softmax(attn_scores, axis=-1)  # each row sums to 1
all_context_vecs = attn_weights @ inputs  # (6, 6) @ (6, 3) -> (6, 3)
print("all context vectors:\n", all_context_vecs.numpy())
show_or_save(
    plot_attention(attn_weights.numpy()[None], WORDS, title="dot-product attention, no trainable weights"),
    out / "attention_simplified.png",
)

# %% [markdown]
# ## 3.4 Self-attention with trainable weights
#
# Each token is projected three times: into a query (what it looks for), a key (what it offers) and a
# value (what it passes on), (6, 3) @ (3, 2) -> (6, 2) each. Scores are queries against keys, divided by
# the square root of the key width so that the softmax does not saturate as widths grow.
# `SelfAttention_v1` holds bare weight matrices; `SelfAttention_v2` uses `Linear` layers.


# %%
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


d_in, d_out = inputs.shape[1], 2
sa_v1 = SelfAttention_v1(d_in, d_out).to(args.device)
print("SelfAttention_v1 output (6, 2):\n", sa_v1(inputs).numpy())
tl.manual_seed(789)
sa_v2 = SelfAttention_v2(d_in, d_out).to(args.device)
print("SelfAttention_v2 output (6, 2):\n", sa_v2(inputs).numpy())

# %% [markdown]
# ## 3.5 Hiding the future: causal attention
#
# A language model predicts the next token, so token i may only look at tokens 0..i. The simple way:
# softmax, zero the upper triangle, renormalise. The better way: put -inf above the diagonal *before* the
# softmax (exp(-inf) = 0), one pass, the same weights. In the picture the upper triangle is dark.

# %%
queries, keys = sa_v2.W_query(inputs), sa_v2.W_key(inputs)
attn_scores = queries @ keys.T  # (6, 6)
context_length = attn_scores.shape[0]

attn_weights = F.softmax(attn_scores / keys.shape[-1] ** 0.5, axis=-1)
mask_simple = np.tril(np.ones((context_length, context_length), dtype=np.float32))
masked_simple = attn_weights * mask_simple
masked_simple_norm = masked_simple / masked_simple.sum(axis=-1, keepdims=True)
print("masked and renormalised weights:\n", masked_simple_norm.numpy())

mask = np.triu(np.ones((context_length, context_length), dtype=bool), k=1)  # True above the diagonal
masked = attn_scores.masked_fill(mask, -np.inf)
attn_weights = F.softmax(masked / keys.shape[-1] ** 0.5, axis=-1)
print("causal attention weights (the same):\n", attn_weights.numpy())
show_or_save(
    plot_attention(attn_weights.numpy()[None], WORDS, title="causal attention (SelfAttention_v2's weights)"),
    out / "attention_causal.png",
)

# %% [markdown]
# Dropout on the attention weights (p = 0.5 here to make it visible; GPT-2 trains with 0.1): half the
# entries become 0 and the survivors are scaled by 2, so the expected sum of each row is unchanged.

# %%
tl.manual_seed(123)
dropout = nn.Dropout(0.5)
ones = tl.Tensor(np.ones((6, 6), np.float32), device=inputs.device)
print("dropout of a (6, 6) matrix of ones:\n", dropout(ones).numpy())
print("dropout of the attention weights:\n", dropout(attn_weights).numpy())

# %% [markdown]
# ## 3.5.3 A compact causal attention class, and 3.6 several heads
#
# `CausalAttention` takes batches (B, T, d_in) and keeps the mask as a buffer. Stacking two of them side
# by side and joining their outputs on the last axis gives multi-head attention: (2, 6, 3) -> (2, 6, 4).


# %%
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


batch = F.stack([inputs, inputs], axis=0)  # two copies: (2, 6, 3)
print(f"batch shape: {batch.shape}")
tl.manual_seed(123)
ca = CausalAttention(3, 2, batch.shape[1], 0.0).to(args.device)
print("CausalAttention output shape:", ca(batch).shape)
tl.manual_seed(123)
wrapper = MultiHeadAttentionWrapper(3, 2, batch.shape[1], 0.0, num_heads=2).to(args.device)
context_vecs = wrapper(batch)
print("MultiHeadAttentionWrapper output (2 heads of 2):\n", context_vecs.numpy())
print("context_vecs.shape:", context_vecs.shape)

# %% [markdown]
# ## 3.6.2 The library's MultiHeadAttention
#
# The heads are computed together: one fused projection W_qkv (d_in -> 3 d_out), a reshape into
# (B, heads, T, head_dim), one causal attention for all heads, and `out_proj` to mix them. This is the
# layer inside every GPT block; GPT-2 small's has 2.4M parameters.

# %%
tl.manual_seed(123)
mha = MultiHeadAttention(d_in=3, d_out=2, context_length=batch.shape[1], dropout=0.0, num_heads=2).to(args.device)
print(mha)
context_vecs = mha(batch)
print(context_vecs.numpy())
print("context_vecs.shape:", context_vecs.shape)
gpt2 = MultiHeadAttention(d_in=768, d_out=768, context_length=1024, dropout=0.0, num_heads=12)
print(
    f"GPT-2 small's attention layer: {gpt2.num_parameters():,} parameters "
    f"(W_qkv {tuple(gpt2.W_qkv.weight.shape)}, out_proj {tuple(gpt2.out_proj.weight.shape)})"
)

# %% [markdown]
# ## Inside the engine: one head's gradients
#
# The same causal head written out, in float64 on the CPU (finite differences need the precision), with a
# made-up loss: the sum of the context vectors times a fixed random matrix. `retain_grad()` keeps the
# gradients of two intermediates, the masked scores and the attention weights, for the hand check below.

# %%
rng = np.random.default_rng(0)
x64 = tl.Tensor(INPUTS.astype(np.float64))
W_q, W_k, W_v = (tl.Tensor(rng.standard_normal((3, 2)), requires_grad=True) for _ in range(3))
target = rng.standard_normal((6, 2))


def head_loss():
    q, k, v = x64 @ W_q, x64 @ W_k, x64 @ W_v  # (6, 3) @ (3, 2) -> (6, 2) each
    scores = ((q @ k.T) / np.sqrt(2.0)).masked_fill(mask, -np.inf)  # (6, 6), -inf above the diagonal
    weights = F.softmax(scores, axis=-1)  # (6, 6), rows sum to 1
    context = weights @ v  # (6, 6) @ (6, 2) -> (6, 2)
    return (context * target).sum(), scores, weights


loss, scores, weights = head_loss()
scores.retain_grad()
weights.retain_grad()
print(f"loss = {loss.item():.6f}")

# %% [markdown]
# The graph `backward()` will walk: boxes are operations, ellipses tensors (the three weight matrices are
# the leaves at the top). Every arrow is reversed by the chain rule.

# %%
show_graph(loss, out / "attention_head_graph")

# %% [markdown]
# `backward()` fills `.grad` of every leaf that requires it. Each gradient should match a central
# difference, (L(w + eps) - L(w - eps)) / (2 eps), computed one element at a time by running the forward
# pass twice; the largest difference should be around 1e-9 or smaller.

# %%
loss.backward()


def finite_difference(w: tl.Tensor, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(w.data)
    for i in np.ndindex(w.shape):
        saved = w.data[i]
        w.data[i] = saved + eps
        up = head_loss()[0].item()
        w.data[i] = saved - eps
        down = head_loss()[0].item()
        w.data[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


for name, w in (("W_query", W_q), ("W_key", W_k), ("W_value", W_v)):
    estimate = finite_difference(w)
    print(f"{name}: backward() | finite difference")
    for row_engine, row_estimate in zip(w.grad, estimate):
        print(f"   {row_engine} | {row_estimate}")
    print(f"   largest difference {np.abs(w.grad - estimate).max():.1e}")

# %% [markdown]
# ### The softmax's gradient, by hand
#
# For one row, w = softmax(s) with w_j = exp(s_j) / sum_k exp(s_k). Then dw_j/ds_i = w_j (δ_ij - w_i), so
# with g = dL/dw the chain rule gives dL/ds_i = sum_j g_j w_j (δ_ij - w_i) = w_i (g_i - sum_j g_j w_j).
# Masked entries have w = 0, hence gradient 0: the future receives no gradient. Below, this formula
# applied to the retained `weights.grad` against the engine's `scores.grad`.

# %%
w, g = weights.data, weights.grad  # (6, 6) each
by_hand = w * (g - (g * w).sum(axis=-1, keepdims=True))
print("dL/dscores by hand:\n", by_hand)
print("dL/dscores from backward():\n", scores.grad)
print(f"largest difference {np.abs(by_hand - scores.grad).max():.1e}")
assert np.allclose(by_hand, scores.grad, atol=1e-12)
