"""Training speed and quality beside PyTorch eager, the same algorithm on both sides.

    python benchmarks/train.py                     # both parts, full size (about half an hour on 2 cores)
    python benchmarks/train.py --quick             # 200 iterations, 3 step repetitions

Part 1, nanoGPT's CPU run on Tiny Shakespeare, character level: 4 layers, 4 heads, 128 wide, block 64,
batch 12, 2,000 iterations, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on weight matrices), 100 warmup
steps then cosine decay to 1e-4, gradient clipping at 1.0, dropout 0. Both sides start from the same weights
and see the same batches (random windows drawn with one seeded generator); the validation loss is the mean
over the same 200 random validation batches. Prints each side's final validation loss, wall time, and the
ratio of the times.

Part 2, a training step (forward, backward, clip at 1.0, AdamW) at three shapes (benchmarks/_steps.py):
nanoGPT's CPU "baby" (4 layers, 4 heads, 128 wide, block 64, batch 12, vocab 65), "medium" (6 layers,
6 heads, 384 wide, block 256, batch 8, vocab 65) and gpt2-small untied (block 64, batch 4). Three sides:
ours, PyTorch eager and torch.compile (where it compiles; the reason is printed where not), the same
weights and batch, interleaved repetitions in one process, medians and the ratios, and each side's achieved
GFLOP/s (benchmarks/_common.step_flops_per_token) as a share of this machine's SGEMM peak at the same threads
(benchmarks/peak.py):

    python benchmarks/train.py --part 2 --threads 1              # all three shapes, one thread each side
    python benchmarks/train.py --part 2 --shape baby --repeats 9  # one shape; no --threads: the defaults
    python benchmarks/train.py --part 2 --device cuda --shape gpt2-small --context-length 1024 --batch-size 8
                                        # on a GPU: TF32 off and on, achieved TFLOP/s and MFU against the peak

Each side's defaults differ (ours: the thread policy of tinygrad_llm.runtime.threads; torch: all cores), and two
libraries' pools in one process disturb each other: benchmarks/load.py runs each side in its own process.

Needs $TINYGRAD_LLM_DATA (or --data) for tinyshakespeare.txt; torch for the reference (--no-torch skips it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_device_argument,
    mfu_line,
    print_machine,
    require_device,
    set_tf32,
    set_threads,
    sgemm_peak,
    step_flops_per_token,
    synced,
    time_interleaved,
)

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.data import get_batch
from tinygrad_llm.files import require_data_file
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW, lr_at, param_groups_for_weight_decay
from tinygrad_llm.tokenizer import get_tokenizer
from tinygrad_llm.train.step import train_step

NANOGPT = dict(block=64, batch=12, lr=1e-3, min_lr=1e-4, warmup=100, betas=(0.9, 0.99), weight_decay=0.1, clip=1.0)


def shakespeare_batches(path, iters: int, eval_batches: int, seed: int = 1337):
    """Token ids, the training batches of every iteration and the validation batches, drawn once."""
    text = Path(path).read_text(encoding="utf-8")
    tokenizer = get_tokenizer("char", text=text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    split = int(0.9 * len(ids))
    rng = np.random.default_rng(seed)
    train = [get_batch(ids[:split], NANOGPT["batch"], NANOGPT["block"], rng) for _ in range(iters)]
    val = [get_batch(ids[split:], NANOGPT["batch"], NANOGPT["block"], rng) for _ in range(eval_batches)]
    return tokenizer.n_vocab, train, val


def schedule(step: int, iters: int) -> float:
    """nanoGPT's learning rate: linear warmup, then cosine decay to min_lr (one function for both sides)."""
    return lr_at(
        step,
        max_lr=NANOGPT["lr"],
        total_steps=iters,
        warmup_steps=min(NANOGPT["warmup"], iters),
        min_lr=NANOGPT["min_lr"],
    )


def train_ours(model, train, val, iters):
    optimizer = AdamW(
        param_groups_for_weight_decay(model, NANOGPT["weight_decay"]), lr=NANOGPT["lr"], betas=NANOGPT["betas"]
    )
    start = time.perf_counter()
    model.train()
    for step, (x, y) in enumerate(train):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, iters)
        train_step(model, optimizer, [(x, y)], "cpu", grad_clip=NANOGPT["clip"])  # the trainer's step
    seconds = time.perf_counter() - start
    model.eval()
    with tl.no_grad():
        val_loss = float(np.mean([F.cross_entropy(model(x), y).item() for x, y in val]))
    return val_loss, seconds


def train_torch(torch, tg, train, val, iters):
    from torch_gpt import decay_groups

    optimizer = torch.optim.AdamW(decay_groups(tg, NANOGPT["weight_decay"]), lr=NANOGPT["lr"], betas=NANOGPT["betas"])
    start = time.perf_counter()
    tg.train()
    for step, (x, y) in enumerate(train):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, iters)
        logits = tg(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tg.parameters(), NANOGPT["clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    tg.eval()
    with torch.no_grad():
        val_loss = float(
            np.mean(
                [
                    torch.nn.functional.cross_entropy(
                        tg(torch.from_numpy(x)).flatten(0, 1), torch.from_numpy(y).flatten()
                    ).item()
                    for x, y in val
                ]
            )
        )
    return val_loss, seconds


def part1(args, torch) -> None:
    path = require_data_file("tinyshakespeare.txt", args.data)
    vocab, train, val = shakespeare_batches(path, args.iters, args.eval_batches)
    config = GPTConfig(
        vocab_size=vocab, context_length=NANOGPT["block"], emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0
    )
    tl.manual_seed(1337)
    model = GPTModel(config)
    tg = None
    if torch is not None:
        from torch_gpt import build_torch_gpt

        tg = build_torch_gpt(torch, model)  # the same initial weights
    print(
        f"\nPart 1: Tiny Shakespeare (char), nanoGPT CPU configuration, {model.num_parameters():,} parameters, "
        f"{args.iters} iterations, validation on {args.eval_batches} batches"
    )
    ours_loss, ours_s = train_ours(model, train, val, args.iters)
    print("| side | val loss | seconds | ms/iter |\n| --- | ---: | ---: | ---: |")
    print(f"| tinygrad_llm | {ours_loss:.4f} | {ours_s:.1f} | {1000 * ours_s / args.iters:.1f} |")
    if tg is not None:
        torch_loss, torch_s = train_torch(torch, tg, train, val, args.iters)
        print(f"| torch eager | {torch_loss:.4f} | {torch_s:.1f} | {1000 * torch_s / args.iters:.1f} |")
        print(f"time ours / torch: {ours_s / torch_s:.2f}")


def part2(args, torch) -> None:
    from _steps import SHAPES, build_steps, shape_config

    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    peak = None
    if args.device == "cpu":  # each side's share of this machine's SGEMM peak at the threads the sides use
        threads = args.threads or os.cpu_count() or 1
        peak = sgemm_peak(threads)
        print(f"SGEMM peak (NumPy, 2048^3, {threads} thread(s), best of 5, own process): {peak:.1f} GFLOP/s")
    for shape in shapes:
        config, batch = shape_config(shape, args.batch_size, args.context_length)
        for precision in precisions(args):  # on a GPU: TF32 off, then on (fp32 weights and activations both)
            if args.device == "cuda":
                set_tf32(precision == "tf32", torch)
            steps = build_steps(
                shape,
                sides=args.sides,
                torch=torch,
                batch=args.batch_size,
                context=args.context_length,
                device=args.device,
                precision=precision,
            )
            print(
                f"\nPart 2: one training step (forward, backward, clip, AdamW) of {shape}: {config.n_layers} layers, "
                f"{config.n_heads} heads, {config.emb_dim} wide, vocab {config.vocab_size} (untied), batch {batch} x "
                f"{config.context_length} tokens, {args.device}, {precision}; {args.repeats} interleaved repetitions "
                f"after one warm-up"
            )
            medians = time_interleaved(synced(steps, args.device, torch), repeats=args.repeats, number=1, warmup=1)
            flops = step_flops_per_token(GPTModel(config)) * batch * config.context_length
            print(
                "| side | median ms/step | tokens/s | GFLOP/s | % of SGEMM peak | ours / side (time) |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: |"
            )
            for name, seconds in medians.items():
                ratio = medians.get("tinygrad_llm", float("nan")) / seconds
                achieved = flops / seconds / 1e9
                share = f"{100 * achieved / peak:.0f}%" if peak else "-"
                print(
                    f"| {name} | {1000 * seconds:.1f} | {batch * config.context_length / seconds:.0f} | "
                    f"{achieved:.1f} | {share} | {ratio:.2f} |"
                )
            if args.device == "cuda":
                n_params = GPTModel(config).num_parameters()
                for name, seconds in medians.items():
                    print(f"  {name}: {mfu_line(batch * config.context_length / seconds, config, n_params, precision)}")


def precisions(args) -> list[str]:
    """Part 2's precisions: as given, else fp32 on the CPU and fp32 then tf32 (TF32 off, then on) on a GPU."""
    if args.precision:
        return [args.precision]
    return ["fp32", "tf32"] if args.device == "cuda" else ["fp32"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--data", help="tinyshakespeare.txt or its folder (default: $TINYGRAD_LLM_DATA)")
    parser.add_argument("--quick", action="store_true", help="200 iterations, 3 step repetitions")
    parser.add_argument("--iters", type=int, default=None, help="part 1 iterations (default 2000)")
    parser.add_argument("--eval-batches", type=int, default=200, help="part 1 validation batches")
    parser.add_argument("--repeats", type=int, default=None, help="part 2 repetitions (default 5)")
    parser.add_argument(
        "--shape",
        default="all",
        help="part 2 model: baby, medium, gpt2-small (benchmarks/_steps.py), all three (the "
        "default), or a preset name (tinygrad-llm info --list) at batch 12 x 64",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="part 2 batch (default: the shape's)")
    parser.add_argument("--context-length", type=int, default=None, help="part 2 tokens per row (default: the shape's)")
    parser.add_argument(
        "--sides",
        nargs="+",
        default=["tinygrad_llm", "torch eager", "torch.compile"],
        choices=["tinygrad_llm", "torch eager", "torch.compile"],
        help="part 2 sides",
    )
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for torch and ours (default: each library's own default)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    add_device_argument(parser)
    parser.add_argument(
        "--precision",
        choices=("fp32", "tf32", "fp16", "bf16"),
        default=None,
        help="part 2 precision, both sides (default: fp32; on cuda fp32 and tf32, i.e. TF32 off and on)",
    )
    args = parser.parse_args(argv)
    require_device(args.device)
    args.iters = args.iters or (200 if args.quick else 2000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    torch = None
    if args.no_torch:
        args.sides = [side for side in args.sides if not side.startswith("torch")]
    else:
        try:
            import torch
        except ImportError:
            print("torch is not installed: the PyTorch reference is skipped")
    set_threads(args.threads)
    print_machine(threads=args.threads or "each library's default")
    try:
        if args.part in ("1", "both") and args.device == "cpu":  # part 1 is nanoGPT's CPU run
            part1(args, torch)
    except FileNotFoundError as exc:
        print(f"part 1 skipped: {exc}")
    if args.part in ("2", "both"):
        part2(args, torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
