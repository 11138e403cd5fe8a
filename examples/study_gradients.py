"""Study gradients with the engine's own tools: the questions learners ask most, each answered by a few
lines you can change and run again.

    python examples/study_gradients.py [--out study_gradients] [--device cpu]

1. Reusing a tensor accumulates: y = x * x + x  gives  dy/dx = 2x + 1, the two uses' gradients summed,
   and a second backward adds to .grad again — which is why only parameters are zeroed between steps.
2. Why a topological order: backward may only run an operation once every gradient flowing into its
   output has arrived; visiting in reverse topological order guarantees it (the graph shows the order).
3. retain_grad(): intermediates drop their gradient after backward unless asked to keep it.
4. A hook that clips: register_hook(fn) sees (and may replace) a gradient as it flows past.
5. The graph of one attention head, and 6. of a whole GPT with each transformer block folded into one
   box (``depth=2``), as DOT text, and as PNG pictures where Graphviz's ``dot`` is installed.

Everything printed is computed here, on this machine; the files go into --out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.cli.common import example_parser, run_example  # --help, --device, Ctrl-C
from tinygrad_llm.graph import INSTALL_GRAPHVIZ
from tinygrad_llm.model import GPTConfig, GPTModel, MultiHeadAttention


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def reuse_accumulates(device: str) -> None:
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


def topological_order(device: str) -> None:
    section("2. why a topological order")
    x = tl.Tensor([0.5, -1.0], requires_grad=True, dtype=np.float64, device=device)
    a = x.exp()  # a is used by two operations below
    b = a * 2.0
    s = a + b
    y = s.sum()
    # Walking the graph depth-first from y could reach Exp (a's creator) through Add's first input before
    # b = a * 2 has sent its share of a's gradient: Exp.backward would then run with half a gradient.
    # Reverse topological order puts every consumer of a (Add and Mul) before a's creator (Exp).
    from tinygrad_llm.tensor import _topological_order

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
    print("the same graph as DOT text (paste into any Graphviz viewer):")
    print(tl.graph(y))


def keep_an_intermediate(device: str) -> None:
    section("3. retain_grad() on an intermediate")
    w = tl.Tensor(np.array([[1.0, -2.0], [0.5, 1.0]]), requires_grad=True, device=device)
    x = tl.Tensor(np.array([[1.0, 1.0]]), device=device)
    h = x @ w
    h.retain_grad()  # without this, h.grad is None after backward (only leaves keep theirs)
    p = x @ w  # the same product again, not retained
    loss = (h.relu() + p.tanh()).sum()
    loss.backward()
    print("h.grad (retained) =", h.grad.tolist(), " (relu passes 1 where h > 0, 0 elsewhere)")
    print("p.grad            =", p.grad, " (the same values, not retained: dropped after use)")
    print("w.grad (a leaf)   =", np.round(w.grad, 4).tolist())


def clipping_hook(device: str) -> None:
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


def attention_head_graph(device: str, out: Path) -> None:
    section("5. the graph of one attention head")
    tl.manual_seed(0)
    att = MultiHeadAttention(d_in=8, d_out=8, context_length=4, dropout=0.0, num_heads=1).to(device)
    x = tl.Tensor(np.random.default_rng(0).standard_normal((1, 4, 8)), dtype=np.float32, device=device)
    y = att(x)
    loss = (y * y).mean()
    loss.backward(retain_graph=True)  # keep the graph so it can be drawn with the gradients
    dot = tl.graph(loss)
    n_ops = sum(1 for line in dot.splitlines() if "shape=box," in line)
    print(
        f"{n_ops} operations: W_qkv's Linear, the reshape and transpose into heads, the fused causal "
        f"attention (queries @ keys^T, scale, mask, softmax, @ values), the heads back together, out_proj; "
        f"each parameter with the norm of its gradient"
    )
    write_graph(loss, out / "attention_head")


def whole_gpt_graph(device: str, out: Path) -> None:
    section("6. a whole GPT, one box per transformer block")
    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("tiny", n_layers=2, vocab_size=32, context_length=8)).to(device)
    ids = np.random.default_rng(0).integers(0, 32, (2, 8))
    loss = F.cross_entropy(model(ids), ids)
    loss.backward(retain_graph=True)
    print(
        "depth=2: GPTModel is level 0, trf_blocks level 1, each TransformerBlock (level 2) one box "
        "with its number of operations and the norm of its parameters' gradients"
    )
    write_graph(loss, out / "gpt_depth2", depth=2)


def write_graph(loss, stem: Path, depth=None) -> None:
    print(f"wrote {tl.plot_graph(loss, stem.with_suffix('.dot'), depth=depth)}")
    if shutil.which("dot"):
        print(f"wrote {tl.plot_graph(loss, stem.with_suffix('.png'), depth=depth)}")
    else:
        print(f"to draw it as a picture, {INSTALL_GRAPHVIZ}")


def main(argv=None) -> int:
    p = example_parser(__doc__)
    p.add_argument(
        "--out",
        default="study_gradients",
        help="folder for the graph files (existing ones of the same names are replaced)",
    )
    args = p.parse_args(argv)
    reuse_accumulates(args.device)
    topological_order(args.device)
    keep_an_intermediate(args.device)
    clipping_hook(args.device)
    attention_head_graph(args.device, Path(args.out))
    whole_gpt_graph(args.device, Path(args.out))
    print("\nnext: tinygrad-llm gradcheck (every parameter of a model against finite differences)")
    return 0


if __name__ == "__main__":
    run_example(main)
