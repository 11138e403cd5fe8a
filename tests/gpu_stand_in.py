"""A CPU stand-in for GPU arrays, for tests of what the GPU path does that a CPU can check.

On a GPU every value copied back to the host (``float(x)``, ``int(x)``, ``bool(x)``, ``operator.index(x)``,
``.item()``, ``.tolist()``, ``.get()``, ``cupy.asnumpy``, ``np.asarray``/``np.array`` of it, formatting it,
boolean-mask indexing) waits for all the work queued before it. As on CuPy, an element (``x[i]``, iterating,
``x.argmax()``) stays a 0-d device array, so reading it later counts too. ``HostCopies`` is a
NumPy array that counts those copies and multiplies matrices as CuPy 14 does; ``DeviceNamespace`` is NumPy
returning such arrays: handed to code in place of CuPy, they count the copies it would make on a GPU.
``use_stand_in`` also counts NumPy's own conversions (``np.asarray(x)``, ``np.array(x)``, ...), which view an
array subclass without asking it (CuPy refuses them: on a GPU they are a bug either way).
``ModelCublas`` is cuBLAS's strided-batched GEMM by its definition (column-major), on host memory.
"""

from __future__ import annotations

import ctypes
import types

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import backend


class HostCopies(np.ndarray):
    """A NumPy array standing in for a GPU array: ``HostCopies.count`` counts conversions to Python values.

    Its matrix products follow CuPy 14's ``matmul``: one of more than 2 dimensions in a dtype whose char is not
    in 'efdFD' (bfloat16 is 'E') raises as CuPy's integer path does; the others are listed in
    ``HostCopies.products`` by their operands' dimensions and dtype."""

    count = 0
    products: list = []

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc is np.matmul:
            ndim, dtype = max(np.ndim(x) for x in inputs), np.result_type(*inputs)
            if ndim > 2 and dtype.char not in "efdFD":
                raise TypeError(f"data type '{dtype.char}' not understood")  # numpy.dtype('E'), in CuPy
            HostCopies.products.append((ndim, dtype))
        inputs = [_plain(x) for x in inputs]
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return out[0] if out is not None and len(out) == 1 else _device(result)

    def _copy(self):
        HostCopies.count += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._copy())

    def __int__(self):
        return int(self._copy())

    def __index__(self):  # range(x), x as a slice bound or a list index
        return self._copy().__index__()

    def __format__(self, spec):  # f"{loss:.3f}"
        return format(self._copy()[()] if self.ndim == 0 else self._copy(), spec)

    def __str__(self):
        return str(self._copy())

    def __bool__(self):
        return bool(self._copy())

    def item(self, *args):
        return self._copy().item(*args)

    def tolist(self):
        return self._copy().tolist()

    def __getitem__(self, key):  # x[mask]: CuPy copies the mask's count to the host to size the result
        if _has_boolean_mask(key):
            HostCopies.count += 1
        return _device(super().__getitem__(key))  # an element: a 0-d array, as CuPy's (NumPy: a scalar)

    def __iter__(self):  # (NumPy's iterator would give NumPy scalars)
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    def argmax(self, *args, **kwargs):
        return _device(super().argmax(*args, **kwargs))

    def argmin(self, *args, **kwargs):
        return _device(super().argmin(*args, **kwargs))

    def __setitem__(self, key, value):
        if _has_boolean_mask(key):
            HostCopies.count += 1
        super().__setitem__(key, value)

    def get(self):  # cupy.ndarray.get(): the array on the host
        return self._copy()

    def __array__(self, dtype=None, copy=None):  # (NumPy itself views an ndarray subclass without calling it)
        return self._copy() if dtype is None else self._copy().astype(dtype)


def _has_boolean_mask(key) -> bool:
    return any(isinstance(k, np.ndarray) and k.dtype == bool for k in (key if isinstance(key, tuple) else (key,)))


# NumPy's own conversions, for the stand-in itself (use_stand_in counts the others' calls)
_asarray, _array = np.asarray, np.array
_ascontiguousarray, _asfortranarray = np.ascontiguousarray, np.asfortranarray


def _counting(convert):
    """np.asarray/np.array/np.ascontiguousarray/np.asfortranarray counting a copy per stand-in array among their
    input (NumPy views an ndarray subclass without calling its ``__array__``; CuPy refuses to convert implicitly,
    so on a GPU this is a copy or an error)."""

    def converted(obj, *args, **kwargs):
        result = convert(obj, *args, **kwargs)
        if not isinstance(result, HostCopies):  # (np.array(x, subok=True), as NumPy's own functions call it: no copy)
            HostCopies.count += sum(
                isinstance(x, HostCopies) for x in (obj if isinstance(obj, (list, tuple)) else [obj])
            )
        return result

    return converted


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, HostCopies) else x


def _device(x):
    return _asarray(x).view(HostCopies) if isinstance(x, (np.ndarray, np.generic)) else x


class DeviceNamespace:
    """numpy (or one of its submodules), with every function returning HostCopies arrays."""

    def __init__(self, module=np):
        self._module = module

    def asnumpy(self, array):  # CuPy's copy to the host
        return array._copy() if isinstance(array, HostCopies) else _asarray(array)

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return DeviceNamespace(attr)
        if isinstance(attr, np.ufunc):  # (its methods, such as add.at, kept): HostCopies.__array_ufunc__ runs it
            return attr
        if callable(attr) and not isinstance(attr, type):
            return lambda *args, **kwargs: _device(attr(*[_plain(a) for a in args], **kwargs))
        return attr


def on_device(array):
    """A Tensor whose array is the stand-in for a GPU array (Tensor() itself would make a NumPy array)."""
    t = tl.Tensor._from_op(_asarray(array, np.float32).view(HostCopies), None)
    t.requires_grad = True
    return t


def use_stand_in(monkeypatch) -> ModelCublas:
    """Hand the stand-in to the library as its GPU: HostCopies arrays get DeviceNamespace as their array module
    (NumPy arrays stay NumPy's), live on the "cpu" device (no transfers), and the batched products run on a
    model of cuBLAS, returned. np.asarray/np.array of a stand-in array count as copies. Counts start at 0."""
    from tinygrad_llm.runtime import batched_gemm

    HostCopies.count, HostCopies.products = 0, []
    cublas = ModelCublas()
    device = DeviceNamespace()  # one, as CuPy is one module: code may compare array modules with `is`
    monkeypatch.setattr(backend, "get_array_module", lambda array: device if isinstance(array, HostCopies) else np)
    monkeypatch.setattr(backend, "device_of", lambda array: "cpu")
    monkeypatch.setattr(np, "asarray", _counting(_asarray))
    monkeypatch.setattr(np, "array", _counting(_array))
    monkeypatch.setattr(np, "ascontiguousarray", _counting(_ascontiguousarray))
    monkeypatch.setattr(np, "asfortranarray", _counting(_asfortranarray))
    monkeypatch.setattr(batched_gemm, "cuda_libraries", lambda: (cublas, 0, False, address))
    return cublas


def address(array) -> int:
    """The stand-in's "device pointer": where its first element is in host memory."""
    return array.__array_interface__["data"][0]


def _column_major(pointer: int, dtype, rows: int, columns: int, ld: int) -> np.ndarray:
    """The (rows, columns) column-major matrix at ``pointer`` with leading dimension ``ld``, writable in place."""
    dtype = np.dtype(dtype)
    count = (columns - 1) * ld + rows
    buffer = (ctypes.c_byte * (count * dtype.itemsize)).from_address(pointer)
    flat = np.frombuffer(buffer, dtype=dtype, count=count)
    return np.lib.stride_tricks.as_strided(flat, (rows, columns), (dtype.itemsize, ld * dtype.itemsize))


class ModelCublas:
    """``cublasGemmStridedBatchedEx`` as cuBLAS defines it, on host memory: for i < batchCount,
    C_i = alpha op(A_i) op(B_i) + beta C_i, every matrix column-major, X_i at X + i * strideX elements, op(X) = X
    or X^T (CUBLAS_OP_N = 0, CUBLAS_OP_T = 1), the sums in the compute type. Its calls are listed in ``calls``."""

    COMPUTE = {68: np.float32, 77: np.float32, 70: np.float64}  # 32F, 32F_FAST_TF32, 64F
    INPUTS = {68: (0, 2, 14), 77: (0,), 70: (1,)}  # the data types each compute type takes here

    def __init__(self):
        self.calls = []
        self.dtypes = {0: np.dtype(np.float32), 1: np.dtype(np.float64), 2: np.dtype(np.float16)}
        self.dtypes[14] = backend.low_precision_dtype("bf16")

    def gemmStridedBatchedEx(  # noqa: N802 (cuBLAS's name, as CuPy spells it)
        self,
        handle,
        transa,
        transb,
        m,
        n,
        k,
        alpha,
        A,
        Atype,
        lda,
        strideA,
        B,
        Btype,
        ldb,
        strideB,  # noqa: N803
        beta,
        C,
        Ctype,
        ldc,
        strideC,
        count,
        compute,
        algo,  # noqa: N803
    ):
        self.calls.append({"types": (Atype, Btype, Ctype), "compute": compute, "count": count, "ops": (transa, transb)})
        assert Atype == Btype == Ctype and Atype in self.INPUTS[compute], (Atype, Btype, Ctype, compute)
        acc = self.COMPUTE[compute]
        alpha, beta = (_column_major(x, acc, 1, 1, 1)[0, 0] for x in (alpha, beta))
        a_shape = (m, k) if transa == 0 else (k, m)
        b_shape = (k, n) if transb == 0 else (n, k)
        assert lda >= max(1, a_shape[0]) and ldb >= max(1, b_shape[0]) and ldc >= max(1, m), (lda, ldb, ldc)
        dtype = self.dtypes[Atype]
        for i in range(count):
            a = _column_major(A + i * strideA * dtype.itemsize, dtype, *a_shape, lda).astype(acc)
            b = _column_major(B + i * strideB * dtype.itemsize, dtype, *b_shape, ldb).astype(acc)
            c = _column_major(C + i * strideC * dtype.itemsize, dtype, m, n, ldc)
            result = alpha * ((a if transa == 0 else a.T) @ (b if transb == 0 else b.T))
            if beta != 0:  # beta = 0: C is not read (it may hold anything)
                result += beta * c.astype(acc)
            c[...] = result.astype(dtype)
