"""Row helpers shared by the Numba kernels: a vectorisable exp and tanh, blocks of rows, the ``kernel`` decorator.

Without Intel's SVML, LLVM calls the C library's ``expf`` once per element and cannot vectorise a loop
around it; that alone makes a Numba softmax slower than NumPy's SIMD ``exp``. So for float32 we compute
``exp`` ourselves, in two loops LLVM does vectorise:

    exp(t) = 2^k * exp(f),  k = round(t / ln 2),  f = t - k ln 2 in [-ln2/2, ln2/2]
    exp(f) ~ Cephes' degree-7 polynomial (about 1 ulp in float32)
    2^k    = the float whose exponent bits are k + 127 (written as int32 into a scratch row, read as float32)

Arguments below -87.3 (where float32's exp underflows) give exactly 0, so -inf gives 0 as in NumPy.
float64 (used for gradient checks, where accuracy matters and speed does not) calls ``math.exp``.
``overload`` picks the variant by dtype at compile time.

Caching: the kernels are compiled with ``cache=True`` into ``kernels/__pycache__``. Numba invalidates a
cached kernel when its own file changes, not when a helper here does: after editing this file, delete
``kernels/__pycache__`` (or set NUMBA_CACHE_DIR elsewhere) so the kernels that inline these helpers rebuild.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

# The blocks of rows a kernel walks (n_blocks): 4, as when the blocks were spread over threads (4 per thread,
# one thread). Changing it changes the last bits of layer norm's weight gradient, so of every run.
BLOCKS = 4

# fastmath without 'nnan'/'ninf': -inf (masked scores) and inf must keep their meaning.
FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}

LOG2E = np.float32(1.4426950408889634)
LN2_HI = np.float32(0.693359375)  # ln 2 split in two (Cephes) so k * LN2_HI is exact
LN2_LO = np.float32(-2.12194440e-4)
EXP_MIN = np.float32(-87.3)  # below: 2^k would leave float32's normal range; the result is 0
EXP_MAX = np.float32(88.7)  # above: clamp (exp(88.7) ~ 3.3e38, still finite)
P0, P1, P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
P3, P4, P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
ZERO, ONE, HALF, TWO = np.float32(0.0), np.float32(1.0), np.float32(0.5), np.float32(2.0)

# The helpers below are inlined into every kernel that calls them (forceinline: LLVM's alwaysinline), never
# called. A called helper is a weak (linkonce_odr) symbol, and Numba's JIT binds a weak symbol to the first
# copy loaded into the process: the helper's own library when this process compiled it, else the copy inside
# whichever cached kernel loaded first. The copies are the same IR optimised in different modules, and under
# 'reassoc' they may sum in different orders: exp_row's total combined its four vector accumulators as
# ((a0 + a1) + a2) + a3 in one copy and (a0 + a1) + (a2 + a3) in the other, so softmax's last bit depended
# on the process history (compiled vs loaded from the cache). Inlined, a kernel's object code is all it runs.
HELPER = {"fastmath": FAST, "forceinline": True}


def exp_row(x, shift, scale, out, bits):
    """out[j] = exp((x[j] - shift) * scale) for 1-D arrays x and out of one length; returns sum(out).

    bits is an int32 scratch row at least as long. x and out must be different arrays: if they overlap,
    LLVM's runtime check falls back to its slow scalar loop. Only callable from Numba code."""
    raise NotImplementedError("exp_row is a Numba helper")


def tanh_row(u, out, bits):
    """out[j] = tanh(u[j]); same conventions as exp_row."""
    raise NotImplementedError("tanh_row is a Numba helper")


@overload(exp_row, jit_options=HELPER)
def _exp_row_overload(x, shift, scale, out, bits):
    if x.dtype == types.float32:

        def exp_row_f32(x, shift, scale, out, bits):
            n = x.shape[0]
            for j in range(n):
                tj = (x[j] - shift) * scale
                v = min(max(tj, EXP_MIN), EXP_MAX)
                k = np.floor(v * LOG2E + HALF)
                f = v - k * LN2_HI - k * LN2_LO
                p = ((((P0 * f + P1) * f + P2) * f + P3) * f + P4) * f + P5
                out[j] = p * f * f + f + ONE
                # exponent bits of 2^k; 0 (the float +0.0) where exp underflows
                bits[j] = ((np.int32(k) + np.int32(127)) << np.int32(23)) if tj >= EXP_MIN else np.int32(0)
            two_k = bits[:n].view(np.float32)
            total = ZERO
            for j in range(n):
                e = out[j] * two_k[j]
                out[j] = e
                total += e
            return total

        return exp_row_f32

    def exp_row_f64(x, shift, scale, out, bits):
        total = 0.0
        for j in range(x.shape[0]):
            e = math.exp((x[j] - shift) * scale)
            out[j] = e
            total += e
        return total

    return exp_row_f64


@overload(tanh_row, jit_options=HELPER)
def _tanh_row_overload(u, out, bits):
    if u.dtype == types.float32:

        def tanh_row_f32(u, out, bits):
            # tanh(u) = 1 - 2 / (exp(2u) + 1): exp overflowing to a large value gives 1, underflowing gives -1
            n = u.shape[0]
            exp_row(u, ZERO, TWO, out, bits)
            for j in range(n):
                out[j] = ONE - TWO / (out[j] + ONE)

        return tanh_row_f32

    def tanh_row_f64(u, out, bits):
        for j in range(u.shape[0]):
            out[j] = math.tanh(u[j])

    return tanh_row_f64


@njit(fastmath={"nnan", "nsz", "reassoc"}, forceinline=True, cache=True)
def row_max(xr, n):
    """max(xr[:n]) for n >= 1 (NaN inputs give NaN outputs downstream anyway; -inf is kept).

    Four running maxima: one would be a chain of dependent compares (latency-bound, 3x slower)."""
    m0 = m1 = m2 = m3 = xr[0]
    body = n - n % 4
    for j in range(0, body, 4):
        a, b, c, d = xr[j], xr[j + 1], xr[j + 2], xr[j + 3]
        m0 = a if a > m0 else m0
        m1 = b if b > m1 else m1
        m2 = c if c > m2 else m2
        m3 = d if d > m3 else m3
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m0 = m2 if m2 > m0 else m0
    for j in range(body, n):
        m0 = xr[j] if xr[j] > m0 else m0
    return m0


def n_blocks(rows: int) -> int:
    """How many blocks of rows a kernel walks: ``BLOCKS`` (fewer for fewer rows). The blocks run one after the
    other on the calling thread; they stay because layer norm's weight and bias gradients are summed per block
    and then across blocks, so the block count fixes the order of those sums (and so the bits of a run)."""
    return max(1, min(rows, BLOCKS))


def kernel(**options):
    """Decorator: ``@kernel(fastmath=FAST, cache=True)`` compiles ``fn`` once, serial, releasing the GIL.

    Serial because the thread policy gives the kernels one thread (``runtime/threads.py``: a pool of Numba's
    own spins against BLAS's between the products), and the batch parts run kernels on several threads at
    once already. nogil: another thread's Python runs meanwhile. error_model="numpy": x / 0 is inf or NaN as
    in NumPy, not a Python ZeroDivisionError; that check was a branch in every loop with a division, which
    kept LLVM from vectorising it (AdamW: 3.0 -> 0.6 ns an element, the same bits)."""
    return njit(nogil=True, error_model="numpy", **options)
