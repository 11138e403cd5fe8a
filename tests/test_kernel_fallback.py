"""When a CUDA kernel fails: the reference takes over only where the kernel cannot run here and the GPU is
still good (it does not compile or load, or its launch asks for more than the GPU has); any other error (an
illegal address, a failed launch: the CUDA context is lost) is raised, never hidden behind the slow path.

Run on the CPU: NumPy arrays play the GPU's, a stand-in module the CuPy kernels, and stand-in error classes
CuPy's (which need CUDA's libraries to build). Where CuPy is installed, its real classes are checked too.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch


class StandInCompileError(Exception):
    """Plays cupy.cuda.compiler.CompileException."""


class StandInCUDAError(RuntimeError):
    """Plays CUDADriverError/CUDARuntimeError: a CUDA status code in ``status``."""

    def __init__(self, status: int):
        super().__init__(f"CUDA status {status}")
        self.status = status


NOT_FALLBACK = {
    700: "illegal address",  # sticky: the context is unusable
    719: "launch failure",  # sticky
    716: "misaligned address",  # sticky
    2: "out of memory",  # the reference would need the memory too
    1: "invalid value",  # a wrong argument: a bug to report
}


@pytest.fixture
def fake_cuda(monkeypatch):
    """CuPy kernels that raise what the test gives them, on NumPy arrays; returns a setter."""
    raising = {}

    def failing(*args, **kwargs):
        raise raising["error"]

    module = types.SimpleNamespace(softmax_forward=failing, gelu_forward=failing)
    dispatch._reset()
    monkeypatch.setattr(dispatch, "backend_for", lambda array: "cuda")
    monkeypatch.setitem(dispatch._modules, "cuda", [module])
    monkeypatch.setattr(dispatch, "_error_classes", lambda backend: ((StandInCompileError,), (StandInCUDAError,)))
    yield lambda error: raising.update(error=error)
    dispatch._reset()


def _x():
    return np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)


@pytest.mark.parametrize(
    "error",
    [StandInCompileError("error: identifier 'undefined_name' is undefined")]
    + [StandInCUDAError(code) for code in sorted(dispatch.CUDA_FALLBACK_ERRORS)],
    ids=lambda e: type(e).__name__ + str(getattr(e, "status", "")),
)
def test_a_kernel_that_cannot_run_here_falls_back_with_one_warning(fake_cuda, error):
    fake_cuda(error)
    x = _x()
    with dispatch.use("numpy"):
        want = F.softmax(tl.Tensor(x)).data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = F.softmax(tl.Tensor(x)).data  # fails: warn, switch the CUDA kernels off, run the reference
        F.gelu(tl.Tensor(x))  # no second warning, no second try
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "failed to compile or launch" in messages[0], messages
    if isinstance(error, StandInCUDAError):  # the warning names the CUDA error
        assert dispatch.CUDA_FALLBACK_ERRORS[error.status] in messages[0]
    np.testing.assert_array_equal(got, want)
    assert not dispatch.available("cuda")


@pytest.mark.parametrize("status", sorted(NOT_FALLBACK), ids=lambda s: f"{s}-{NOT_FALLBACK[s]}")
def test_any_other_cuda_error_is_raised_and_the_kernels_stay_on(fake_cuda, status):
    fake_cuda(StandInCUDAError(status))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning either
        with pytest.raises(StandInCUDAError) as raised:
            F.softmax(tl.Tensor(_x()))
    assert raised.value.status == status
    assert dispatch.available("cuda")  # not switched off: a later call fails loudly again


def test_a_bug_in_a_kernel_wrapper_is_raised(fake_cuda):
    fake_cuda(IndexError("index 9 is out of bounds"))
    with pytest.raises(IndexError, match="out of bounds"):
        F.softmax(tl.Tensor(_x()))
    assert dispatch.available("cuda")


def test_calls_count_the_kernels_that_ran():
    """dispatch.calls grows by one per kernel call that returned a result, and not for a reference run."""
    x = _x()
    before = dict(dispatch.calls)
    F.softmax(tl.Tensor(x))
    assert dispatch.calls["numba", "softmax_forward"] == before.get(("numba", "softmax_forward"), 0) + 1
    with dispatch.use("numpy"):
        F.softmax(tl.Tensor(x))
    assert dispatch.calls["numba", "softmax_forward"] == before.get(("numba", "softmax_forward"), 0) + 1


def test_the_fallback_codes_are_cudas_own():
    """Each code in CUDA_FALLBACK_ERRORS is the CUDA error it names (CuPy's runtime error class asks CUDA's
    runtime library for the name), and the real classes are classified as the stand-ins are."""
    runtime = pytest.importorskip("cupy_backends.cuda.api.runtime", reason="needs CuPy (its CUDA error classes)")
    for code, names in dispatch.CUDA_FALLBACK_ERRORS.items():
        error = runtime.CUDARuntimeError(code)
        assert str(error).startswith(names.split(" / ")[1] + ":"), (code, str(error))
        assert dispatch.falls_back("cuda", error)
    for code in NOT_FALLBACK:
        assert not dispatch.falls_back("cuda", runtime.CUDARuntimeError(code))
    from cupy.cuda.compiler import CompileException

    assert dispatch.falls_back("cuda", CompileException("log", "source", "name", (), "nvrtc"))
