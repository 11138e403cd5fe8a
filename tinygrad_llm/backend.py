"""Which array library runs the math: NumPy on the CPU, CuPy on a CUDA GPU.

Everything above this module works on raw arrays through an ``xp`` namespace (``numpy`` or ``cupy``)
chosen per call from the arrays themselves, so the same model code runs on both. CuPy is imported only
when a CUDA array or device is asked for; a NumPy-only installation never touches it.

Also here: the dtype policy (float32 unless a float64 array is given), and the seeded random generators
that dropout, initialisation and sampling draw from.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np

# What Function.forward/backward, the kernels and the runtime's products take and return: a numpy.ndarray, or a
# cupy.ndarray on a GPU (the same interface; CuPy is imported only when used, so the hints name NumPy's).
Array: TypeAlias = np.ndarray

DEVICES = ("cpu", "cuda")
DEFAULT_FLOAT = np.float32

_cupy = None  # the cupy module once imported


def cupy_loaded() -> bool:
    """Whether CuPy was imported (a device "cuda" was used): until then every array is a NumPy array."""
    return _cupy is not None


def _import_cupy():
    """Import CuPy and check a GPU is visible, or raise an error naming what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as exc:
        if not nvidia_driver_present():
            raise RuntimeError(
                "device 'cuda': this machine shows no NVIDIA GPU (no driver: /proc/driver/nvidia and nvidia-smi are "
                "missing), and CuPy is not installed; use device 'cpu' (--device cpu), or a machine with a CUDA GPU "
                "and pip install 'tinygrad-llm[cuda12]'"
            ) from exc
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install 'tinygrad-llm[cuda12]' (CUDA 12) or 'tinygrad-llm[cuda13]' (CUDA 13)"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when the driver is missing
        if not nvidia_driver_present():  # CuPy installed on a machine without a GPU: say that first
            raise RuntimeError(
                "device 'cuda': this machine shows no NVIDIA GPU (no driver: /proc/driver/nvidia and nvidia-smi are "
                "missing); CuPy is installed but has nothing to run on: use device 'cpu' (--device cpu)"
            ) from exc
        raise RuntimeError(f"device 'cuda': CuPy is installed but no CUDA GPU is usable ({exc})") from exc
    if count == 0:
        raise RuntimeError("device 'cuda': CuPy is installed but no CUDA GPU is visible")
    _cupy = cupy
    return cupy


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (a GPU CuPy could use once installed)."""
    import shutil

    return os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def check_device(device: str | None) -> str:
    """Normalise a device name (None -> the default) and make sure it can be used."""
    if device is None:
        return default_device()
    if device not in DEVICES:
        device = str(device)
        if device.startswith("cuda:"):
            raise ValueError(f"device {device!r}: only 'cuda' (the current CuPy device) is supported")
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        _import_cupy()
    return device


def default_device() -> str:
    """The device named by TINYGRAD_LLM_DEVICE, 'cpu' when unset."""
    device = os.environ.get("TINYGRAD_LLM_DEVICE", "cpu") or "cpu"
    if device not in DEVICES:
        raise ValueError(f"TINYGRAD_LLM_DEVICE={device!r}: expected one of {DEVICES}")
    if device == "cuda":
        _import_cupy()
    return device


def xp_for(device: str) -> ModuleType:
    """The array module of a device: numpy for 'cpu', cupy for 'cuda'."""
    return np if device == "cpu" else _import_cupy()


def get_array_module(array: Any) -> ModuleType:
    """numpy or cupy, whichever owns ``array`` (numpy for scalars and lists)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    if "cupy" in sys.modules and type(array).__module__.startswith("cupy"):
        return _import_cupy()
    return np


def device_of(array: Any) -> str:
    return "cpu" if get_array_module(array) is np else "cuda"


def to_device(array: Array, device: str) -> Array:
    """Copy an array to a device (no copy when it is already there)."""
    xp = get_array_module(array)
    if device == "cpu":
        return array if xp is np else xp.asnumpy(array)
    cupy = _import_cupy()
    return array if xp is cupy else cupy.asarray(array)


def to_numpy(array: Array) -> np.ndarray:
    return to_device(array, "cpu")


def host_floats(values: list) -> list[float]:
    """0-d arrays (a loss, a flag) on one device as Python floats, copied to the host together: one wait for
    a GPU where a float() of each would wait once each."""
    xp = get_array_module(values[0])
    host = to_numpy(xp.stack([xp.asarray(v, dtype=xp.float64) for v in values]))  # the one copy
    return [float(v) for v in host]


def scatter_add(target: Array, index: Any, values: Array | float) -> None:
    """``target[index] += values`` where repeated indices accumulate (numpy.add.at on either backend)."""
    get_array_module(target).add.at(target, index, values)  # cupy.add.at: an atomic-add kernel on the GPU


# ---------------------------------------------------------------------------------------------------
# Random generators. One seeded generator per device; manual_seed reseeds them all, so a run is
# reproducible from its seed, and get_rng_state/set_rng_state let a checkpoint resume exactly.

_generators: dict[str, object] = {}
_seed: int | None = None
_thread_generator = threading.local()  # .cpu: a generator this thread draws from instead (use_generator)


def manual_seed(seed: int) -> None:
    """Seed every generator the library draws from (dropout, initialisation, sampling)."""
    global _seed
    _seed = int(seed)
    _generators.clear()


def get_generator(device: str = "cpu") -> Any:
    """The device's generator: numpy.random.Generator on the CPU, cupy.random.Generator on CUDA."""
    if device == "cpu":
        own = getattr(_thread_generator, "cpu", None)
        if own is not None:
            return own
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            cupy = _import_cupy()
            gen = cupy.random.default_rng(_seed)
        _generators[device] = gen
    return gen


@contextlib.contextmanager
def use_generator(generator: np.random.Generator) -> Iterator[np.random.Generator]:
    """Within the block, this thread's CPU draws (dropout, ...) come from ``generator``: the parts of a batch
    that threads compute at once each draw from their own, so the draws do not depend on which thread ran first."""
    previous, _thread_generator.cpu = getattr(_thread_generator, "cpu", None), generator
    try:
        yield generator
    finally:
        _thread_generator.cpu = previous


def get_rng_state() -> dict:
    """Every generator's state, for checkpoints: ``{"cpu": <PCG64 state, JSON-able>}``, plus, once dropout
    or initialisation has drawn on the GPU, ``{"cuda": <uint8 array>}``: a copy, on the GPU, of CuPy's cuRAND
    states (one per GPU thread; ``cupy.random.Generator`` has no public state API). The trainer takes this
    state before every step, so it must not wait for the GPU; a checkpoint copies it to the host."""
    state = {"cpu": get_generator("cpu").bit_generator.state}
    if "cuda" in _generators:
        device_states = _generators["cuda"].bit_generator._state  # int8 device array of curandState structs
        state["cuda"] = device_states.copy().view(np.uint8)  # copied on the GPU (no wait); a checkpoint moves it
    return state


def set_rng_state(state: dict) -> None:
    """Restore what get_rng_state returned. A saved GPU state is written into this process's CuPy generator
    (created on first use; ignored where there is no GPU); it must come from a GPU with as many multiprocessors."""
    get_generator("cpu").bit_generator.state = state["cpu"]
    saved = state.get("cuda")
    if saved is None or ("cuda" not in _generators and not cuda_available()):
        return  # nothing drew on a GPU, or there is none here (a GPU run resumed on the CPU)
    device_states = get_generator("cuda").bit_generator._state
    if saved.size != device_states.size:
        raise ValueError(
            f"the saved CUDA random state has {saved.size} bytes, this GPU's generator "
            f"{device_states.size}: it was saved on a GPU with another number of multiprocessors"
        )
    device_states[...] = _import_cupy().asarray(saved).reshape(-1).view(np.int8)


# ---------------------------------------------------------------------------------------------------
# Mixed precision: the dtype matrix products compute in. Parameters, activations and gradients stay
# float32 (the "master" copy); inside ``autocast(np.float16)`` each float32 matrix product (linear layers,
# attention) casts its two operands to float16, multiplies -- on tensor cores on a GPU, summing in float32 --
# and casts the result back to float32. Its backward does the same with the incoming gradient, which is
# where float16's range runs out: tiny gradients flush to 0, which loss scaling (tinygrad_llm.amp) prevents.

LOW_PRECISION = ("fp16", "bf16")
_autocast_dtype: np.dtype | None = None


@contextlib.contextmanager
def autocast(dtype: Any) -> Iterator[None]:
    """Inside the block, float32 matrix products compute in ``dtype`` (float16 or ml_dtypes.bfloat16);
    None switches it off. Other operations, and float64 (gradient checks), are unaffected."""
    global _autocast_dtype
    previous, _autocast_dtype = _autocast_dtype, (None if dtype is None else np.dtype(dtype))
    try:
        yield
    finally:
        _autocast_dtype = previous


def autocast_dtype(array_dtype: Any) -> np.dtype | None:
    """The dtype a matrix product of ``array_dtype`` operands computes in now: None for "as they are"."""
    return _autocast_dtype if _autocast_dtype is not None and array_dtype == np.float32 else None


def low_precision_dtype(name: str) -> np.dtype:
    """numpy.float16 for 'fp16'; ml_dtypes.bfloat16 for 'bf16' (NumPy has no bfloat16 of its own)."""
    if name == "fp16":
        return np.dtype(np.float16)
    if name != "bf16":
        raise ValueError(f"low-precision dtype {name!r}: expected one of {LOW_PRECISION}")
    try:
        import ml_dtypes
    except ImportError:
        raise RuntimeError("bf16 needs the ml_dtypes package for NumPy's bfloat16: pip install ml-dtypes") from None
    return np.dtype(ml_dtypes.bfloat16)


def set_float32_matmul_precision(precision: str) -> None:
    """'highest' (float32 matrix products in full float32) or 'high' (TF32 on the tensor cores of an Ampere or
    newer GPU: a 10-bit mantissa on the inputs, float32 sums), as ``torch.set_float32_matmul_precision``.

    Only CuPy's products change (its cuBLAS compute type, the setting ``CUPY_TF32=1`` chooses at start);
    NumPy's have no TF32 and stay as they are."""
    if precision not in ("highest", "high"):
        raise ValueError(f"set_float32_matmul_precision: expected 'highest' or 'high', got {precision!r}")
    if _cupy is None and "cupy" not in sys.modules:
        if precision == "highest":
            return  # CuPy never loaded: its products still have their default
        _import_cupy()
    from cupy._core import _routines_linalg as linalg  # not public API: set_compute_type is CuPy's one switch

    linalg.set_compute_type(
        np.float32, linalg.COMPUTE_TYPE_TF32 if precision == "high" else linalg.COMPUTE_TYPE_DEFAULT
    )


def result_dtype(data: Any) -> np.dtype:
    """The dtype a new tensor gets: floats become float32 unless already float64 or float16 arrays."""
    dtype = getattr(data, "dtype", None)
    if dtype is None:
        dtype = np.asarray(data).dtype
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype if hasattr(data, "dtype") else np.dtype(DEFAULT_FLOAT)
    return dtype
