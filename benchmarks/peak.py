"""This machine's float32 matrix-product peak: what a training step's achieved GFLOP/s is a fraction of.

    python benchmarks/peak.py                        # 2048^3 at one thread and at every core, and gpt2-small's shapes
    python benchmarks/peak.py --shape baby --threads 1

The peak is NumPy's own product (its BLAS with its own threads), the median and the best of five timed
samples: a large square product, and the products a training step of ``--shape`` makes (rows = batch x
tokens: the attention's q/k/v and output projections, the MLP's two, the output head). ``benchmarks/train.py
--part 2`` measures the same peak and reports each side's step as GFLOP/s and a share of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine, sgemm_gflops


def model_shapes(config, batch: int) -> dict:
    """name -> (m, k, n) of the forward products of one block and the head, at ``batch`` rows of the context."""
    rows, c = batch * config.context_length, config.emb_dim
    return {
        "q/k/v": (rows, c, 3 * c),
        "attention out": (rows, c, c),
        "mlp up": (rows, c, 4 * c),
        "mlp down": (rows, 4 * c, c),
        "head": (rows, c, config.vocab_size),
    }


def main(argv=None) -> int:
    from _steps import shape_config

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--shape", default="gpt2-small", help="baby, medium, gpt2-small (benchmarks/_steps.py)")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default: 1 and all)")
    args = parser.parse_args(argv)
    config, batch = shape_config(args.shape)
    counts = args.threads or sorted({1, os.cpu_count() or 1})
    print_machine(threads=", ".join(map(str, counts)))
    print("| product | m x k x n | threads | median GFLOP/s | best GFLOP/s |\n| --- | --- | ---: | ---: | ---: |")
    named = {"square": (2048, 2048, 2048), **{f"{args.shape} {k}": v for k, v in model_shapes(config, batch).items()}}
    for threads in counts:
        found = sgemm_gflops(threads, tuple(named.values()))
        for name, shape in named.items():
            median, best = found[shape]
            print(f"| {name} | {' x '.join(map(str, shape))} | {threads} | {median:.1f} | {best:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
