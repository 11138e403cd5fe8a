"""Per-operation overhead: operations per second on small tensors, tinygrad_llm beside PyTorch eager.

On small tensors the arithmetic is nothing and the bookkeeping is everything: creating the output
Tensor, recording the graph, walking it backward. That is what small models and token-by-token
generation pay for. Each case runs in both libraries on the same float32 inputs, interleaved
repetition by repetition in one process; the table shows medians as operations per second and the
ratio (tinygrad_llm time / torch time: how many times slower we are).

    python benchmarks/overhead.py            # 16x16 and 64x64, 7 repetitions
    python benchmarks/overhead.py --quick    # 3 repetitions, shorter samples (a few seconds)
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_device_argument, print_machine, require_device, set_threads, synced, time_interleaved

import tinygrad_llm as tl
from tinygrad_llm import functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--quick", action="store_true", help="3 repetitions of ~20 ms samples instead of 7 of ~100 ms")
    p.add_argument("--sizes", default="16,64", help="comma-separated square sizes n (n x n tensors); default 16,64")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per case (default 7, --quick 3)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/Numba threads (default 1: small tensors run on one core in both libraries)",
    )
    p.add_argument("--no-torch", action="store_true", help="tinygrad_llm only, even when torch is installed")
    add_device_argument(p)
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        p.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        p.error("--sizes: need at least one size >= 1")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


BYPASS = "  the same, no Module.__call__"  # forward called directly: no module stack kept for tl.graph


def ours_cases(n: int, rng) -> dict:
    """name -> callable, each one 'operation' of the table, in tinygrad_llm."""
    Tensor = tl.Tensor
    a, b = (Tensor(rng.standard_normal((n, n)).astype(np.float32)) for _ in range(2))
    ag, bg = (Tensor(t.data.copy(), requires_grad=True) for t in (a, b))
    x = Tensor(rng.standard_normal((n, n)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((n, n)).astype(np.float32) / n**0.5, requires_grad=True)
    bias = Tensor(np.zeros(n, dtype=np.float32), requires_grad=True)
    mlp = _mlp_params(n, rng)
    params = [Tensor(p, requires_grad=True) for p in mlp["params"]]
    xb, targets = Tensor(mlp["x"]), mlp["targets"]
    net = tl.nn.Sequential(tl.nn.Linear(n, 4 * n), tl.nn.GELU(), tl.nn.Linear(4 * n, 10))  # Module.__call__ x4
    for p, value in zip(net.parameters(), mlp["params"]):
        p.data[...] = value

    def chain():
        for t in (x, w, bias):
            t.grad = None
        y = (((x * w + bias).tanh() * 2.0 - 1.0).exp() @ w).relu()  # 8 ops
        loss = (y / 3.0).sum()  # 10
        loss.backward()

    def mlp_step():
        w1, b1, w2, b2 = params
        for p in params:
            p.grad = None
        loss = F.cross_entropy(F.linear(F.gelu(F.linear(xb, w1, b1)), w2, b2), targets)
        loss.backward()
        for p in params:
            p.data -= 0.01 * p.grad

    def module_step():
        net.zero_grad()
        F.cross_entropy(net(xb), targets).backward()

    def module_step_bypassing_call():  # the same, forward called directly: no module stack kept
        net.zero_grad()
        first, gelu, last = net
        F.cross_entropy(last.forward(gelu.forward(first.forward(xb))), targets).backward()

    return {
        "add": lambda: a + b,
        "mul": lambda: a * b,
        "matmul": lambda: a @ b,
        "add, recording the graph": lambda: ag + bg,
        "10-op chain, fwd+bwd": chain,
        "MLP step (fwd+bwd+SGD)": mlp_step,
        "MLP as modules, fwd+bwd": module_step,
        BYPASS: module_step_bypassing_call,  # timed beside the case above: what the module stack costs
    }


def torch_cases(n: int, rng, torch, device: str = "cpu") -> dict:
    """The same cases in PyTorch eager, on the same values."""
    tF = torch.nn.functional
    a, b = (torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32)).to(device) for _ in range(2))
    ag, bg = (t.clone().requires_grad_(True) for t in (a, b))
    x = torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32)).to(device).requires_grad_(True)
    w = torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32) / n**0.5).to(device).requires_grad_(True)
    bias = torch.zeros(n, requires_grad=True, device=device)
    mlp = _mlp_params(n, rng)
    params = [torch.from_numpy(p).to(device).requires_grad_(True) for p in mlp["params"]]
    xb, targets = torch.from_numpy(mlp["x"]).to(device), torch.from_numpy(mlp["targets"]).to(device)
    net = torch.nn.Sequential(
        torch.nn.Linear(n, 4 * n), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(4 * n, 10)
    ).to(device)
    with torch.no_grad():
        for p, value in zip(net.parameters(), mlp["params"]):
            p.copy_(torch.from_numpy(value))

    def chain():
        for t in (x, w, bias):
            t.grad = None
        y = (((x * w + bias).tanh() * 2.0 - 1.0).exp() @ w).relu()
        loss = (y / 3.0).sum()
        loss.backward()

    def mlp_step():
        w1, b1, w2, b2 = params
        for p in params:
            p.grad = None
        loss = tF.cross_entropy(tF.linear(tF.gelu(tF.linear(xb, w1, b1), approximate="tanh"), w2, b2), targets)
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= 0.01 * p.grad

    def module_step():
        net.zero_grad(set_to_none=True)
        tF.cross_entropy(net(xb), targets).backward()

    return {
        "add": lambda: a + b,
        "mul": lambda: a * b,
        "matmul": lambda: a @ b,
        "add, recording the graph": lambda: ag + bg,
        "10-op chain, fwd+bwd": chain,
        "MLP step (fwd+bwd+SGD)": mlp_step,
        "MLP as modules, fwd+bwd": module_step,
    }


def _mlp_params(n: int, rng) -> dict:
    """A tiny classifier: batch 8, n inputs, 4n hidden units, 10 classes (the same values for both)."""
    local = np.random.default_rng(rng.integers(1 << 30))
    shapes = ((4 * n, n), (4 * n,), (10, 4 * n), (10,))
    return {
        "params": [(local.standard_normal(s) * 0.1).astype(np.float32) for s in shapes],
        "x": local.standard_normal((8, n)).astype(np.float32),
        "targets": local.integers(0, 10, 8),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    require_device(args.device)
    os.environ["TINYGRAD_LLM_DEVICE"] = args.device  # our tensors are created on the default device
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: tinygrad_llm only (pip install torch for the comparison)")
    set_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    min_time = 0.02 if args.quick else 0.1
    print_machine(benchmark_threads=args.threads, repeats=repeats, sample_s=min_time, device=args.device)
    print()
    header = f"{'case':28s} {'n':>4s} {'tinygrad_llm op/s':>18s}"
    if torch is not None:
        header += f" {'torch op/s':>12s} {'ours/torch time':>16s}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        ours = ours_cases(n, np.random.default_rng(n))
        theirs = torch_cases(n, np.random.default_rng(n), torch, args.device) if torch is not None else {}
        for name in ours:
            if name == BYPASS:
                continue
            fns = {"ours": ours[name]}
            if name in theirs:
                fns["torch"] = theirs[name]
            if name == "MLP as modules, fwd+bwd":
                fns["bypass"] = ours[BYPASS]  # interleaved with the two above
            medians = time_interleaved(synced(fns, args.device, torch), repeats=repeats, min_time=min_time)
            line = f"{name:28s} {n:4d} {1 / medians['ours']:18,.0f}"
            if "torch" in medians:
                line += f" {1 / medians['torch']:12,.0f} {medians['ours'] / medians['torch']:15.2f}x"
            print(line, flush=True)
            if "bypass" in medians:
                print(
                    f"{BYPASS:28s} {n:4d} {1 / medians['bypass']:18,.0f}   (with / without the module stack: "
                    f"{medians['ours'] / medians['bypass']:.3f}x)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
