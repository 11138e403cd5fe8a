"""CuPy kernels for CUDA arrays: the same functions, with the same arguments, as the Numba modules.

UNTESTED ON A GPU: written against CuPy's documented RawKernel/ElementwiseKernel interfaces on a machine
without CUDA. tests/test_kernels.py::test_cuda_kernels_match_reference compares every kernel here with the
NumPy/CuPy reference and runs wherever CuPy sees a GPU; record its outcome in benchmarks/RESULTS.md.

Row operations (softmax, layer norm, cross-entropy) run one thread block per row: each thread strides over
the row, and a block reduction (warp shuffles, then one value per warp in shared memory) combines the max
and the sums. Sums accumulate in double. Elementwise operations (GELU, AdamW) are ElementwiseKernels.
The embedding backward keeps the reference (cupyx.scatter_add is already an atomic GPU kernel).
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
        _kernel("softmax_forward", x.dtype)((x2.shape[0],), (BLOCK,), (
            x2, y, np.int32(x2.shape[1]), np.int32(n_queries), np.int32(causal), x.dtype.type(scale)))
    return y.reshape(x.shape)


def softmax_backward(y, gy, scale=1.0, causal=False):
    y2, gy2 = _rows(y), _rows(gy)
    gx = cupy.empty_like(y2)
    if y2.size:
        n_queries = y.shape[-2] if causal else 1
        _kernel("softmax_backward", y.dtype)((y2.shape[0],), (BLOCK,), (
            y2, gy2, gx, np.int32(y2.shape[1]), np.int32(n_queries), np.int32(causal), y.dtype.type(scale)))
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
        _kernel("layer_norm_forward", x.dtype)((x2.shape[0],), (BLOCK,), (
            x2, w, b, np.int32(x2.shape[1]), np.float64(eps), np.int32(weight is not None),
            np.int32(bias is not None), y, mean, rstd))
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(gy, x, weight, mean, rstd):
    x2 = _rows(x)
    gy2 = cupy.ascontiguousarray(gy).reshape(x2.shape)
    gx = cupy.empty_like(x2)
    if x2.size:
        w = cupy.empty(1, x.dtype) if weight is None else cupy.ascontiguousarray(weight)
        _kernel("layer_norm_backward", x.dtype)((x2.shape[0],), (BLOCK,), (
            gy2, x2, w, mean, rstd, np.int32(x2.shape[1]), np.int32(weight is not None), gx))
    xhat = (x2 - mean[:, None]) * rstd[:, None]
    return gx.reshape(x.shape), (gy2 * xhat).sum(axis=0), gy2.sum(axis=0)


def cross_entropy_forward(logits, targets, ignore_index):
    logits = cupy.ascontiguousarray(logits)
    losses = cupy.empty(logits.shape[0], logits.dtype)
    lse = cupy.empty(logits.shape[0], logits.dtype)
    if logits.shape[0]:
        _kernel("cross_entropy_forward", logits.dtype)((logits.shape[0],), (BLOCK,), (
            logits, cupy.ascontiguousarray(targets, dtype=cupy.int64), np.int32(logits.shape[1]),
            np.int64(ignore_index), losses, lse))
    return losses, lse


def cross_entropy_backward(logits, lse, targets, row_scale):
    logits = cupy.ascontiguousarray(logits)
    g = cupy.empty_like(logits)
    if logits.shape[0]:
        _kernel("cross_entropy_backward", logits.dtype)((logits.shape[0],), (BLOCK,), (
            logits, cupy.ascontiguousarray(lse), cupy.ascontiguousarray(targets, dtype=cupy.int64),
            cupy.ascontiguousarray(row_scale, dtype=logits.dtype), np.int32(logits.shape[1]), g))
    return g


# ---- elementwise -------------------------------------------------------------------------------------

GELU_C = math.sqrt(2.0 / math.pi)

# x s with s = sigmoid(2u) = 0.5 (1 + tanh u): no cancellation of 1 + tanh u at negative x
_gelu_forward = cupy.ElementwiseKernel(
    "T x, T c, T a", "T y",
    "y = x / ((T)1 + exp((T)-2 * c * (x + a * x * x * x)))",
    "tinygrad_gelu_forward")

_gelu_backward = cupy.ElementwiseKernel(
    "T x, T gy, T c, T a", "T gx",
    """T e = exp((T)-2 * c * (x + a * x * x * x));
       T s = (T)1 / ((T)1 + e);
       gx = gy * (s + (T)2 * x * e * s * s * c * ((T)1 + (T)3 * a * x * x));""",
    "tinygrad_gelu_backward")

# In place on p, m, v (declared as outputs, read and written); torch.optim.AdamW's order of operations.
_adamw = cupy.ElementwiseKernel(
    "T g, T decay, T beta1_c, T beta2, T beta2_c, T bc2_sqrt, T eps, T neg_step_size", "T p, T m, T v",
    """T m_new = m + beta1_c * (g - m);
       T v_new = v * beta2 + beta2_c * g * g;
       m = m_new;
       v = v_new;
       p = p * decay + neg_step_size * (m_new / (sqrt(v_new) / bc2_sqrt + eps));""",
    "tinygrad_adamw_update")


def gelu_forward(x):
    t = x.dtype.type
    return _gelu_forward(x, t(GELU_C), t(0.044715))


def gelu_backward(x, gy):
    t = x.dtype.type
    return _gelu_backward(x, gy, t(GELU_C), t(0.044715))


def adamw_update_(param, grad, exp_avg, exp_avg_sq, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size):
    _adamw(grad, decay, beta1_c, beta2, beta2_c, bc2_sqrt, eps, neg_step_size, param, exp_avg, exp_avg_sq)
    return param
