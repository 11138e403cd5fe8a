"""CuPy kernels for CUDA arrays: the same functions, with the same arguments, as the Numba modules.

Every kernel is CUDA C in one text, kernels/cuda_source.py, compiled by CuPy's RawModule once per dtype. CI
compiles that same text with NVRTC for sm_80 and sm_90 in each dtype, without a GPU
(tests/test_cuda_sources.py); tests/test_kernels.py and tests/test_cuda.py run
the kernels on device="cuda" against the reference wherever CuPy sees a GPU, and
``python benchmarks/gpu_check.py`` runs them there and records the outcome in benchmarks/RESULTS.md.

Row operations (softmax, layer norm, cross-entropy) run one thread block per row: each thread strides over
the row, and a block reduction (warp shuffles, then one value per warp in shared memory) combines the max
and the sums. Sums accumulate in double. Layer norm's weight and bias gradients are column sums over all
rows, computed by a second kernel without any (rows, width) temporary. Elementwise operations (GELU, AdamW)
run one thread per element over flat contiguous arrays. The embedding backward sorts the ids and sums each
id's rows in a fixed order (two passes, so that a long run such as a padding id's is spread over many
blocks), where the reference's ``cupy.add.at`` adds with atomics in whatever order the threads arrive: its
float sums differ from run to run, and resuming a run would not repeat it bit for bit.
"""

from __future__ import annotations

import math

import cupy
import numpy as np

from tinygrad_llm.kernels.cuda_source import EMB_CHUNK, OPTIONS, source

BLOCK = 256  # threads per block: 8 warps

_modules: dict = {}


def _kernel(name: str, dtype):
    """The kernel ``name`` compiled for ``dtype`` (once per dtype, then cached by CuPy)."""
    dtype = np.dtype(dtype)
    module = _modules.get(dtype)
    if module is None:
        module = _modules[dtype] = cupy.RawModule(code=source(dtype), options=OPTIONS)
    return module.get_function(name)


def _grid(n: int) -> tuple:
    """Blocks for an elementwise kernel over n elements: one element per thread, at most 2^20 blocks (the
    kernels stride over the rest)."""
    return (max(1, min(-(-n // BLOCK), 1 << 20)),)


def _rows(a):
    return cupy.ascontiguousarray(a).reshape(-1, a.shape[-1])


def softmax_forward(x, scale=1.0, causal=False):
    x2 = _rows(x)
    y = cupy.empty_like(x2)
    if x2.size:
        n_queries = x.shape[-2] if causal else 1
        _kernel("softmax_forward", x.dtype)(
            (x2.shape[0],),
            (BLOCK,),
            (x2, y, np.int32(x2.shape[1]), np.int32(n_queries), np.int32(causal), x.dtype.type(scale)),
        )
    return y.reshape(x.shape)


def softmax_backward(y, gy, scale=1.0, causal=False):
    y2, gy2 = _rows(y), _rows(gy)
    gx = cupy.empty_like(y2)
    if y2.size:
        n_queries = y.shape[-2] if causal else 1
        _kernel("softmax_backward", y.dtype)(
            (y2.shape[0],),
            (BLOCK,),
            (y2, gy2, gx, np.int32(y2.shape[1]), np.int32(n_queries), np.int32(causal), y.dtype.type(scale)),
        )
    return gx.reshape(y.shape)


def layer_norm_forward(x, weight, bias, eps):
    x2 = _rows(x)
    y = cupy.empty_like(x2)
    mean = cupy.empty(x2.shape[0], x.dtype)
    rstd = cupy.empty(x2.shape[0], x.dtype)
    if x2.size:
        dummy = cupy.empty(1, x.dtype)
        w = dummy if weight is None else cupy.ascontiguousarray(weight)
        b = dummy if bias is None else cupy.ascontiguousarray(bias)
        _kernel("layer_norm_forward", x.dtype)(
            (x2.shape[0],),
            (BLOCK,),
            (
                x2,
                w,
                b,
                np.int32(x2.shape[1]),
                np.float64(eps),
                np.int32(weight is not None),
                np.int32(bias is not None),
                y,
                mean,
                rstd,
            ),
        )
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(gy, x, weight, mean, rstd):
    x2 = _rows(x)
    gy2 = cupy.ascontiguousarray(gy).reshape(x2.shape)
    gx = cupy.empty_like(x2)
    if x2.size:
        w = cupy.empty(1, x.dtype) if weight is None else cupy.ascontiguousarray(weight)
        _kernel("layer_norm_backward", x.dtype)(
            (x2.shape[0],), (BLOCK,), (gy2, x2, w, mean, rstd, np.int32(x2.shape[1]), np.int32(weight is not None), gx)
        )
    gw, gb = _layer_norm_param_grads(gy2, x2, mean, rstd)
    return gx.reshape(x.shape), gw, gb


def _layer_norm_param_grads(gy2, x2, mean, rstd):
    """(sum_r gy xhat, sum_r gy) over the rows of (rows, width) arrays, in x's dtype."""
    rows, width = x2.shape
    chunks = max(1, min(256, -(-rows // 64)))  # each row lane handles >= 8 rows; <= 256 partial rows
    gw_parts = cupy.zeros((chunks, width), cupy.float64)
    gb_parts = cupy.zeros((chunks, width), cupy.float64)
    if x2.size:
        _kernel("layer_norm_param_grads", x2.dtype)(
            ((width + 31) // 32, chunks),
            (32, 8),
            (gy2, x2, mean, rstd, np.int64(rows), np.int32(width), gw_parts, gb_parts),
        )
    return gw_parts.sum(axis=0).astype(x2.dtype), gb_parts.sum(axis=0).astype(x2.dtype)


def embedding_backward(ids, gy, num_embeddings):
    """The (num_embeddings, dim) gradient of weight[ids] given gy of shape ids.shape + (dim,); deterministic."""
    dim = gy.shape[-1]
    gw = cupy.zeros((num_embeddings, dim), gy.dtype)
    gy2 = cupy.ascontiguousarray(gy).reshape(-1, dim)
    if gy2.size:
        flat = cupy.asarray(ids).reshape(-1).astype(cupy.int64, copy=False)
        order = cupy.argsort(flat)  # CuPy's sort is stable: each run keeps the rows' order
        sorted_ids = cupy.ascontiguousarray(flat[order])
        n = np.int64(flat.size)
        parts = cupy.empty((flat.size, dim), cupy.float64)  # only each run piece's first row is written and read
        _kernel("embedding_backward_chunks", gy.dtype)(
            (-(-flat.size // EMB_CHUNK),), (BLOCK,), (sorted_ids, order, gy2, n, np.int32(dim), parts)
        )
        _kernel("embedding_backward_runs", gy.dtype)((flat.size,), (BLOCK,), (sorted_ids, parts, n, np.int32(dim), gw))
    return gw


def cross_entropy_forward(logits, targets, ignore_index):
    logits = cupy.ascontiguousarray(logits)
    losses = cupy.empty(logits.shape[0], logits.dtype)
    lse = cupy.empty(logits.shape[0], logits.dtype)
    if logits.shape[0]:
        _kernel("cross_entropy_forward", logits.dtype)(
            (logits.shape[0],),
            (BLOCK,),
            (
                logits,
                cupy.ascontiguousarray(targets, dtype=cupy.int64),
                np.int32(logits.shape[1]),
                np.int64(ignore_index),
                losses,
                lse,
            ),
        )
    return losses, lse


def cross_entropy_backward(logits, lse, targets, row_scale):
    logits = cupy.ascontiguousarray(logits)
    g = cupy.empty_like(logits)
    if logits.shape[0]:
        _kernel("cross_entropy_backward", logits.dtype)(
            (logits.shape[0],),
            (BLOCK,),
            (
                logits,
                cupy.ascontiguousarray(lse),
                cupy.ascontiguousarray(targets, dtype=cupy.int64),
                cupy.ascontiguousarray(row_scale, dtype=logits.dtype),
                np.int32(logits.shape[1]),
                g,
            ),
        )
    return g


# ---- elementwise -------------------------------------------------------------------------------------

GELU_C = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    t = x.dtype.type
    x1 = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x1)
    _kernel("gelu_forward", x.dtype)(_grid(x1.size), (BLOCK,), (x1, np.int64(x1.size), t(GELU_C), t(0.044715), y))
    return y


def gelu_backward(x, gy):
    if gy.shape != x.shape:
        return None  # the reference broadcasts; this kernel reads gy element for element
    t = x.dtype.type
    x1, gy1 = cupy.ascontiguousarray(x), cupy.ascontiguousarray(gy)
    gx = cupy.empty_like(x1)
    _kernel("gelu_backward", x.dtype)(
        _grid(x1.size), (BLOCK,), (x1, gy1, np.int64(x1.size), t(GELU_C), t(0.044715), gx)
    )
    return gx


def gelu_erf_forward(x):
    x1 = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x1)
    _kernel("gelu_erf_forward", x.dtype)(_grid(x1.size), (BLOCK,), (x1, np.int64(x1.size), y))
    return y


def gelu_erf_backward(x, gy):
    if gy.shape != x.shape:
        return None  # the reference broadcasts; this kernel reads gy element for element
    x1, gy1 = cupy.ascontiguousarray(x), cupy.ascontiguousarray(gy, dtype=x.dtype)
    gx = cupy.empty_like(x1)
    _kernel("gelu_erf_backward", x.dtype)(_grid(x1.size), (BLOCK,), (x1, gy1, np.int64(x1.size), gx))
    return gx


def adamw_update_(param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size):
    """The AdamW step in place; scalars arrive precomputed in the arrays' dtype.

    Returns None (the reference must run) when an array is not contiguous: a copy would not be in place."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if not all(a.flags.c_contiguous for a in arrays) or len({a.shape for a in arrays}) != 1:
        return None
    _kernel("adamw_update", param.dtype)(
        _grid(param.size),
        (BLOCK,),
        (
            param,
            grad,
            exp_avg,
            exp_avg_sq,
            np.int64(param.size),
            decay,
            beta1_c,
            beta2,
            beta2_c,
            bc2_sqrt,
            eps,
            neg_step_size,
        ),
    )
    return param
