"""The book's training step beside the command line's: how much the fast path buys.

    python benchmarks/book_loop.py                  # mini (tinygrad-llm train's default), batch 12, block 64
    python benchmarks/book_loop.py --preset small-cpu --repeats 9
    python benchmarks/book_loop.py --quick          # a check that it runs, not a measurement

"book": the four lines of ``train_model_simple`` (chapter 5), ``train_classifier_simple`` and the DPO loop:
``optimizer.zero_grad(); loss = calc_loss_batch(...); loss.backward(); optimizer.step()``. "fast": the same
step through ``train.step.train_step``, what ``tinygrad-llm train`` and the fine-tuning commands run: the batch
cut into parts computed side by side on the cores (``runtime.batch_parts``). Same model, weights, batch and
AdamW on both sides, no clipping on either; interleaved repetitions in one process, medians and their ratio,
once at the default threads and once at one thread (where the fast step has one part: the same work). The
ratio at the default threads is the figure the book loops' docstrings quote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine, time_interleaved

import tinygrad_llm as tl
from tinygrad_llm import runtime
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW, param_groups_for_weight_decay
from tinygrad_llm.runtime import split_count
from tinygrad_llm.train.losses import calc_loss_batch
from tinygrad_llm.train.step import train_step


def make_side(config, seed: int):
    """A model and its AdamW, from the same seed on both sides (the CLI's optimizer settings)."""
    tl.manual_seed(seed)
    model = GPTModel(config)
    model.train()
    return model, AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-3)


def book_step(model, optimizer, x, y):
    optimizer.zero_grad()
    loss = calc_loss_batch(x, y, model, "cpu")
    loss.backward()
    optimizer.step()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini", help="model size (default: mini, tinygrad-llm train's)")
    parser.add_argument("--batch-size", type=int, default=12, help="windows per step (default: 12, the CLI's)")
    parser.add_argument("--context-length", type=int, default=64, help="tokens per window (default: 64)")
    parser.add_argument("--vocab-size", type=int, default=96, help="about a character vocabulary (default: 96)")
    parser.add_argument("--repeats", type=int, default=7, help="timed samples per side (default: 7)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 repeats: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.batch_size, args.context_length, args.repeats = "tiny", 4, 16, 2

    config = GPTConfig.preset(
        args.preset, vocab_size=args.vocab_size, context_length=args.context_length, drop_rate=0.0
    )
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, args.vocab_size, size=(args.batch_size, args.context_length))
    y = rng.integers(0, args.vocab_size, size=(args.batch_size, args.context_length))
    book, fast = make_side(config, args.seed), make_side(config, args.seed)
    print_machine(
        preset=args.preset,
        batch=args.batch_size,
        context=args.context_length,
        parameters=f"{book[0].num_parameters():,}",
        repeats=args.repeats,
    )
    number = 1 if args.quick else None
    runtime.configure()  # host memory tuned, as the command line and the Trainer do
    for n in (None, 1):  # the default thread policy, then one thread
        runtime.set_threads(n)  # None: the automatic choice
        medians = time_interleaved(
            {"book": lambda: book_step(*book, x, y), "fast": lambda: train_step(*fast, [(x, y)], "cpu")},
            repeats=args.repeats,
            number=number,
            warmup=1 if args.quick else 3,
        )
        label = "default threads" if n is None else f"--threads {n}"
        book_ms, fast_ms = medians["book"] * 1e3, medians["fast"] * 1e3
        print(
            f"{label} ({split_count(x, fast[0])} part(s) a step): book {book_ms:.1f} ms, fast {fast_ms:.1f} ms: "
            f"the fast step {book_ms / fast_ms:.2f} times as fast"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
