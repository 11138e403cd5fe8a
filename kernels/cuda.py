"""CuPy kernels for CUDA arrays: the same functions, with the same arguments, as the Numba modules.

Not yet run on a GPU: written against CuPy's RawModule/ElementwiseKernel interfaces on machines without
CUDA. The sources do compile with NVRTC (tests/test_kernels.py::test_cuda_sources_compile, wherever NVRTC is
installed); tests/test_kernels.py runs every kernel test on device="cuda" as well, with the same shapes and
extreme values as the Numba kernels, wherever CuPy sees a GPU: ``python benchmarks/gpu_check.py`` runs them
and records the outcome in benchmarks/RESULTS.md.

Row operations (softmax, layer norm, cross-entropy) run one thread block per row: each thread strides over
the row, and a block reduction (warp shuffles, then one value per warp in shared memory) combines the max
and the sums. Sums accumulate in double. Layer norm's weight and bias gradients are column sums over all
rows, computed by a second kernel without any (rows, width) temporary. Elementwise operations (GELU, AdamW)
are ElementwiseKernels. The embedding backward sorts the ids and sums each id's rows in order, where the
reference's ``cupy.add.at`` adds with atomics in whatever order the threads arrive: its float sums differ
from run to run, and resuming a run would not repeat it bit for bit.
"""

from __future__ import annotations

import math

import cupy
import numpy as np

BLOCK = 256  # threads per row block: 8 warps

_ROW_SOURCE = r"""
typedef {T} T;

__device__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
// Every thread of the block gets the result. buf: one slot per warp (BLOCK <= 1024).
__device__ double block_sum(double v, double* buf) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // buf may still be read by the previous reduction
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = threadIdx.x < warps ? buf[threadIdx.x] : 0.0;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) buf[0] = v;
    __syncthreads();
    return buf[0];
}
__device__ T block_max(T v, T* buf) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) buf[warp] = v;
    __syncthreads();
    v = threadIdx.x < warps ? buf[threadIdx.x] : buf[0];
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) buf[0] = v;
    __syncthreads();
    return buf[0];
}

// Causal rows: row r is query r % n_queries of the last n_queries positions among width keys.
__device__ int row_length(long long r, int width, int n_queries, int causal) {
    return causal ? (int)(r % n_queries) + width - n_queries + 1 : width;
}

extern "C" __global__ void softmax_forward(const T* x, T* y, int width, int n_queries, int causal, T scale) {
    __shared__ double sbuf[32];
    __shared__ T mbuf[32];
    long long r = blockIdx.x;
    const T* xr = x + r * width;
    T* yr = y + r * width;
    int n = row_length(r, width, n_queries, causal);
    T m = xr[0];
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = max(m, xr[j]);
    m = block_max(m, mbuf);
    double s = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        T e = exp((xr[j] - m) * scale);
        yr[j] = e;
        s += e;
    }
    T inv = (T)(1.0 / block_sum(s, sbuf));
    for (int j = threadIdx.x; j < n; j += blockDim.x) yr[j] *= inv;
    for (int j = n + threadIdx.x; j < width; j += blockDim.x) yr[j] = 0;
}

extern "C" __global__ void softmax_backward(const T* y, const T* gy, T* gx, int width, int n_queries, int causal,
                                            T scale) {
    __shared__ double sbuf[32];
    long long r = blockIdx.x;
    const T* yr = y + r * width;
    const T* gyr = gy + r * width;
    T* gxr = gx + r * width;
    int n = row_length(r, width, n_queries, causal);
    double d = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) d += (double)gyr[j] * yr[j];
    T dot = (T)block_sum(d, sbuf);
    for (int j = threadIdx.x; j < n; j += blockDim.x) gxr[j] = scale * yr[j] * (gyr[j] - dot);
    for (int j = n + threadIdx.x; j < width; j += blockDim.x) gxr[j] = 0;
}

// weight/bias may be null (has_weight/has_bias 0).
extern "C" __global__ void layer_norm_forward(const T* x, const T* weight, const T* bias, int width, double eps,
                                              int has_weight, int has_bias, T* y, T* mean, T* rstd) {
    __shared__ double sbuf[32];
    long long r = blockIdx.x;
    const T* xr = x + r * width;
    T* yr = y + r * width;
    double s = 0.0;
    for (int j = threadIdx.x; j < width; j += blockDim.x) s += xr[j];
    double mu = block_sum(s, sbuf) / width;
    double q = 0.0;
    for (int j = threadIdx.x; j < width; j += blockDim.x) { double d = xr[j] - mu; q += d * d; }
    double rs = rsqrt(block_sum(q, sbuf) / width + eps);
    if (threadIdx.x == 0) { mean[r] = (T)mu; rstd[r] = (T)rs; }
    T m = (T)mu, sd = (T)rs;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        T v = (xr[j] - m) * sd;
        if (has_weight) v *= weight[j];
        if (has_bias) v += bias[j];
        yr[j] = v;
    }
}

// gx = rstd (gxhat - mean(gxhat) - xhat mean(gxhat xhat)), gxhat = gy * w
extern "C" __global__ void layer_norm_backward(const T* gy, const T* x, const T* weight, const T* mean,
                                               const T* rstd, int width, int has_weight, T* gx) {
    __shared__ double sbuf[32];
    long long r = blockIdx.x;
    const T* xr = x + r * width;
    const T* gyr = gy + r * width;
    T* gxr = gx + r * width;
    T m = mean[r], sd = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        T g = has_weight ? gyr[j] * weight[j] : gyr[j];
        sg += g;
        sgx += (double)g * ((xr[j] - m) * sd);
    }
    T a = (T)(block_sum(sg, sbuf) / width);
    T c = (T)(block_sum(sgx, sbuf) / width);
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        T g = has_weight ? gyr[j] * weight[j] : gyr[j];
        gxr[j] = sd * (g - a - (xr[j] - m) * sd * c);
    }
}

// Column sums over all rows: gweight[j] = sum_r gy[r, j] xhat[r, j], gbias[j] = sum_r gy[r, j], xhat recomputed
// from x, mean and rstd. Block (32, 8): 32 neighbouring columns (coalesced reads), 8 row lanes; blockIdx.y
// picks every gridDim.y-th group of rows. Each block writes one partial row of (gridDim.y, width) in double;
// the host adds the partial rows in a fixed order (deterministic, unlike atomics).
extern "C" __global__ void layer_norm_param_grads(const T* gy, const T* x, const T* mean, const T* rstd,
                                                  long long rows, int width, double* gw_parts, double* gb_parts) {
    __shared__ double sw[8][33], sb[8][33];  // 33: no bank conflicts on the column reads below
    int j = blockIdx.x * 32 + threadIdx.x;
    double w = 0.0, b = 0.0;
    if (j < width) {
        for (long long r = (long long)blockIdx.y * 8 + threadIdx.y; r < rows; r += (long long)gridDim.y * 8) {
            double g = gy[r * width + j];
            w += g * (double)((x[r * width + j] - mean[r]) * rstd[r]);
            b += g;
        }
    }
    sw[threadIdx.y][threadIdx.x] = w;
    sb[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && j < width) {
        for (int k = 1; k < 8; k++) { w += sw[k][threadIdx.x]; b += sb[k][threadIdx.x]; }
        gw_parts[(long long)blockIdx.y * width + j] = w;
        gb_parts[(long long)blockIdx.y * width + j] = b;
    }
}

// Embedding backward without atomics, so a run repeats bit for bit: the flat ids are sorted (stably, with
// their positions in `order`), and the block at the first position of each run of equal ids adds that run's
// gradient rows, in order, into the id's row. Other blocks return at once.
extern "C" __global__ void embedding_backward(const long long* sorted_ids, const long long* order, const T* gy,
                                              long long n, int dim, T* gw) {
    long long i = blockIdx.x;
    long long id = sorted_ids[i];
    if (i > 0 && sorted_ids[i - 1] == id) return;
    long long end = i + 1;
    while (end < n && sorted_ids[end] == id) end++;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        double s = 0.0;
        for (long long k = i; k < end; k++) s += gy[order[k] * dim + j];
        gw[id * dim + j] = (T)s;
    }
}

extern "C" __global__ void cross_entropy_forward(const T* logits, const long long* targets, int classes,
                                                 long long ignore_index, T* losses, T* lse) {
    __shared__ double sbuf[32];
    __shared__ T mbuf[32];
    long long r = blockIdx.x;
    const T* lr = logits + r * classes;
    T m = lr[0];
    for (int j = threadIdx.x; j < classes; j += blockDim.x) m = max(m, lr[j]);
    m = block_max(m, mbuf);
    double s = 0.0;
    for (int j = threadIdx.x; j < classes; j += blockDim.x) s += exp(lr[j] - m);
    s = block_sum(s, sbuf);
    if (threadIdx.x == 0) {
        T l = (T)(m + log(s));
        long long t = targets[r];
        lse[r] = l;
        losses[r] = t == ignore_index ? (T)0 : l - lr[t];
    }
}

extern "C" __global__ void cross_entropy_backward(const T* logits, const T* lse, const long long* targets,
                                                  const T* row_scale, int classes, T* g) {
    long long r = blockIdx.x;
    const T* lr = logits + r * classes;
    T* gr = g + r * classes;
    T c = row_scale[r], shift = lse[r];
    long long t = targets[r];
    for (int j = threadIdx.x; j < classes; j += blockDim.x)
        gr[j] = c == (T)0 ? (T)0 : c * exp(lr[j] - shift) - (j == t ? c : (T)0);
}
"""

_modules: dict = {}


def _kernel(name: str, dtype):
    """The RawKernel ``name`` compiled for float or double (compiled once per dtype, cached by CuPy)."""
    dtype = np.dtype(dtype)
    module = _modules.get(dtype)
    if module is None:
        ctype = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[dtype]
        module = _modules[dtype] = cupy.RawModule(code=_ROW_SOURCE.replace("{T}", ctype), options=("-std=c++14",))
    return module.get_function(name)


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
        _kernel("embedding_backward", gy.dtype)(
            (flat.size,),
            (BLOCK,),
            (cupy.ascontiguousarray(flat[order]), order, gy2, np.int64(flat.size), np.int32(dim), gw),
        )
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

# Each elementwise kernel as (inputs, outputs, body), kept as data so tests can compile the bodies with NVRTC.
ELEMENTWISE = {
    # x s with s = sigmoid(2u) = 0.5 (1 + tanh u): no cancellation of 1 + tanh u at negative x
    "gelu_forward": ("T x, T c, T a", "T y", "y = x / ((T)1 + exp((T)-2 * c * (x + a * x * x * x)));"),
    # d/dx = s + 2 x s (1 - s) c (1 + 3 a x^2). Below x ~ -10 (float32) e = exp(-2u) overflows to inf and s
    # is 0: written with e (2 x e s^2) that is inf * 0 = NaN. So 1 - s is taken directly where s < 1/2 (no
    # cancellation there, and e may be inf) and as e s elsewhere (exact), as the Numba kernel does.
    "gelu_backward": (
        "T x, T gy, T c, T a",
        "T gx",
        """
        T e = exp((T)-2 * c * (x + a * x * x * x));
        T s = (T)1 / ((T)1 + e);
        T one_minus_s = e > (T)1 ? (T)1 - s : e * s;
        gx = gy * (s + s * one_minus_s * ((T)2 * x * c * ((T)1 + (T)3 * a * x * x)));""",
    ),
    # In place on p, m, v (declared as outputs, read and written); torch.optim.AdamW's order of operations.
    "adamw_update": (
        "T g, T decay, T beta1_c, T beta2, T beta2_c, T bc2_sqrt, T eps, T neg_step_size",
        "T p, T m, T v",
        """
        T m_new = m + beta1_c * (g - m);
        T v_new = v * beta2 + beta2_c * g * g;
        m = m_new;
        v = v_new;
        p = p * decay + neg_step_size * (m_new / (sqrt(v_new) / bc2_sqrt + eps));""",
    ),
}
_gelu_forward, _gelu_backward, _adamw = (
    cupy.ElementwiseKernel(*ELEMENTWISE[name], f"tinygrad_{name}")
    for name in ("gelu_forward", "gelu_backward", "adamw_update")
)


def gelu_forward(x):
    t = x.dtype.type
    return _gelu_forward(x, t(GELU_C), t(0.044715))


def gelu_backward(x, gy):
    t = x.dtype.type
    return _gelu_backward(x, gy, t(GELU_C), t(0.044715))


def adamw_update_(param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size):
    _adamw(grad, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size, param, exp_avg, exp_avg_sq)
    return param
