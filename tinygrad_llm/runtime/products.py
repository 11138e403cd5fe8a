"""The matrix product every operation calls: ``matmul(a, b)``, the same bits at any thread count.

Three things make it faster than ``a @ b`` (or make it run at all) without changing what it computes:

- A (B, T, k) @ (k, n) product (every linear layer) is folded into one (B*T, k) @ (k, n) product. NumPy would
  make B GEMMs of T rows; one GEMM of B*T rows runs 1.2-1.7x faster (measured on baby's and gpt2-small's
  linear layers). CuPy needs it more: its > 2-D matmul sends float16 and bfloat16 to slow or failing paths,
  so on the GPU too a linear layer is one 2-D GEMM.
- On the GPU, a batched product (attention's (B, H, T, hd) @ (B, H, hd, S)) is one cuBLAS strided-batched
  GEMM in its operands' dtype (``runtime.batched_gemm``): CuPy's own > 2-D matmul raises on bfloat16, runs
  float16 in float32, and ignores TF32.
- On the CPU, a product of ``threads.blocks_for`` > 1 blocks is cut along its longer side, rows of ``a`` or
  columns of ``b``; each block is one single-threaded BLAS call writing into its slice of the result, run on
  the threads the policy lends now (``runtime.threads``). The blocks depend on the shape only, so the bits
  never depend on the load.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.runtime import threads
from tinygrad_llm.runtime.batched_gemm import batched_gemm, cuda_data_type

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array


def matmul(a: Array, b: Array) -> Array:
    """``a @ b`` for NumPy and CuPy arrays: leading axes folded into one 2-D product, blocks on the CPU's threads."""
    if a.ndim > 2 and b.ndim == 2:  # (B, T, k) @ (k, n) -> (B*T, k) @ (k, n): one GEMM (a copy if not a view)
        rows = math.prod(a.shape[:-1])  # not -1: reshape(-1, 0) is ambiguous for empty arrays
        return matmul(a.reshape(rows, a.shape[-1]), b).reshape(a.shape[:-1] + (b.shape[-1],))
    if type(a) is not np.ndarray or type(b) is not np.ndarray:  # CuPy: cuBLAS calls, on its own streams
        if (a.ndim > 2 or b.ndim > 2) and a.dtype == b.dtype and cuda_data_type(a.dtype) is not None:
            return batched_gemm(a, b)
        return a @ b
    threads.set_blas_threads(1)  # OpenBLAS's own threads would change the sums' order with their number
    if a.ndim < 2 or b.ndim < 2:  # dot products and matrix-vector products: one call
        return a @ b
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    parts = threads.blocks_for(m, k, n)
    if parts == 1:
        return a @ b
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (m, n), np.result_type(a, b))
    cuts = [(i * max(m, n)) // parts for i in range(parts + 1)]
    if m >= n:  # (..., rows, k) @ (k, n) -> the same rows of out
        jobs = [(a[..., lo:hi, :], b, out[..., lo:hi, :]) for lo, hi in zip(cuts, cuts[1:])]
    else:  # (m, k) @ (k, columns) -> the same columns of out
        jobs = [(a, b[..., lo:hi], out[..., lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
    threads.run_parallel([functools.partial(np.matmul, a, b, out=out) for a, b, out in jobs])
    return out
