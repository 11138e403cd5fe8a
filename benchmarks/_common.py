"""What every benchmark script shares: describing the machine, and timing rivals side by side.

    from _common import machine_info, print_machine, time_interleaved

    print_machine(threads=2)
    medians = time_interleaved({"ours": f, "torch": g}, repeats=7)   # seconds per call, medians
    print(f"ratio {medians['ours'] / medians['torch']:.2f}x")

Absolute times on a shared machine are noise; ratios of medians measured in one process, with the
rivals interleaved repetition by repetition, are the figure worth reporting.
"""
from __future__ import annotations

import os
import platform
import statistics
import time


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except ImportError:
        return "not installed"
    return getattr(module, "__version__", "unknown")


def _blas() -> str:
    try:
        import numpy as np

        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # the layout of numpy's build config differs between versions
        return "unknown"


def machine_info() -> dict:
    """Platform, CPU, library versions and thread settings, as plain strings (for printing or JSON)."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "numpy": _version("numpy"),
        "blas": _blas(),
        "numba": _version("numba"),
        "torch": _version("torch"),
        "cupy": _version("cupy"),
    }
    try:
        import numba

        info["numba_threads"] = str(numba.get_num_threads())
    except ImportError:
        pass
    try:
        import torch

        info["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                "TINYGRAD_LLM_KERNELS", "TINYGRAD_LLM_DEVICE"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    return info


def print_machine(**extra) -> None:
    """Print the machine a benchmark ran on (one line per fact), plus any ``extra`` settings."""
    print("machine:")
    for key, value in {**machine_info(), **{k: str(v) for k, v in extra.items()}}.items():
        print(f"  {key:20s} {value}")


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in torch and in ours (``tinygrad_llm.threads``); None leaves both at their defaults."""
    if n is None:
        return
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    from tinygrad_llm import threads

    threads.set_threads(n)


def _calibrate(fn, min_time: float) -> int:
    """How many calls of fn make one timed sample last about ``min_time`` seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or number >= 1 << 20:
            return max(1, int(number * min_time / max(elapsed, 1e-9)))
        number *= 4


def time_interleaved(fns: dict, repeats: int = 7, number: int | None = None, min_time: float = 0.05,
                     warmup: int = 1) -> dict:
    """Median seconds per call of each callable, the callables interleaved repetition by repetition.

    Args:
        fns: name -> zero-argument callable.
        repeats: samples per callable; the median of them is returned.
        number: calls per sample (default: calibrated per callable so a sample lasts ``min_time``).
        warmup: untimed calls of each callable first (compilation, caches, allocator).

    Each repetition runs every callable once, in an order rotated by one each repetition, so slow
    drifts of the machine (other jobs, clocks) fall on all of them alike.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    numbers = {name: number or _calibrate(fns[name], min_time) for name in names}
    samples = {name: [] for name in names}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = fns[name], numbers[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(samples[name]) for name in names}
