"""Compiled kernels vs the NumPy reference vs PyTorch eager, on GPT-2 (124M) shapes, on the CPU.

For each operation: the median time of forward + backward (AdamW: one update) for the NumPy reference
(TINYGRAD_LLM_KERNELS=numpy), the Numba kernel and, when installed, PyTorch eager on the same number of
threads; the ratios; the bandwidth achieved (the bytes a fused implementation must move, divided by the
time); and the first call's time (Numba compiles then, or loads its on-disk cache: --cold-cache forces a
compile). Implementations run interleaved, repetition by repetition, in one process.

    python benchmarks/kernels.py            # GPT-2 shapes (about 5 GB of memory, a few minutes on 2 cores)
    python benchmarks/kernels.py --quick    # smaller shapes, a few seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--quick", action="store_true", help="smaller shapes (a quarter of the rows, 1/10 of AdamW)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per implementation (default 7, --quick 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for Numba and torch (default: all)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated cases to run (layer_norm, softmax, causal_softmax, "
        "gelu, cross_entropy, embedding_backward, adamw)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default: Numba kernels) or cuda (CuPy kernels vs the CuPy reference vs torch on the GPU)",
    )
    p.add_argument(
        "--cold-cache", action="store_true", help="compile every kernel (empty Numba cache) for the first-call column"
    )
    args = p.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def median_ms(fn, reps: int, sync=lambda: None) -> list:
    """Times of ``reps`` calls of fn in ms (``sync`` waits for a GPU's queued work before the clock stops)."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def machine(np, numba, torch, threads) -> str:
    torch_v = torch.__version__ if torch else "not installed"
    return (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
        f"torch {torch_v}; threads {threads} (numba, torch)"
    )


def build_cases(np, tl, F, torch, quick: bool, device: str = "cpu"):
    """name -> (shape text, bytes moved, setup -> {impl: callable}) for every case, on ``device``."""

    def on(a):  # our side's arrays on the device
        return tl.backend.to_device(a, device)

    def t_on(a):  # torch's
        return torch.from_numpy(a).to(device)

    rows = 1024 if quick else 4096
    batch = 2 if quick else 8
    n_adam = 12_400_000 if quick else 124_000_000
    rng = np.random.default_rng(0)
    f4 = np.float32
    cases = {}

    def tensor_step(fn, arrays, gy):
        """A closure that runs fn(*tensors) forward and backward with output gradient gy."""

        def step():
            tensors = [tl.Tensor(a, requires_grad=True) for a in device_arrays]
            fn(*tensors).backward(device_gy)

        device_arrays, device_gy = [on(a) for a in arrays], on(gy)
        return step

    def torch_step(fn, arrays, gy):
        tensors = [t_on(a).requires_grad_(True) for a in arrays]
        tgy = t_on(gy)

        def step():
            for t in tensors:
                t.grad = None
            fn(*tensors).backward(tgy)

        return step

    # layer norm (B*T, C)
    x = rng.standard_normal((rows, 768)).astype(f4)
    w, b = rng.standard_normal(768).astype(f4), rng.standard_normal(768).astype(f4)
    gy = rng.standard_normal(x.shape).astype(f4)
    cases["layer_norm"] = (
        f"({rows}, 768)",
        5 * x.nbytes,
        lambda: {
            "ref": tensor_step(lambda a, c, d: F.layer_norm(a, c, d), [x, w, b], gy),
            "torch": torch
            and torch_step(lambda a, c, d: torch.nn.functional.layer_norm(a, (768,), c, d), [x, w, b], gy),
        },
    )

    # attention scores (B, H, T, T)
    s = (rng.standard_normal((batch, 12, 256, 256)) * 3).astype(f4)
    gs = rng.standard_normal(s.shape).astype(f4)
    scale = 1 / 8.0  # 1 / sqrt(head_dim 64)
    mask = None
    if torch:
        mask = torch.triu(torch.ones(256, 256, dtype=torch.bool), diagonal=1)
    cases["softmax"] = (
        f"({batch}, 12, 256, 256)",
        5 * s.nbytes,
        lambda: {
            "ref": tensor_step(lambda a: F.softmax(a), [s], gs),
            "torch": torch and torch_step(lambda a: torch.softmax(a, -1), [s], gs),
        },
    )
    # the book's way: scale, masked_fill(-inf), softmax; ours: one fused op
    cases["causal_softmax"] = (
        f"({batch}, 12, 256, 256)",
        5 * s.nbytes,
        lambda: {
            "ref": tensor_step(lambda a: F.causal_softmax(a, scale), [s], gs),
            "torch": torch
            and torch_step(lambda a: torch.softmax((a * scale).masked_fill(mask, float("-inf")), -1), [s], gs),
        },
    )

    # GELU on the MLP's hidden layer (B*T, 4C)
    h = rng.standard_normal((rows, 3072)).astype(f4)
    gh = rng.standard_normal(h.shape).astype(f4)
    cases["gelu"] = (
        f"({rows}, 3072)",
        5 * h.nbytes,
        lambda: {
            "ref": tensor_step(F.gelu, [h], gh),
            "torch": torch and torch_step(lambda a: torch.nn.functional.gelu(a, approximate="tanh"), [h], gh),
        },
    )

    # cross-entropy over GPT-2's vocabulary (B*T, 50257)
    logits = rng.standard_normal((rows, 50257)).astype(f4)
    targets = rng.integers(0, 50257, rows)
    one = np.ones((), f4)
    cases["cross_entropy"] = (
        f"({rows}, 50257)",
        3 * logits.nbytes,
        lambda: {
            "ref": tensor_step(lambda z: F.cross_entropy(z, targets), [logits], one),
            "torch": torch and torch_step(lambda z: torch.nn.functional.cross_entropy(z, t_on(targets)), [logits], one),
        },
    )

    # token embedding's backward: (B, T) ids into a (50257, 768) table
    table = (rng.standard_normal((50257, 768)) * 0.02).astype(f4)
    ids = rng.integers(0, 50257, (batch, rows // batch))
    gemb = rng.standard_normal(ids.shape + (768,)).astype(f4)
    cases["embedding_backward"] = (
        f"ids {ids.shape} -> (50257, 768)",
        gemb.nbytes + table.nbytes,
        lambda: {
            "ref": tensor_step(lambda t: F.embedding(ids, t), [table], gemb),
            "torch": torch and torch_step(lambda t: torch.nn.functional.embedding(t_on(ids), t), [table], gemb),
        },
    )

    # AdamW over all of GPT-2's parameters (one flat array)
    def adamw_setup():
        p = rng.standard_normal(n_adam).astype(f4)
        g = (rng.standard_normal(n_adam) * 1e-2).astype(f4)
        dp, dg, m, v = on(p), on(g), on(np.zeros_like(p)), on(np.zeros_like(p))
        counter = [0]

        def ours():
            counter[0] += 1
            F.adamw_update_(dp, dg, m, v, lr=6e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, step=counter[0])

        impls = {"ref": ours, "torch": None}
        if torch:
            tp = torch.nn.Parameter(t_on(p.copy()))
            tp.grad = t_on(g)
            opt = torch.optim.AdamW([tp], lr=6e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
            impls["torch"] = opt.step
        return impls

    cases["adamw"] = (f"{n_adam / 1e6:.1f}M params", 7 * 4 * n_adam, adamw_setup)
    return cases


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cold_cache:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")
    import numba
    import numpy as np

    import tinygrad_llm as tl
    from tinygrad_llm import functional as F
    from tinygrad_llm.kernels import dispatch

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if torch:
        torch.set_num_threads(args.threads)
    backend_name = "numba" if args.device == "cpu" else "cuda"
    if args.device == "cuda" and not tl.cuda_available():
        print("error: --device cuda: no CUDA GPU usable by CuPy on this machine", file=sys.stderr)
        return 1
    if not dispatch.available(backend_name):
        print(f"error: the {backend_name} kernels are unavailable (see the warning above)", file=sys.stderr)
        return 1
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import synchronize

    def sync():
        synchronize(args.device, torch)

    reps = args.reps or (3 if args.quick else 7)
    cases = build_cases(np, tl, F, torch, args.quick, args.device)
    chosen = list(cases) if args.only is None else [c.strip() for c in args.only.split(",")]
    unknown = [c for c in chosen if c not in cases]
    if unknown:
        print(f"error: unknown case(s) {unknown}; expected some of {list(cases)}", file=sys.stderr)
        return 2

    print("# kernels benchmark: median ms of forward+backward (AdamW: one update), interleaved")
    print(
        f"# machine: {machine(np, numba, torch, args.threads)}; device {args.device}"
        f"{' (numba columns: the CuPy kernels; numpy: the CuPy reference)' if args.device == 'cuda' else ''}"
    )
    print(f"# reps {reps}{', quick shapes' if args.quick else ''}; GB/s = bytes a fused pass must move / time")
    header = (
        "case",
        "shape",
        "numpy ms",
        "numba ms",
        "torch ms",
        "numpy/numba",
        "torch/numba",
        "GB/s numpy",
        "GB/s numba",
        "GB/s torch",
        "1st call s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in chosen:
        shape, nbytes, setup = cases[name]
        impls = setup()
        runs = {"numpy": impls["ref"], "numba": impls["ref"]}
        if impls.get("torch"):
            runs["torch"] = impls["torch"]
        modes = {"numpy": "numpy", "numba": "auto", "torch": "auto"}
        t = time.perf_counter()
        with dispatch.use("auto"):
            runs["numba"]()  # first call: compile, or load the cache
            sync()
        first = time.perf_counter() - t
        times = {k: [] for k in runs}
        for k, fn in runs.items():  # warm-up
            with dispatch.use(modes[k]):
                fn()
        for _ in range(reps):
            for k, fn in runs.items():
                with dispatch.use(modes[k]):
                    times[k] += median_ms(fn, 1, sync)
        med = {k: statistics.median(v) for k, v in times.items()}
        torch_ms = med.get("torch")

        def fmt(v, spec=".1f"):
            return "-" if v is None else format(v, spec)

        def gbs(ms):
            return None if ms is None else nbytes / (ms * 1e-3) / 1e9

        row = (
            name,
            shape,
            fmt(med["numpy"]),
            fmt(med["numba"]),
            fmt(torch_ms),
            fmt(med["numpy"] / med["numba"], ".2f") + "x",
            fmt(None if torch_ms is None else torch_ms / med["numba"], ".2f") + ("x" if torch_ms else ""),
            fmt(gbs(med["numpy"])),
            fmt(gbs(med["numba"])),
            fmt(gbs(torch_ms)),
            fmt(first, ".2f"),
        )
        print("| " + " | ".join(row) + " |", flush=True)
        del impls, runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
