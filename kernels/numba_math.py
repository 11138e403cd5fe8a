"""Row helpers shared by the Numba kernels: a vectorisable exp and tanh, and how rows are split into blocks.

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
import types as pytypes

import numpy as np
from numba import njit, types
from numba.extending import overload

from tinygrad_llm import threads

# Below this many elements a kernel runs serially: waking Numba's thread pool costs 10-50 us on a quiet
# machine and milliseconds on a busy one, more than the work itself (e.g. layer norm of a (768, 128) batch).
PARALLEL_MIN_ELEMENTS = 1 << 17

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


def exp_row(x, shift, scale, out, bits):
    """out[j] = exp((x[j] - shift) * scale) for 1-D arrays x and out of one length; returns sum(out).

    bits is an int32 scratch row at least as long. x and out must be different arrays: if they overlap,
    LLVM's runtime check falls back to its slow scalar loop. Only callable from Numba code."""
    raise NotImplementedError("exp_row is a Numba helper")


def tanh_row(u, out, bits):
    """out[j] = tanh(u[j]); same conventions as exp_row."""
    raise NotImplementedError("tanh_row is a Numba helper")


@overload(exp_row, jit_options={"fastmath": FAST})
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


@overload(tanh_row, jit_options={"fastmath": FAST})
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


@njit(fastmath={"nnan", "nsz", "reassoc"}, cache=True)
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
    """How many blocks to split ``rows`` into for prange: a few per thread, for balance (called from
    Python: reading the thread count inside a kernel would stop Numba from caching it). The count is the
    thread policy's, not ``numba.get_num_threads()``, which costs ~0.3 ms a call on a busy machine."""
    return max(1, min(rows, 4 * threads.kernel_threads()))


class SizedKernel:
    """A ``prange`` kernel compiled twice: in parallel for large arrays, serially for small ones.

    ``kernel.for_size(n)(*args)`` runs the parallel version when the call touches at least
    ``PARALLEL_MIN_ELEMENTS`` elements. The serial copy is a clone of the function under another qualified
    name, because Numba's on-disk cache keys a function by name and signature, not by ``parallel=``.
    """

    def __init__(self, fn, options: dict):
        serial_fn = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                         fn.__closure__)
        serial_fn.__qualname__ = fn.__qualname__ + "_serial"
        serial_fn.__doc__ = fn.__doc__
        # nogil: another thread's Python runs meanwhile. error_model="numpy": x / 0 is inf or NaN as in NumPy,
        # not a Python ZeroDivisionError; that check was a branch in every loop with a division, which kept LLVM
        # from vectorising it (AdamW: 3.0 -> 0.6 ns an element, the same bits).
        options = {"nogil": True, "error_model": "numpy", **options}
        self.parallel = njit(parallel=True, **options)(fn)
        self.serial = njit(**options)(serial_fn)
        self.__doc__ = fn.__doc__

    def for_size(self, n_elements: int):
        if n_elements >= PARALLEL_MIN_ELEMENTS and threads.kernel_threads() > 1:
            return self.parallel
        return self.serial


def parallel_kernel(**options):
    """Decorator: ``@parallel_kernel(fastmath=FAST, cache=True)`` in place of ``@njit(parallel=True, ...)``."""
    return lambda fn: SizedKernel(fn, options)
