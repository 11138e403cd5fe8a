"""A batched matrix product of CuPy arrays as one cuBLAS strided-batched GEMM, in the operands' own dtype.

CuPy 14's ``matmul`` of operands of more than 2 dimensions sends every dtype whose char is not in 'efdFD' to
its integer path, where bfloat16 ('E') raises; it turns float16 operands into float32 (four casts, no tensor
cores); and its batched GEMM ignores the compute type TF32 sets. So attention's (B, H, T, hd) @ (B, H, hd, S)
comes here: one ``cublasGemmStridedBatchedEx`` over the B*H matrices, float16 and bfloat16 summed in float32
on the tensor cores, float32 on TF32 when ``backend.set_float32_matmul_precision("high")`` is on.

cuBLAS is column-major: a row-major (r, c) matrix with row stride ``ld`` is, to it, the column-major (c, r)
matrix of that leading dimension, its transpose. So the row-major C = A B is computed as C^T = B^T A^T, with
B as cuBLAS's first operand; an operand stored transposed (``k.swapaxes(-1, -2)``, a view) is passed as it
is with cuBLAS's transpose flag, not copied. tests/test_gpu_path.py checks this against a NumPy model of
cuBLAS's definition, on CPU arrays.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tinygrad_llm import backend

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array

# cudaDataType_t and cublasComputeType_t values (library_types.h, cublas_api.h); cublasOperation_t
CUDA_R_32F, CUDA_R_64F, CUDA_R_16F, CUDA_R_16BF = 0, 1, 2, 14
CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F = 68, 77, 70
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUBLAS_GEMM_DEFAULT = -1


def cuda_data_type(dtype: np.dtype) -> int | None:
    """cuBLAS's name for a float dtype (None: a dtype this GEMM does not take)."""
    if dtype == np.float32:
        return CUDA_R_32F
    if dtype == np.float64:
        return CUDA_R_64F
    if dtype == np.float16:
        return CUDA_R_16F
    return CUDA_R_16BF if dtype.name == "bfloat16" else None


def batched_gemm(a: Array, b: Array, libraries: Any = None) -> Array:
    """``a @ b`` for CuPy arrays of equal float dtype with batch axes (NumPy's rules: they broadcast, a 1-D
    operand is a row or a column, dropped from the result), as one strided-batched GEMM. ``libraries``: what
    ``cuda_libraries()`` returns (tests pass a model of it)."""
    xp = backend.get_array_module(a)
    a2 = a[None, :] if a.ndim == 1 else a  # (k,) -> (1, k)
    b2 = b[:, None] if b.ndim == 1 else b  # (k,) -> (k, 1)
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    (m, k), n = a2.shape[-2:], b2.shape[-1]
    if b2.shape[-2] != k:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({k} != {b2.shape[-2]})")
    out = xp.empty(batch + (m, n), dtype=a.dtype)
    if out.size and k == 0:
        out.fill(0)  # a sum of no products
    elif out.size:
        _gemm(xp, a2, b2, out, math.prod(batch), libraries or cuda_libraries())
    if b.ndim == 1:
        out = out[..., 0]  # (..., m, 1) -> (..., m)
    if a.ndim == 1:
        out = out[..., 0, :]  # (..., 1, n) -> (..., n)
    return out


def cuda_libraries() -> tuple[Any, int, bool, Any]:
    """(cuBLAS's module, this device's cuBLAS handle, whether float32 products run on TF32, device_pointer)."""
    import cupy
    from cupy._core import _routines_linalg as linalg  # not public API: where set_compute_type keeps TF32

    tf32 = linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32
    return cupy.cuda.cublas, cupy.cuda.get_cublas_handle(), tf32, lambda array: array.data.ptr


def _gemm(xp, a, b, out, count: int, libraries) -> None:
    """out[i] = a[i] @ b[i] for the ``count`` matrices of the batch, row-major, as C^T = B^T A^T (see top)."""
    cublas, handle, tf32, pointer = libraries
    batch = out.shape[:-2]
    a_array, a_stride, a_op, lda = _operand(xp, a, batch)
    b_array, b_stride, b_op, ldb = _operand(xp, b, batch)
    m, n, k = out.shape[-2], out.shape[-1], a.shape[-1]
    dtype = cuda_data_type(out.dtype)
    if out.dtype == np.float64:
        compute, one, zero = CUBLAS_COMPUTE_64F, np.ones((), np.float64), np.zeros((), np.float64)
    else:  # float16 and bfloat16 sum in float32 (tensor cores); float32 on TF32 when that is set
        compute = CUBLAS_COMPUTE_32F_FAST_TF32 if tf32 and out.dtype == np.float32 else CUBLAS_COMPUTE_32F
        one, zero = np.ones((), np.float32), np.zeros((), np.float32)
    cublas.gemmStridedBatchedEx(
        handle,
        b_op,  # cuBLAS's first operand: B^T (n, k)
        a_op,  # its second: A^T (k, m)
        n,
        m,
        k,
        one.ctypes.data,  # alpha and beta: host scalars in the compute type's precision
        pointer(b_array),
        dtype,
        ldb,
        b_stride,
        pointer(a_array),
        dtype,
        lda,
        a_stride,
        zero.ctypes.data,
        pointer(out),
        dtype,
        n,  # out is C-contiguous: its C^T (n, m) has leading dimension n
        m * n,
        count,
        compute,
        CUBLAS_GEMM_DEFAULT,
    )


def _operand(xp, x, batch):
    """(array, batch stride, cuBLAS op, leading dimension) for the (..., r, c) operand ``x`` of a product with
    batch axes ``batch``: the same matrix for every batch element has stride 0; a view with one batch stride and
    rows or columns contiguous is used as it is; anything else is copied C-contiguous first."""
    r, c = x.shape[-2:]
    if all(size == 1 for size in x.shape[:-2]):  # one matrix, broadcast over the batch
        x, batch_stride = x.reshape(r, c), 0
    else:
        x = xp.broadcast_to(x, batch + (r, c)).reshape((-1, r, c))  # a view where strides allow, else a copy
        batch_stride = x.strides[0] // x.itemsize
    strides = tuple(s // x.itemsize for s in x.strides[-2:])
    if strides[1] == 1 and strides[0] >= max(c, 1) and batch_stride >= 0:  # rows contiguous (row-major)
        return x, batch_stride, CUBLAS_OP_N, strides[0]
    if strides[0] == 1 and strides[1] >= max(r, 1) and batch_stride >= 0:  # columns contiguous (a transpose)
        return x, batch_stride, CUBLAS_OP_T, strides[1]
    x = xp.ascontiguousarray(x)
    return x, (r * c if x.ndim == 3 else 0), CUBLAS_OP_N, max(c, 1)
