"""Where a second BLAS thread starts to pay: matrix products of growing size on 1 and on 2 threads.

    python benchmarks/threads.py                 # the products of the three training shapes, and squares
    python benchmarks/threads.py --repeats 15

For each (m, k, n), float32, the two thread counts interleaved repetition by repetition (set through
threadpoolctl, as tinygrad_llm.threads does); prints the medians and the speed-up of the second thread.
``BLAS_PARALLEL_MIN_MNK`` in tinygrad_llm/threads.py is set from this table on an idle machine.
Benchmark with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset where the environment sets them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine, time_interleaved  # noqa: E402

SIZES = [  # (m, k, n): squares, then the training shapes' products (rows = batch x context)
    (64, 64, 64), (96, 96, 96), (128, 128, 128), (256, 128, 128),
    (768, 128, 128), (768, 128, 512), (768, 512, 128), (768, 128, 65),  # baby: 12 x 64 rows, 128 wide
    (2048, 384, 384), (2048, 384, 1536),  # medium: 8 x 256 rows, 384 wide
    (256, 768, 768), (256, 768, 3072),  # gpt2-small: 4 x 64 rows, 768 wide
    (64, 32, 64), (64, 64, 32),  # one head's scores and weights @ values (baby)
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    from tinygrad_llm import threads

    libs = threads._blas_controllers()
    if not libs:
        print("threadpoolctl finds no BLAS to control in this NumPy: nothing to measure")
        return 1
    print_machine(blas=", ".join(f"{lib.internal_api} {lib.version}" for lib in libs))
    rng = np.random.default_rng(0)
    print("| m x k x n | multiply-adds | 1 thread ms | 2 threads ms | speed-up |\n| --- | ---: | ---: | ---: | ---: |")
    for m, k, n in SIZES:
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)

        def on(count):
            def product():
                for lib in libs:
                    lib.set_num_threads(count)
                a @ b
            return product

        medians = time_interleaved({1: on(1), 2: on(2)}, repeats=args.repeats, min_time=0.02)
        print(f"| {m} x {k} x {n} | {m * k * n:,} | {medians[1] * 1e3:.3f} | {medians[2] * 1e3:.3f} | "
              f"{medians[1] / medians[2]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
