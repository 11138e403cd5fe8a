"""Where a second thread starts to pay: matrix products of growing size on 1 thread, cut into blocks on 2
threads (tinygrad_llm.runtime.matmul: the same bits at any thread count), and on OpenBLAS's own 2 threads.

    python benchmarks/threads.py                 # the products of the three training shapes, and squares
    python benchmarks/threads.py --repeats 15

For each (m, k, n), float32, the three interleaved repetition by repetition; prints the medians and the
speed-ups over one thread. ``SPLIT_MIN_MNK`` and ``BLOCK_MIN_MNK`` in tinygrad_llm/runtime/threads.py are set from
this table on an idle machine; OpenBLAS's column is the reference (faster at middle sizes, but its bits
change with the thread count).
Benchmark with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset where the environment sets them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_machine, time_interleaved

SIZES = [  # (m, k, n): squares, then the training shapes' products (rows = batch x context)
    (64, 64, 64),
    (96, 96, 96),
    (128, 128, 128),
    (256, 128, 128),
    (768, 128, 128),
    (768, 128, 512),
    (768, 512, 128),
    (768, 128, 65),  # baby: 12 x 64 rows, 128 wide
    (2048, 384, 384),
    (2048, 384, 1536),  # medium: 8 x 256 rows, 384 wide
    (256, 768, 768),
    (256, 768, 3072),  # gpt2-small: 4 x 64 rows, 768 wide
    (64, 32, 64),
    (64, 64, 32),  # one head's scores and weights @ values (baby)
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    from tinygrad_llm.runtime import matmul, threads

    libs = threads._blas_controllers()
    if not libs:
        print("threadpoolctl finds no BLAS to control in this NumPy: nothing to measure")
        return 1
    print_machine(blas=", ".join(f"{lib.internal_api} {lib.version}" for lib in libs))
    rng = np.random.default_rng(0)
    print(
        "| m x k x n | multiply-adds | blocks | 1 thread ms | ours, 2 threads ms | OpenBLAS, 2 threads ms "
        "| ours speed-up | OpenBLAS speed-up |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for m, k, n in SIZES:
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)

        def blas_on(count):
            def product():
                threads.set_blas_threads(count)
                a @ b

            return product

        def ours_on(count):
            def product():
                threads.set_threads(count)
                matmul(a, b)

            return product

        # OpenBLAS's workers spin for a while after each of its parallel calls, taking the core our blocks
        # want: so its side is timed in a pass of its own, after ours
        medians = time_interleaved({"one": blas_on(1), "ours": ours_on(2)}, repeats=args.repeats, min_time=0.02)
        medians["blas"] = time_interleaved({"blas": blas_on(2)}, repeats=args.repeats, min_time=0.02)["blas"]
        threads.set_blas_threads(1)
        one = medians["one"]
        print(
            f"| {m} x {k} x {n} | {m * k * n:,} | {threads.blocks_for(m, k, n)} | {one * 1e3:.3f} | "
            f"{medians['ours'] * 1e3:.3f} | {medians['blas'] * 1e3:.3f} | {one / medians['ours']:.2f} | "
            f"{one / medians['blas']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
