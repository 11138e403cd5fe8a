"""Training speed and quality beside PyTorch eager, the same algorithm on both sides.

    python benchmarks/train.py                     # both parts, full size (about half an hour on 2 cores)
    python benchmarks/train.py --quick             # 200 iterations, 3 step repetitions

Part 1, nanoGPT's CPU run on Tiny Shakespeare, character level: 4 layers, 4 heads, 128 wide, block 64,
batch 12, 2,000 iterations, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on weight matrices), 100 warmup
steps then cosine decay to 1e-4, gradient clipping at 1.0, dropout 0. Both sides start from the same weights
and see the same batches (random windows drawn with one seeded generator); the validation loss is the mean
over the same 200 random validation batches. Prints each side's final validation loss, wall time, and the
ratio of the times.

Part 2, a training step (forward, backward, clip, AdamW) of the gpt2-small configuration (163M parameters,
untied) at batch 4, context 64: tokens/second of each side, interleaved repetitions, medians and the ratio.
--preset/--batch-size/--context-length measure another shape, e.g. the main job's model:

    python benchmarks/train.py --part 2 --preset mini --batch-size 12 --repeats 7 --no-torch

Needs $TINYGRAD_LLM_DATA (or --data) for tinyshakespeare.txt; torch for the reference (--no-torch skips it).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_llm as tl  # noqa: E402
from tinygrad_llm import functional as F  # noqa: E402
from tinygrad_llm.data import get_batch  # noqa: E402
from tinygrad_llm.files import require_data_file  # noqa: E402
from tinygrad_llm.model import GPTConfig, GPTModel  # noqa: E402
from tinygrad_llm.optim import AdamW, clip_grad_norm_, lr_at, param_groups_for_weight_decay  # noqa: E402
from tinygrad_llm.tokenizer import get_tokenizer  # noqa: E402

from _common import print_machine, set_threads  # noqa: E402

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
    return lr_at(step, max_lr=NANOGPT["lr"], total_steps=iters, warmup_steps=min(NANOGPT["warmup"], iters),
                 min_lr=NANOGPT["min_lr"])


def train_ours(model, train, val, iters):
    optimizer = AdamW(param_groups_for_weight_decay(model, NANOGPT["weight_decay"]), lr=NANOGPT["lr"],
                      betas=NANOGPT["betas"])
    start = time.perf_counter()
    model.train()
    for step, (x, y) in enumerate(train):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step, iters)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm_(model.parameters(), NANOGPT["clip"])
        optimizer.step()
        optimizer.zero_grad()
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
        val_loss = float(np.mean([torch.nn.functional.cross_entropy(
            tg(torch.from_numpy(x)).flatten(0, 1), torch.from_numpy(y).flatten()).item() for x, y in val]))
    return val_loss, seconds


def part1(args, torch) -> None:
    path = require_data_file("tinyshakespeare.txt", args.data)
    vocab, train, val = shakespeare_batches(path, args.iters, args.eval_batches)
    config = GPTConfig(vocab_size=vocab, context_length=NANOGPT["block"], emb_dim=128, n_heads=4, n_layers=4,
                       drop_rate=0.0)
    tl.manual_seed(1337)
    model = GPTModel(config)
    tg = None
    if torch is not None:
        from torch_gpt import build_torch_gpt

        tg = build_torch_gpt(torch, model)  # the same initial weights
    print(f"\nPart 1: Tiny Shakespeare (char), nanoGPT CPU configuration, {model.num_parameters():,} parameters, "
          f"{args.iters} iterations, validation on {args.eval_batches} batches")
    ours_loss, ours_s = train_ours(model, train, val, args.iters)
    print(f"| side | val loss | seconds | ms/iter |\n| --- | ---: | ---: | ---: |")
    print(f"| tinygrad_llm | {ours_loss:.4f} | {ours_s:.1f} | {1000 * ours_s / args.iters:.1f} |")
    if tg is not None:
        torch_loss, torch_s = train_torch(torch, tg, train, val, args.iters)
        print(f"| torch eager | {torch_loss:.4f} | {torch_s:.1f} | {1000 * torch_s / args.iters:.1f} |")
        print(f"time ours / torch: {ours_s / torch_s:.2f}")


def part2(args, torch) -> None:
    batch, context = args.batch_size, args.context_length
    config = GPTConfig.preset(args.preset, context_length=context, drop_rate=0.0)
    tl.manual_seed(0)
    model = GPTModel(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (batch, context))
    y = rng.integers(0, config.vocab_size, (batch, context))
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4)

    def ours_step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    steps = {"tinygrad_llm": ours_step}
    if torch is not None:
        from torch_gpt import build_torch_gpt, decay_groups

        tg = build_torch_gpt(torch, model).train()
        topt = torch.optim.AdamW(decay_groups(tg, 0.1), lr=1e-4)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y).flatten()

        def torch_step():
            loss = torch.nn.functional.cross_entropy(tg(tx).flatten(0, 1), ty)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tg.parameters(), 1.0)
            topt.step()
            topt.zero_grad(set_to_none=True)

        steps["torch eager"] = torch_step
    print(f"\nPart 2: one training step of {args.preset} ({model.num_parameters():,} parameters, untied), batch "
          f"{batch} x {context} tokens, {args.repeats} interleaved repetitions after one warm-up")
    for fn in steps.values():
        fn()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print("| side | median s/step | tokens/s |\n| --- | ---: | ---: |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {batch * context / seconds:.0f} |")
    if "torch eager" in medians:
        print(f"time ours / torch: {medians['tinygrad_llm'] / medians['torch eager']:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", help="tinyshakespeare.txt or its folder (default: $TINYGRAD_LLM_DATA)")
    parser.add_argument("--quick", action="store_true", help="200 iterations, 3 step repetitions")
    parser.add_argument("--iters", type=int, default=None, help="part 1 iterations (default 2000)")
    parser.add_argument("--eval-batches", type=int, default=200, help="part 1 validation batches")
    parser.add_argument("--repeats", type=int, default=None, help="part 2 repetitions (default 5)")
    parser.add_argument("--preset", default="gpt2-small", help="part 2 model (default gpt2-small)")
    parser.add_argument("--batch-size", type=int, default=4, help="part 2 batch size (default 4)")
    parser.add_argument("--context-length", type=int, default=64, help="part 2 tokens per row (default 64)")
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and Numba")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args(argv)
    args.iters = args.iters or (200 if args.quick else 2000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: the PyTorch reference is skipped")
    set_threads(args.threads)
    print_machine(threads=args.threads)
    try:
        if args.part in ("1", "both"):
            part1(args, torch)
    except FileNotFoundError as exc:
        print(f"part 1 skipped: {exc}")
    if args.part in ("2", "both"):
        part2(args, torch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
