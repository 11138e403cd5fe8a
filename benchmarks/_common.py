"""What every benchmark script shares: describing the machine, and timing rivals side by side.

    from _common import machine_info, print_machine, time_interleaved

    print_machine(threads=2)
    medians = time_interleaved(synced({"ours": f, "torch": g}, device, torch), repeats=7)  # medians, s/call
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
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "TINYGRAD_LLM_KERNELS",
        "TINYGRAD_LLM_DEVICE",
    ):
        if os.environ.get(var):
            info[var] = os.environ[var]
    return info


def print_machine(**extra) -> None:
    """Print the machine a benchmark ran on (one line per fact), plus any ``extra`` settings."""
    print("machine:")
    for key, value in {**machine_info(), **{k: str(v) for k, v in extra.items()}}.items():
        print(f"  {key:20s} {value}")


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in torch and in ours; None leaves both at their defaults. Ours through
    ``runtime.configure``, which also keeps freed host memory for the next step, as the Trainer does."""
    from tinygrad_llm import runtime

    runtime.configure(threads=n)
    if n is None:
        return
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


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


def time_interleaved(
    fns: dict, repeats: int = 7, number: int | None = None, min_time: float = 0.05, warmup: int = 1
) -> dict:
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


# ---- devices: --device cpu|cuda, synchronisation, TF32, peak TFLOP/s and MFU ---------------------------


def add_device_argument(parser) -> None:
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default) or cuda: ours on CuPy, PyTorch eager on the same GPU",
    )


def require_device(device: str) -> None:
    """Exit with one line (no traceback) when ``device`` is cuda and no GPU is usable."""
    if device == "cuda":
        import tinygrad_llm as tl

        if not tl.cuda_available():
            raise SystemExit(
                "--device cuda: no CUDA GPU usable by CuPy on this machine "
                "(pip install 'tinygrad-llm[cuda12]' on a machine with one)"
            )


def synchronize(device: str, torch=None) -> None:
    """Wait for the GPU's queued work (ours and torch's), so a timer stops when the work is done."""
    if device != "cuda":
        return
    import cupy

    cupy.cuda.Device().synchronize()
    if torch is not None:
        torch.cuda.synchronize()


def synced(fns: dict, device: str, torch=None) -> dict:
    """The callables of ``fns``, each waiting for the GPU at its end (unchanged on the CPU)."""
    if device != "cuda":
        return fns

    def wrap(fn):
        def run():
            out = fn()
            synchronize(device, torch)
            return out

        return run

    return {name: wrap(fn) for name, fn in fns.items()}


def set_tf32(on: bool, torch=None) -> None:
    """Float32 matrix products on TF32 tensor cores (on) or in full float32 (off), on both sides: ours
    through CuPy's cuBLAS compute type (what CUPY_TF32=1 sets at start), torch's through allow_tf32."""
    from tinygrad_llm import backend

    backend.set_float32_matmul_precision("high" if on else "highest")
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


# Dense (no sparsity) peak tensor-core TFLOP/s from NVIDIA's data sheets, by device name and precision:
# what model-FLOPs utilisation (MFU, as llm.c and nanoGPT report it) is measured against.
PEAK_TFLOPS = {
    "H200": {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100": {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
}


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def peak_tflops(precision: str) -> float | None:
    """The current GPU's dense peak for ``precision`` (fp32, tf32, fp16, bf16); None when it is not listed."""
    name = gpu_name()
    for key, peaks in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100": the first match wins
        if key in name:
            return peaks.get(precision)
    return None


def product_parameters(model) -> int:
    """The weights that enter matrix products (every Linear's weight, the output head's included; not the
    embedding tables, which are looked up, nor biases and norms): each costs 2 FLOPs a token forward, 4 backward."""
    from tinygrad_llm.nn import Linear

    return sum(module.weight.size for module in model.modules() if isinstance(module, Linear))


def step_flops_per_token(model) -> float:
    """A training step's FLOPs per token on the CPU: 6 per weight in a matrix product (forward 2, backward 4) plus
    attention's two (T, T) products per layer, 12 L C T (forward and backward, the causal half not subtracted,
    as nanoGPT and llm.c count)."""
    config = model.config
    return 6 * product_parameters(model) + 12 * config.n_layers * config.emb_dim * config.context_length


def sgemm_gflops(threads: int, shapes=((2048, 2048, 2048),), repeats: int = 5) -> dict:
    """{(m, k, n): (median, best) GFLOP/s} of NumPy's float32 product (its BLAS with ``threads`` threads of its
    own): the machine's peak for this library, what a step's achieved GFLOP/s is a fraction of."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    found = {}
    with threadpool_limits(limits=threads, user_api="blas"):
        for m, k, n in shapes:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            number = _calibrate(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), 0.2)
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(number):
                    np.matmul(a, b, out=out)
                samples.append((time.perf_counter() - start) / number)
            flops = 2 * m * k * n / 1e9
            found[(m, k, n)] = (flops / statistics.median(samples), flops / min(samples))
    return found


def sgemm_peak(threads: int) -> float:
    """The best GFLOP/s of NumPy's 2048^3 float32 product at ``threads`` threads, measured in a fresh process: in
    the benchmark's own, another library's spinning thread pool (PyTorch's OpenMP workers) would share the cores."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from _common import sgemm_gflops; "
        "print(json.dumps(sgemm_gflops(int(sys.argv[2]))[(2048, 2048, 2048)][1]))"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", code, here, str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_flops_per_token(config, n_params: int) -> float:
    """Training FLOPs per token, as nanoGPT estimates them (PaLM appendix B): 6 N for the weights' products
    forward and backward, plus 12 L C T for attention's two (T, T) products."""
    return 6 * n_params + 12 * config.n_layers * config.emb_dim * config.context_length


def mfu_line(tokens_per_s: float, config, n_params: int, precision: str) -> str:
    """'X TFLOP/s achieved, MFU Y% of the GPU's peak' (PEAK_TFLOPS) for a training throughput."""
    achieved = tokens_per_s * train_flops_per_token(config, n_params) / 1e12
    peak = peak_tflops(precision)
    share = f", MFU {100 * achieved / peak:.1f}% of {peak:g} {precision} peak" if peak else ", peak unknown"
    return f"{achieved:.1f} TFLOP/s{share}"
