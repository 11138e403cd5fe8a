"""llm.c's CPU training step beside ours: the same GPT-2, weights and batch; each side's milliseconds per step,
GFLOP/s and share of this machine's SGEMM peak, at one thread and at every core.

    python benchmarks/llmc.py --llmc ~/src/llm.c                  # gpt2-small (tied head), B4 T64, 1 and 2 threads
    python benchmarks/llmc.py --llmc ~/src/llm.c --shape baby --steps 10 --threads 1

Nothing is downloaded: --llmc is a local clone of https://github.com/karpathy/llm.c (its train_gpt2.c and llmc/
are what is read). The script

1. writes our model's weights in llm.c's checkpoint format (version 3: a header of 256 int32, then its 16
   tensors, the vocabulary padded with zero rows to a multiple of 128) and one batch of ids;
2. compiles benchmarks/llmc_step.c, which includes llm.c's train_gpt2.c and times its gpt2_forward,
   gpt2_backward and gpt2_update, with the flags of llm.c's Makefile (cc -Ofast -march=native -fopenmp -DOMP);
3. holds llm.c's first loss and gradients against ours (relative L2 over the whole model, and the worst tensor);
4. times each side at each --threads in its own process (OMP_NUM_THREADS for llm.c, ``runtime.configure(threads=)``
   for ours), warm-up steps left out, and prints ms/step, GFLOP/s and the share of NumPy's SGEMM peak at the
   same threads (measured in its own process).

The step is the same on both sides: forward, backward, AdamW (lr 1e-4, weight decay 0.1), no gradient clipping
(llm.c's CPU trainer has none). One difference: llm.c decays every parameter, ours (as GPT-2's recipe and the
book) not the biases and LayerNorms. Exit status 1 when the gradients disagree beyond float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAGIC, VERSION = 20240326, 3  # llm.c's gpt2_build_from_checkpoint accepts these alone
CFLAGS = ["-Ofast", "-march=native", "-fopenmp", "-DOMP", "-Wno-unused-result"]
AGREE = 1e-4  # relative L2 of the gradients: float32 rounding through 12 layers is ~1e-6


def llmc_arrays(model, of=lambda p: p.data) -> list[tuple[str, np.ndarray]]:
    """Our tied GPT's tensors (``of``: a Parameter's weights, or its gradient) in llm.c's order and layout, each
    float32: wte (Vp, C), wpe (maxT, C), then per layer stacked (L, ...) ln1w, ln1b, qkvw (3C, C), qkvb,
    attprojw (C, C), attprojb, ln2w, ln2b, fcw (4C, C), fcb, fcprojw (C, 4C), fcprojb, then lnfw, lnfb."""
    from tinygrad_llm.backend import to_numpy

    config = model.config
    if not config.tie_weights or not config.qkv_bias:
        raise ValueError("llm.c's GPT-2 has a tied output head and a query/key/value bias: build with both")
    blocks = list(model.trf_blocks)

    def host(p) -> np.ndarray:
        return np.asarray(to_numpy(of(p)), dtype=np.float32)

    def per_layer(pick) -> np.ndarray:
        return np.stack([host(pick(block)) for block in blocks])

    wte = np.zeros((padded_vocab(config.vocab_size), config.emb_dim), np.float32)  # llm.c's rows past V: zero
    wte[: config.vocab_size] = host(model.tok_emb.weight)
    return [
        ("wte", wte),
        ("wpe", host(model.pos_emb.weight)),
        ("ln1w", per_layer(lambda b: b.norm1.scale)),
        ("ln1b", per_layer(lambda b: b.norm1.shift)),
        ("qkvw", per_layer(lambda b: b.att.W_qkv.weight)),  # rows: the queries, the keys, the values
        ("qkvb", per_layer(lambda b: b.att.W_qkv.bias)),
        ("attprojw", per_layer(lambda b: b.att.out_proj.weight)),
        ("attprojb", per_layer(lambda b: b.att.out_proj.bias)),
        ("ln2w", per_layer(lambda b: b.norm2.scale)),
        ("ln2b", per_layer(lambda b: b.norm2.shift)),
        ("fcw", per_layer(lambda b: b.ff.layers[0].weight)),
        ("fcb", per_layer(lambda b: b.ff.layers[0].bias)),
        ("fcprojw", per_layer(lambda b: b.ff.layers[2].weight)),
        ("fcprojb", per_layer(lambda b: b.ff.layers[2].bias)),
        ("lnfw", host(model.final_norm.scale)),
        ("lnfb", host(model.final_norm.shift)),
    ]


def padded_vocab(vocab_size: int) -> int:
    """llm.c's Vp: the vocabulary rounded up to a multiple of 128 (GPT-2's 50,257 -> 50,304)."""
    return -(-vocab_size // 128) * 128


def write_checkpoint(model, path: Path) -> None:
    """``model`` (a tied GPTModel) as llm.c's gpt2_124M.bin is laid out, whatever its size."""
    c = model.config
    header = np.zeros(256, np.int32)
    v, vp = c.vocab_size, padded_vocab(c.vocab_size)
    header[:8] = [MAGIC, VERSION, c.context_length, v, c.n_layers, c.n_heads, c.emb_dim, vp]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for _, array in llmc_arrays(model):
            f.write(np.ascontiguousarray(array).tobytes())


def read_gradients(path: Path, like: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """llmc_step's GRADS.bin split into ``like``'s tensors (names and shapes)."""
    flat = np.fromfile(path, dtype=np.float32)
    sizes = [a.size for _, a in like]
    if flat.size != sum(sizes):
        raise ValueError(f"{path}: {flat.size} floats, expected {sum(sizes)} (the model's parameters)")
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return [(name, part.reshape(a.shape)) for (name, a), part in zip(like, parts, strict=True)]


def build(shape: str, batch: int | None, context: int | None):
    """(model, x, y): the shape's GPT with a tied head and a qkv bias, seed 0 (its embeddings at GPT-2's scale),
    and one batch of ids (seed 0)."""
    sys.path.insert(0, str(HERE))  # _steps: the benchmarks' shapes
    from _steps import shape_config

    import tinygrad_llm as tl
    from tinygrad_llm.model import GPTConfig, GPTModel

    config, batch = shape_config(shape, batch, context)
    config = GPTConfig(**{**config.to_dict(), "tie_weights": True, "qkv_bias": True, "drop_rate": 0.0})
    tl.manual_seed(0)
    model = GPTModel(config)
    for table in (model.tok_emb.weight, model.pos_emb.weight):  # GPT-2's std 0.02, not N(0, 1): through the tied
        table.data *= 0.02  # head, N(0, 1) rows give logits in the hundreds, which llm.c's softmax takes to inf
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (batch, config.context_length))
    y = rng.integers(0, config.vocab_size, (batch, config.context_length))
    return model, x, y


def our_step(model):
    """Forward, backward, AdamW (lr 1e-4, weight decay 0.1 on the matrices), no clipping: llm.c's step."""
    from tinygrad_llm.amp import MixedPrecision
    from tinygrad_llm.optim import AdamW, param_groups_for_weight_decay
    from tinygrad_llm.train.step import train_step

    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4)
    amp = MixedPrecision("fp32", "cpu")
    return lambda x, y: train_step(model, optimizer, [(x, y)], "cpu", amp, grad_clip=None)


def our_gradients(model, x, y) -> tuple[float, list[tuple[str, np.ndarray]]]:
    """Our first loss and gradients, before any update, in llm.c's layout."""
    from tinygrad_llm.train.losses import calc_loss_batch

    loss = calc_loss_batch(x, y, model, "cpu")
    loss.backward()
    grads = llmc_arrays(model, of=lambda p: p.grad)
    model.zero_grad()
    return float(loss.item()), grads


def worker(args) -> None:
    """Ours at --worker-threads in this process: the median ms of --steps steps after two warm-up steps."""
    from tinygrad_llm import runtime

    runtime.configure(threads=args.worker_threads)
    model, x, y = build(args.shape, args.batch, args.context)
    step = our_step(model)
    for _ in range(2):  # Numba's compiled kernels, the allocator, the load monitor
        step(x, y)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"ms": statistics.median(times) * 1000}))


def compile_llmc(llmc: Path, work: Path) -> Path:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SystemExit(f"llmc.py: no C compiler ({cc}): install one or set CC")
    binary = work / "llmc_step"
    cmd = [cc, *CFLAGS, "-I", str(llmc), str(HERE / "llmc_step.c"), "-lm", "-o", str(binary)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"llmc.py: compiling llm.c failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return binary


def run_llmc(binary: Path, work: Path, b: int, t: int, steps: int, threads: int, grads: Path | None = None):
    """(first loss, median ms of the ``steps`` after the first, None for none): llm.c at ``threads`` OpenMP
    threads."""
    cmd = [str(binary), str(work / "model.bin"), str(work / "batch.bin"), str(b), str(t), str(steps + 1)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd + ([str(grads)] if grads else []), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"llmc.py: llm.c's step failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("step ")]
    losses, ms = [float(r[3]) for r in rows], [float(r[5]) for r in rows]
    return losses[0], statistics.median(ms[1:]) if steps else None  # the first step allocates the activations


def run_ours(args, threads: int) -> float:
    cmd = [sys.executable, __file__, "--worker-threads", str(threads), "--shape", args.shape, "--steps"]
    cmd += [str(args.steps)] + (["--batch", str(args.batch)] if args.batch else [])
    cmd += ["--context", str(args.context)] if args.context else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"llmc.py: our step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(model, x, y, llmc_loss: float, llmc_grads, vocab: int) -> bool:
    """Print how far llm.c's first loss and gradients are from ours; True when within float32 rounding."""
    loss, ours = our_gradients(model, x, y)
    theirs = [(n, g[:vocab] if n == "wte" else g) for n, g in llmc_grads]  # the padding rows are llm.c's alone
    ours = [(n, g[:vocab] if n == "wte" else g) for n, g in ours]
    whole = relative_l2(np.concatenate([g.ravel() for _, g in theirs]), np.concatenate([g.ravel() for _, g in ours]))
    worst = max((relative_l2(t, o), n) for (n, t), (_, o) in zip(theirs, ours, strict=True))
    print(f"first loss: llm.c {llmc_loss:.6f}, ours {loss:.6f} (difference {abs(llmc_loss - loss):.2e})")
    print(f"gradients of llm.c against ours: relative L2 {whole:.2e} in all, {worst[0]:.2e} at worst ({worst[1]})")
    return whole < AGREE and abs(llmc_loss - loss) < AGREE * abs(loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llmc", help="a local clone of llm.c (the folder with train_gpt2.c)")
    parser.add_argument("--shape", default="gpt2-small", help="a benchmarks shape or preset (default gpt2-small)")
    parser.add_argument("--batch", type=int, help="rows per step (default: the shape's, gpt2-small 4)")
    parser.add_argument("--context", type=int, help="tokens per row (default: the shape's, 64)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1], help="thread counts")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and thread count (default 5)")
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)  # a child: time ours at N threads
    args = parser.parse_args(argv)
    if args.worker_threads is not None:
        worker(args)
        return 0
    if not args.llmc:
        parser.error("--llmc: the folder of a local llm.c clone is needed (nothing is downloaded)")
    llmc = Path(args.llmc).expanduser()
    if not (llmc / "train_gpt2.c").is_file():
        parser.error(f"--llmc {llmc}: no train_gpt2.c there (expected a clone of karpathy/llm.c)")
    sys.path.insert(0, str(HERE))
    from _common import print_machine, sgemm_peak, step_flops_per_token

    print_machine()
    model, x, y = build(args.shape, args.batch, args.context)
    b, t = x.shape
    flops = step_flops_per_token(model) * x.size / 1e9  # GFLOP per step
    with tempfile.TemporaryDirectory(prefix="llmc-") as folder:
        work = Path(folder)
        write_checkpoint(model, work / "model.bin")
        np.concatenate([x.ravel(), y.ravel()]).astype(np.int32).tofile(work / "batch.bin")
        binary = compile_llmc(llmc, work)
        llmc_loss, _ = run_llmc(binary, work, b, t, 0, args.threads[0], grads=work / "grads.bin")
        llmc_grads = read_gradients(work / "grads.bin", llmc_arrays(model))
        agree = compare(model, x, y, llmc_loss, llmc_grads, model.config.vocab_size)
        rows = []
        for threads in args.threads:
            peak = sgemm_peak(threads)
            _, llmc_ms = run_llmc(binary, work, b, t, args.steps, threads)
            ours_ms = run_ours(args, threads)
            for side, ms in (("llm.c", llmc_ms), ("ours", ours_ms)):
                gflops = flops / (ms / 1000)
                rows.append((side, threads, ms, gflops, gflops / peak, llmc_ms / ours_ms))
            print(f"  {threads} thread(s): llm.c {llmc_ms:.0f} ms, ours {ours_ms:.0f} ms; peak {peak:.0f} GFLOP/s")
    print(f"\n{args.shape} (tied head), batch {b} x {t}, {flops:.2f} GFLOP a step; median of {args.steps} steps")
    print("| side | threads | ms/step | GFLOP/s | share of the SGEMM peak | llm.c / ours |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for side, threads, ms, gflops, share, ratio in rows:
        print(f"| {side} | {threads} | {ms:,.0f} | {gflops:.1f} | {share:.0%} | {ratio:.2f} |")
    if not agree:
        print(f"llm.c's gradients disagree with ours beyond {AGREE:g}: the timings compare different steps")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
