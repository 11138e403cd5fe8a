"""The CUDA C of every CuPy kernel (kernels/cuda.py launches them), as text: importable without CuPy or a GPU.

``source(dtype)`` is exactly what CuPy's RawModule compiles for arrays of that dtype (with ``OPTIONS``, and
the GPU's architecture, which CuPy adds). tests/test_cuda_sources.py compiles the same text with NVRTC for
sm_80 and sm_90 in each dtype of ``C_TYPES``, without a GPU, so a compile error fails CI.
"""

from __future__ import annotations

import numpy as np

# The C type of each dtype the kernels are built for: dispatch sends them float32 and float64 arrays only.
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("-std=c++14",)  # what NVRTC gets besides the GPU's architecture, which CuPy adds
EMB_CHUNK = 64  # sorted positions per block in the embedding gradient's first pass (see its kernels)


SOURCE = r"""
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

// Embedding backward without atomics, so a run repeats bit for bit. The flat ids are sorted (stably, with
// their positions in `order`), so each id's gradient rows form one run of sorted positions. A run can be
// long (a padding id fills half a batch): one block summing it alone would serialise the step. So the sum
// takes two passes, each in a fixed order:
//   1. the sorted positions are cut into chunks of EMB_CHUNK; one block per chunk sums, for each run piece
//      inside its chunk, that piece's rows in order, into the parts row of the piece's first position;
//   2. one block per run (the block of its first position; the others return at once) adds the run's
//      pieces in order: its first position's part, then the part at each chunk start inside the run.
// A run of length L costs EMB_CHUNK row reads per block in pass 1 and L / EMB_CHUNK in pass 2.
#define EMB_CHUNK {EMB_CHUNK}

extern "C" __global__ void embedding_backward_chunks(const long long* sorted_ids, const long long* order,
                                                     const T* gy, long long n, int dim, double* parts) {
    long long first = (long long)blockIdx.x * EMB_CHUNK;
    long long last = min(first + EMB_CHUNK, n);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        double s = 0.0;
        long long piece = first;
        for (long long k = first; k < last; k++) {
            s += gy[order[k] * dim + j];
            if (k + 1 == last || sorted_ids[k + 1] != sorted_ids[k]) {  // the piece ends at k
                parts[piece * dim + j] = s;
                s = 0.0;
                piece = k + 1;
            }
        }
    }
}

extern "C" __global__ void embedding_backward_runs(const long long* sorted_ids, const double* parts, long long n,
                                                   int dim, T* gw) {
    long long i = blockIdx.x;
    long long id = sorted_ids[i];
    if (i > 0 && sorted_ids[i - 1] == id) return;  // not the first position of its run
    long long next_chunk = (i / EMB_CHUNK + 1) * EMB_CHUNK;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        double s = parts[i * dim + j];
        for (long long k = next_chunk; k < n && sorted_ids[k] == id; k += EMB_CHUNK) s += parts[k * dim + j];
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

// ---- elementwise: one thread per element, striding over the grid (flat, contiguous arrays) ----

#define FOR_EACH(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)

// y = x s with s = sigmoid(2u) = 0.5 (1 + tanh u), u = c (x + a x^3): no cancellation of 1 + tanh u at negative x
extern "C" __global__ void gelu_forward(const T* x, long long n, T c, T a, T* y) {
    FOR_EACH(i, n) {
        T v = x[i];
        y[i] = v / ((T)1 + exp((T)-2 * c * (v + a * v * v * v)));
    }
}

// d/dx = s + 2 x s (1 - s) c (1 + 3 a x^2). Below x ~ -10 (float32) e = exp(-2u) overflows to inf and s is 0:
// written with e (2 x e s^2) that is inf * 0 = NaN. So 1 - s is taken directly where s < 1/2 (no cancellation
// there, and e may be inf) and as e s elsewhere (exact), as the Numba kernel does.
extern "C" __global__ void gelu_backward(const T* x, const T* gy, long long n, T c, T a, T* gx) {
    FOR_EACH(i, n) {
        T v = x[i];
        T e = exp((T)-2 * c * (v + a * v * v * v));
        T s = (T)1 / ((T)1 + e);
        T one_minus_s = e > (T)1 ? (T)1 - s : e * s;
        gx[i] = gy[i] * (s + s * one_minus_s * ((T)2 * v * c * ((T)1 + (T)3 * a * v * v)));
    }
}

// The exact GELU (BERT's): y = x Phi(x), Phi(x) = 0.5 erfc(-x / sqrt 2), in double as the Numba kernel and the
// NumPy reference (erfc keeps the tiny tail at negative x that 1 + erf would cancel); rounded to T.
extern "C" __global__ void gelu_erf_forward(const T* x, long long n, T* y) {
    FOR_EACH(i, n) {
        double v = (double)x[i];
        y[i] = (T)(v * 0.5 * erfc(-v * 0.7071067811865476));
    }
}

// d/dx [x Phi(x)] = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density
extern "C" __global__ void gelu_erf_backward(const T* x, const T* gy, long long n, T* gx) {
    FOR_EACH(i, n) {
        double v = (double)x[i];
        double cdf = 0.5 * erfc(-v * 0.7071067811865476);
        double pdf = exp(-0.5 * v * v) * 0.3989422804014327;
        gx[i] = (T)((double)gy[i] * (cdf + v * pdf));
    }
}

// In place on p, m and v; torch.optim.AdamW's order of operations.
extern "C" __global__ void adamw_update(T* p, const T* g, T* m, T* v, long long n, T decay, T beta1_c, T beta2,
                                        T beta2_c, T bc2_sqrt, T eps, T neg_step_size) {
    FOR_EACH(i, n) {
        T gi = g[i];
        T m_new = m[i] + beta1_c * (gi - m[i]);
        T v_new = v[i] * beta2 + beta2_c * gi * gi;
        m[i] = m_new;
        v[i] = v_new;
        p[i] = p[i] * decay + neg_step_size * (m_new / (sqrt(v_new) / bc2_sqrt + eps));
    }
}
"""


def source(dtype: np.dtype | type) -> str:
    """The CUDA C that is compiled for arrays of ``dtype``: every kernel here, exactly as CuPy receives it
    (tests/test_cuda_sources.py compiles this same text with NVRTC, without a GPU)."""
    return SOURCE.replace("{T}", C_TYPES[np.dtype(dtype)]).replace("{EMB_CHUNK}", str(EMB_CHUNK))
