# %% [markdown]
# # Studying gradients with the engine's own tools
#
# The questions learners ask most about backpropagation, each answered by a few lines to change and run
# again: why gradients accumulate, why backward needs a topological order, what `retain_grad()` and hooks
# do, and what the graph of an attention head and of a whole GPT looks like. Every number printed is
# computed here; hand derivations and finite differences check the engine along the way.

# %%
"""Study gradients with the engine's own tools: the questions learners ask most, each answered by a few
lines you can change and run again.

    python examples/study_gradients.py [--out study_gradients] [--device cpu]

1. Reusing a tensor accumulates: y = x * x + x  gives  dy/dx = 2x + 1, the two uses' gradients summed,
   and a second backward adds to .grad again — which is why only parameters are zeroed between steps.
2. Why a topological order: backward may only run an operation once every gradient flowing into its
   output has arrived; visiting in reverse topological order guarantees it (the graph shows the order).
3. retain_grad(): intermediates drop their gradient after backward unless asked to keep it; every
   gradient beside its finite-difference estimate.
4. A hook that clips: register_hook(fn) sees (and may replace) a gradient as it flows past.
5. The graph of one attention head, and 6. of a whole GPT with each transformer block folded into one
   box (``depth=2``), as DOT text, and as PNG pictures where Graphviz's ``dot`` is installed.

Everything printed is computed here, on this machine; the files go into --out (inline in a notebook).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.cli.common import example_parser
from tinygrad_llm.cli.example import example_args, show_graph  # flags; the graphs inline or to files
from tinygrad_llm.model import GPTConfig, GPTModel, MultiHeadAttention
from tinygrad_llm.tensor import _topological_order

parser = example_parser(__doc__)
parser.add_argument(
    "--out",
    default="study_gradients",
    help="folder for the graph files (existing ones of the same names are replaced)",
)
args = example_args(parser)
device, out = args.device, Path(args.out)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


# %% [markdown]
# ## 1. Reusing a tensor accumulates
#
# `x` feeds the multiplication twice and the addition once: three paths back to `x`. By hand,
# d/dx (x² + x) = 2x + 1, so for x = [1, 2, 3] we expect [3, 5, 7]: backward sums what arrives along
# every path. A second `backward()` on a new graph adds to `.grad` again.

# %%
section("1. reuse of a tensor accumulates")
x = tl.Tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
y = (x * x + x).sum()  # x feeds Mul twice and Add once: three paths back to x
y.backward()
print("y = sum(x*x + x), x =", x.tolist())
print("x.grad           =", x.grad.tolist(), " (2x + 1: the paths' gradients are summed)")
y2 = (x * x + x).sum()
y2.backward()  # a new graph, but the same leaf: .grad += instead of =
print("after a 2nd backward, x.grad =", x.grad.tolist(), " (doubled: leaves accumulate across backward calls,")
print("  which is how gradient accumulation over micro-batches works, and why an optimizer zeroes")
print("  the parameters' .grad before each step; intermediates are rebuilt each forward, never zeroed)")
x.zero_grad()

# %% [markdown]
# ## 2. Why a topological order
#
# `a = exp(x)` is used twice, by `b = 2a` and by `s = a + b`. Backward may run Exp's backward only once
# both shares of a's gradient have arrived (dy/da = 1 + 2 = 3), so it visits tensors in reverse
# topological order. The hand derivation: dy/dx = 3 eˣ.

# %%
section("2. why a topological order")
x = tl.Tensor([0.5, -1.0], requires_grad=True, dtype=np.float64, device=device)
a = x.exp()  # a is used by two operations below
b = a * 2.0
s = a + b
y = s.sum()
# Walking the graph depth-first from y could reach Exp (a's creator) through Add's first input before
# b = a * 2 has sent its share of a's gradient: Exp.backward would then run with half a gradient.
# Reverse topological order puts every consumer of a (Add and Mul) before a's creator (Exp).
names = {id(y): "y", id(s): "s = a + b", id(b): "b = 2a", id(a): "a = exp(x)", id(x): "x"}
order = [names[id(t)] for t in _topological_order(y)]
print("backward visits the tensors in the order:", " -> ".join(order))
print("  a comes after b: its gradient is complete (dy/da = 1 + 2 = 3) before Exp.backward uses it")
y.backward(retain_graph=True)
print(
    "x.grad =",
    np.round(backend.to_numpy(x.grad), 6).tolist(),
    "= 3 e^x =",
    np.round(3 * np.exp([0.5, -1.0]), 6).tolist(),
)

# %% [markdown]
# The same graph as `tl.graph` draws it: operations in boxes, tensors with their shapes and the norms of
# their gradients.

# %%
print("the same graph as DOT text (paste into any Graphviz viewer):")
print(tl.graph(y))

# %% [markdown]
# ## 3. `retain_grad()` on an intermediate
#
# Only leaves keep their gradient after backward; an intermediate keeps it when asked. Then every
# gradient of the leaf `w` beside a central finite difference, (L(w + ε) − L(w − ε)) / 2ε.

# %%
section("3. retain_grad() on an intermediate")
w = tl.Tensor(np.array([[1.0, -2.0], [0.5, 1.0]]), requires_grad=True, device=device)
x = tl.Tensor(np.array([[1.0, 1.0]]), device=device)


def small_loss():
    h = x @ w  # (1, 2) @ (2, 2) -> (1, 2)
    p = x @ w  # the same product again, never retained
    return (h.relu() + p.tanh()).sum(), h, p


loss, h, p = small_loss()
h.retain_grad()  # without this, h.grad is None after backward (only leaves keep theirs)
loss.backward()
print("h.grad (retained) =", h.grad.tolist(), " (relu passes 1 where h > 0, 0 elsewhere)")
print("p.grad            =", p.grad, " (the same values, not retained: dropped after use)")
print("w.grad (a leaf)   =", np.round(w.grad, 4).tolist())

# %%
eps, estimate = 1e-6, np.zeros(w.shape)
for i in np.ndindex(w.shape):
    saved = w.data[i]
    w.data[i] = saved + eps
    up = small_loss()[0].item()
    w.data[i] = saved - eps
    estimate[i] = (up - small_loss()[0].item()) / (2 * eps)
    w.data[i] = saved
print("finite differences =", np.round(estimate, 4).tolist())
print(f"largest difference from backward(): {np.abs(backend.to_numpy(w.grad) - estimate).max():.1e}")

# %% [markdown]
# ## 4. A hook that clips
#
# `register_hook(fn)` hands `fn` the gradient flowing into a tensor; returning an array replaces it. Here
# the hook scales the gradient of `h = 10 x` to unit norm, and the chain rule multiplies it by 10 on the
# way to `x`.

# %%
section("4. a hook that clips")
x = tl.Tensor([3.0, -4.0], requires_grad=True, device=device)
h = x * 10.0  # h = [30, -40]; (h * h).sum() sends 2h = [60, -80], of norm 100, back into h
seen = []


def clip_to_unit_norm(grad):  # grad: the raw array (NumPy, or CuPy on a GPU) flowing into h
    norm = float(backend.get_array_module(grad).linalg.norm(grad))
    seen.append(norm)
    return grad / norm if norm > 1 else None  # None keeps the gradient as it is


h.register_hook(clip_to_unit_norm)
(h * h).sum().backward()
print(f"the hook saw a gradient of norm {seen[0]:.1f} flowing into h = 10 x and scaled it to norm 1;")
print(
    "x.grad =",
    np.round(backend.to_numpy(x.grad), 4).tolist(),
    "(10 times the clipped gradient [0.6, -0.8], by the chain rule)",
)

# %% [markdown]
# ## 5. The graph of one attention head
#
# A forward pass through the library's `MultiHeadAttention` with one head on a (1, 4, 8) input, a loss,
# and `backward(retain_graph=True)` so that the graph can be drawn with each parameter's gradient norm.

# %%
section("5. the graph of one attention head")
tl.manual_seed(0)
att = MultiHeadAttention(d_in=8, d_out=8, context_length=4, dropout=0.0, num_heads=1).to(device)
x = tl.Tensor(np.random.default_rng(0).standard_normal((1, 4, 8)), dtype=np.float32, device=device)
y = att(x)  # (1, 4, 8) -> (1, 4, 8)
loss = (y * y).mean()
loss.backward(retain_graph=True)  # keep the graph so it can be drawn with the gradients
n_ops = sum(1 for line in tl.graph(loss).splitlines() if "shape=box," in line)
print(
    f"{n_ops} operations: W_qkv's Linear, the reshape and transpose into heads, the fused causal "
    f"attention (queries @ keys^T, scale, mask, softmax, @ values), the heads back together, out_proj; "
    f"each parameter with the norm of its gradient"
)

# %%
show_graph(loss, out / "attention_head")

# %% [markdown]
# ## 6. A whole GPT, one box per transformer block
#
# Two layers of the `tiny` preset. With `depth=2` each `TransformerBlock` is folded into one box that
# gives its number of operations and the gradient norm of its parameters.

# %%
section("6. a whole GPT, one box per transformer block")
tl.manual_seed(0)
model = GPTModel(GPTConfig.preset("tiny", n_layers=2, vocab_size=32, context_length=8)).to(device)
ids = np.random.default_rng(0).integers(0, 32, (2, 8))
loss = F.cross_entropy(model(ids), ids)  # (2, 8, 32) logits against the (2, 8) ids
loss.backward(retain_graph=True)
print(
    "depth=2: GPTModel is level 0, trf_blocks level 1, each TransformerBlock (level 2) one box "
    "with its number of operations and the norm of its parameters' gradients"
)
show_graph(loss, out / "gpt_depth2", depth=2)
print("\nnext: tinygrad-llm gradcheck (every parameter of a model against finite differences)")
