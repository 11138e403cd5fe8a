"""Which implementation of an operation runs: a compiled kernel (Numba on the CPU, CuPy on CUDA) or the reference.

The kernels live in this folder, ``kernels/``, imported as ``tinygrad_llm.kernels`` (``tinygrad_llm/kernels`` links
here; the folder has no ``__init__.py`` so that it never shadows another project's top-level ``kernels``).

Each kernel is a faster implementation of a ``forward``/``backward`` pair in ``tinygrad_llm.functional``,
which is the only module that calls into here, always in the same shape::

    k = dispatch.for_arrays(x)    # the kernels for x's device and dtype, or None
    y = k.softmax_forward(x) if k else None    # kernels/numba_softmax.py, or kernels/cuda.py for CuPy arrays
    if y is None:                # no kernel here, kernels switched off, or this one failed to compile
        y = ...                  # the NumPy reference, written out in place

``k.softmax_forward`` is the function of that name in the Numba modules (``numba_softmax.py``,
``numba_layers.py``) or in ``cuda.py``: the same name and arguments in each, documented there.

Which implementation runs:

- ``TINYGRAD_LLM_KERNELS=numpy`` (read at every call) forces the NumPy reference everywhere;
  ``dispatch.use("numpy")`` does the same inside a ``with`` block, ``dispatch.set_mode(...)`` for good.
- otherwise NumPy arrays go to the Numba kernels and CuPy arrays to the CuPy kernels, for float32 and
  float64 arrays (all of one dtype); anything else takes the reference.
- if Numba is missing or a kernel fails to compile, one ``RuntimeWarning`` says so and that backend's
  kernels are switched off for the rest of the process: the call returns None and the reference keeps
  running. On a GPU the same holds for the errors that leave the GPU usable and mean "this kernel cannot run
  here" (``CUDA_FALLBACK_ERRORS``: it does not compile or load, or its launch asks for more resources than
  the GPU has); every other CUDA error (an illegal address, a failed launch: the context is lost) is raised.
- ``calls`` counts the kernel calls that ran (by backend and name): tests assert that a kernel, not the
  reference, produced what they checked.

Kernels (each a plain function on raw arrays): softmax_forward, softmax_backward (plain and causal, with a
scale), layer_norm_forward/backward, gelu_forward/backward, cross_entropy_forward/backward,
embedding_backward, adamw_update_.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import warnings

import numpy as np

ENV = "TINYGRAD_LLM_KERNELS"
MODES = ("auto", "numpy")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_mode_override: str | None = None  # set by set_mode()/use(); wins over the environment
_modules: dict[str, list | None] = {}  # backend ("numba"/"cuda") -> loaded kernel modules, None when off
_NUMBA_MODULES = ("tinygrad_llm.kernels.numba_softmax", "tinygrad_llm.kernels.numba_layers")
_CUDA_MODULES = ("tinygrad_llm.kernels.cuda",)

# The CUDA errors after which a kernel is given up and the reference runs: the kernel cannot be built for or
# launched on this GPU, and the context is still good. Each code is the driver API's (CUresult) and the
# runtime API's (cudaError_t) alike; CuPy raises CUDADriverError or CUDARuntimeError with it as ``status``.
CUDA_FALLBACK_ERRORS = {
    200: "CUDA_ERROR_INVALID_IMAGE / cudaErrorInvalidKernelImage",  # the compiled module cannot be loaded
    209: "CUDA_ERROR_NO_BINARY_FOR_GPU / cudaErrorNoKernelImageForDevice",  # no code for this architecture
    218: "CUDA_ERROR_INVALID_PTX / cudaErrorInvalidPtx",  # the driver's JIT rejects the PTX
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION / cudaErrorUnsupportedPtxVersion",  # PTX newer than the driver
    701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES / cudaErrorLaunchOutOfResources",  # too many registers per block
}

calls: collections.Counter = collections.Counter()  # (backend, kernel name) -> calls that ran the kernel


def mode() -> str:
    """'numpy' (reference only) or 'auto' (kernels where available), from set_mode/use or the environment."""
    if _mode_override is not None:
        return _mode_override
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {MODES}")
    return value


def set_mode(value: str | None) -> None:
    """Choose 'numpy' or 'auto' for this process; None goes back to reading TINYGRAD_LLM_KERNELS."""
    global _mode_override
    if value is not None and value not in MODES:
        raise ValueError(f"dispatch.set_mode: expected one of {MODES} or None, got {value!r}")
    _mode_override = value


@contextlib.contextmanager
def use(value: str):
    """``with dispatch.use("numpy"):`` runs the NumPy reference inside the block (tests, debugging)."""
    global _mode_override
    if value not in MODES:
        raise ValueError(f"dispatch.use: expected one of {MODES}, got {value!r}")
    previous, _mode_override = _mode_override, value
    try:
        yield
    finally:
        _mode_override = previous


def backend_for(array) -> str:
    """'numba' for NumPy arrays, 'cuda' for CuPy arrays."""
    return "cuda" if type(array).__module__.startswith("cupy") else "numba"


def available(backend: str = "numba") -> bool:
    """True when that backend's kernels are importable and have not been switched off by a failure."""
    return _load(backend) is not None


def active(array) -> str:
    """The implementation a call on ``array`` would use now: 'numba', 'cuda' or 'numpy'."""
    if mode() == "numpy" or getattr(array, "dtype", None) not in FLOAT_DTYPES:
        return "numpy"
    backend = backend_for(array)
    return backend if available(backend) else "numpy"


class Kernels:
    """One backend's kernels, by name: ``k.softmax_forward(x)`` calls that function of the backend's modules.

    A call that fails to compile (or, on a GPU, fails with one of ``CUDA_FALLBACK_ERRORS``) switches the
    backend off (one warning) and returns None, so the caller runs its reference instead; any other error
    propagates."""

    def __init__(self, backend: str, modules: list):
        self.backend, self.modules = backend, modules

    def __getattr__(self, name: str):
        fn = next((getattr(m, name) for m in self.modules if hasattr(m, name)), None)
        if fn is None:
            raise AttributeError(f"tinygrad_llm.kernels: no {self.backend} kernel named {name!r}")
        backend = self.backend

        def guarded(*args, **kwargs):
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not falls_back(backend, exc):
                    raise
                _disable(backend, f"kernel {name!r} failed to compile or launch ({_describe(exc)})")
                return None
            if result is not None:
                calls[backend, name] += 1
            return result

        return guarded


def for_arrays(*arrays) -> Kernels | None:
    """The kernels for these arrays (Numba for NumPy, CuPy's for CuPy), or None when the reference must run:
    kernels switched off, a dtype other than float32/float64, arrays of mixed dtypes, or a backend missing."""
    if mode() == "numpy":
        return None
    floats = [a for a in arrays if a is not None and getattr(a, "dtype", None) is not None and a.dtype.kind == "f"]
    if not floats or floats[0].dtype not in FLOAT_DTYPES or any(a.dtype != floats[0].dtype for a in floats):
        return None
    backend = backend_for(floats[0])
    modules = _load(backend)
    return None if modules is None else Kernels(backend, modules)


def _load(backend: str):
    if backend not in _modules:
        names = _NUMBA_MODULES if backend == "numba" else _CUDA_MODULES
        try:
            _modules[backend] = [importlib.import_module(n) for n in names]
        except Exception as exc:  # ImportError (numba/cupy missing), or a compile error at import
            _modules[backend] = None
            _warn(backend, f"cannot be loaded ({_describe(exc)})")
    return _modules[backend]


def falls_back(backend: str, exc: BaseException) -> bool:
    """Whether ``exc``, raised by a ``backend`` kernel, means "this kernel cannot run here" (switch the kernels
    off, run the reference) rather than a failure to report: a compile error, or on CUDA one of
    ``CUDA_FALLBACK_ERRORS``."""
    compile_errors, cuda_api_errors = _error_classes(backend)
    if isinstance(exc, compile_errors):
        return True
    return isinstance(exc, cuda_api_errors) and getattr(exc, "status", None) in CUDA_FALLBACK_ERRORS


def _error_classes(backend: str) -> tuple[tuple, tuple]:
    """(compile error classes, CUDA API error classes carrying a ``status`` code) for a backend."""
    compile_errors: list = []
    api_errors: list = []
    if backend == "numba":
        with contextlib.suppress(ImportError):
            from numba.core.errors import NumbaError

            compile_errors.append(NumbaError)
    else:
        with contextlib.suppress(ImportError):
            from cupy.cuda.compiler import CompileException
            from cupy_backends.cuda.libs.nvrtc import NVRTCError  # NVRTC itself failed (its library, its options)

            compile_errors += [CompileException, NVRTCError]
        with contextlib.suppress(ImportError):
            from cupy_backends.cuda.api.driver import CUDADriverError
            from cupy_backends.cuda.api.runtime import CUDARuntimeError

            api_errors += [CUDADriverError, CUDARuntimeError]
    return tuple(compile_errors), tuple(api_errors)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    name = f" {CUDA_FALLBACK_ERRORS[status]}" if status in CUDA_FALLBACK_ERRORS else ""
    return f"{type(exc).__name__}{name}: {_first_line(exc)}"


def _disable(backend: str, why: str) -> None:
    _modules[backend] = None
    _warn(backend, why)


def _warn(backend: str, why: str) -> None:
    label = "Numba" if backend == "numba" else "CuPy"
    warnings.warn(
        f"tinygrad_llm.kernels: {label} kernels {why}; using the NumPy reference implementation",
        RuntimeWarning,
        stacklevel=4,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _reset() -> None:
    """Forget loaded or failed backends (tests use it to simulate a failure and recover)."""
    _modules.clear()
