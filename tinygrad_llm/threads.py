"""How many threads the math may use: the one place that decides, per workload, for BLAS and the kernels.

Two facts measured on a 2-core machine (``benchmarks/RESULTS.md``, "Threads, the load test ...") shape it:

- A parallel region is only as fast as its slowest thread. On a machine that is busy with other work, a
  thread of ours waits a whole scheduler slice for a core, at every matrix product: the nanoGPT "baby"
  model's 768 x 128 x 128 product took 23 ms on 2 threads against 0.47 ms on one (``benchmarks/threads.py``
  at load 11; PyTorch at its default threads fell from 0.26 s to 14 s a step the same way, ``load.py``).
  So threads are given out only while the cores are free: a light monitor reads how much CPU the *other*
  processes used over the last quarter second (``/proc/stat`` minus our own CPU time) and lends us the
  cores they leave idle. Until it has seen a quarter second, we take one thread.
- Two thread pools spin against each other: OpenBLAS's workers busy-wait after each product, so a Numba
  kernel that wants the same core right after it waits (issue 10's idle measurement of the baby step:
  BLAS alone on 2 threads 78 ms, Numba alone on 2 threads 85 ms, both 176 ms, neither 94 ms). The matrix
  products hold most of the work, so BLAS gets the threads and the kernels between the products run on one.

Within that, a matrix product runs on several threads only when it is large enough for a second thread to
pay (``BLAS_PARALLEL_MIN_MNK``, per matrix of a batch: below it the hand-over costs more than it saves).

Override: ``set_threads(n)`` (the command line's ``--threads N``) or ``TINYGRAD_LLM_THREADS=N`` fixes the
number and switches the monitor off; ``describe()`` says what was chosen and why (``tinygrad-llm info``).
BLAS is bounded through ``threadpoolctl`` at run time, not through environment variables at import.
"""
from __future__ import annotations

import os
import time

import numpy as np

ENV = "TINYGRAD_LLM_THREADS"

# A second BLAS thread pays from about 128 x 128 x 128 (m * k * n multiply-adds) on a quiet 2-core machine
# (1.4x there, 1.7x from 256 x 128 x 128, measured while the machine was lightly loaded; benchmarks/threads.py
# measures it again); OpenBLAS itself stays on one thread below 262,144. Below 1M we keep one thread: the
# gain there is microseconds, the risk a scheduler slice.
BLAS_PARALLEL_MIN_MNK = 1 << 20

# Others using more than this many cores' worth of CPU take a core away from us (0.3: a desktop's background
# noise still leaves both cores to us; a browser tab playing video or another job does not).
OTHERS_TOLERANCE = 0.3
SAMPLE_SECONDS = 0.25

_fixed: int | None = None  # set_threads(n) or TINYGRAD_LLM_THREADS; None: the monitor decides
_fixed_by = ""  # which of the two set it, for describe()
_env_read = False
_blas = None  # threadpoolctl controllers of NumPy's BLAS, once found; () when there is none to control
_blas_threads: int | None = None  # what BLAS was last set to (setting it again costs a library call)


def cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(n: int | None) -> None:
    """Use at most ``n`` threads (``None``: back to the automatic choice). Called by ``--threads N``."""
    global _fixed, _fixed_by, _env_read
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads: expected a positive integer, got {n!r}")
    _fixed, _fixed_by, _env_read = n, "--threads (set_threads)", True


def _fixed_threads() -> int | None:
    global _fixed, _fixed_by, _env_read
    if not _env_read:
        value = os.environ.get(ENV, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{ENV}={value!r}: expected a positive integer")
            _fixed, _fixed_by = int(value), f"{ENV}={value}"
        _env_read = True
    return _fixed


class LoadMonitor:
    """How many cores' worth of CPU the other processes used over the last ``SAMPLE_SECONDS``.

    Linux: the busy time of our CPUs in ``/proc/stat`` minus this process's own CPU time (``os.times``).
    Elsewhere: the 1-minute load average minus one (ourselves), or 0 where there is none."""

    def __init__(self):
        self.cpus = None
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except AttributeError:
            pass
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.others: float | None = None  # unknown until one interval has passed
        self.previous: float | None = None  # the last interval's own figure
        self.last = self._sample()

    def _sample(self):
        busy = None
        if self.cpus is not None:
            try:
                with open("/proc/stat", "rb") as f:
                    busy = 0
                    for line in f:
                        if not line.startswith(b"cpu"):
                            break
                        fields = line.split()
                        if fields[0].decode() in self.cpus:
                            # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
                            values = [int(v) for v in fields[1:9]]
                            busy += sum(values) - values[3] - values[4]
            except (OSError, ValueError, IndexError):
                busy = None
        own = sum(os.times()[:2])
        return time.monotonic(), busy, own

    def others_busy(self) -> float | None:
        """Cores used by other processes, refreshed at most every SAMPLE_SECONDS; None before the first."""
        now = time.monotonic()
        if now - self.last[0] < SAMPLE_SECONDS:
            return self.others
        sample = self._sample()
        elapsed = sample[0] - self.last[0]
        if sample[1] is not None and self.last[1] is not None:
            busy = (sample[1] - self.last[1]) / self.tick
            now_others = max(0.0, busy - (sample[2] - self.last[2])) / elapsed
        elif hasattr(os, "getloadavg"):
            now_others = max(0.0, os.getloadavg()[0] - 1.0)
        else:
            now_others = 0.0
        # the busier of the last two intervals: cores are lent back only after two quiet intervals in a row,
        # taken away after one busy one (a wrong "quiet" costs a scheduler slice per product, a wrong "busy"
        # only the second thread's speed-up)
        self.others = now_others if self.previous is None else max(now_others, self.previous)
        self.previous = now_others
        self.last = sample
        return self.others


_monitor: LoadMonitor | None = None


def available() -> int:
    """Threads the math may use now: the fixed number, or the cores the other processes leave free."""
    fixed = _fixed_threads()
    if fixed is not None:
        return fixed
    global _monitor
    if _monitor is None:
        _monitor = LoadMonitor()
    others = _monitor.others_busy()
    if others is None:
        return 1
    return max(1, min(cores(), int(cores() - others + OTHERS_TOLERANCE)))


def blas_threads_for(mnk: int) -> int:
    """Threads for one matrix product of m * k * n multiply-adds (per matrix of a batch)."""
    return available() if mnk >= BLAS_PARALLEL_MIN_MNK else 1


def matmul(a, b):
    """``a @ b`` on the number of BLAS threads the policy gives a product of this size (CuPy: just a @ b)."""
    if type(a) is np.ndarray and a.ndim and b.ndim:
        _set_blas_threads(blas_threads_for(a.shape[-1] * (a.shape[-2] if a.ndim > 1 else 1)
                                           * (b.shape[-1] if b.ndim > 1 else 1)))
    return a @ b


def _blas_controllers():
    """threadpoolctl's handles on NumPy's BLAS (not torch's or another library's), found once."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = ()
            return _blas
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
        ours = [lib for lib in libs if os.path.dirname(lib.filepath).startswith(os.path.join(numpy_dir, "numpy"))]
        _blas = tuple(ours or libs)
    return _blas


def _set_blas_threads(n: int) -> None:
    global _blas_threads
    if n != _blas_threads:
        for lib in _blas_controllers():
            lib.set_num_threads(n)
        _blas_threads = n


def kernel_threads() -> int:
    """Threads for a compiled kernel between the products: one (two pools spin against each other)."""
    return 1


def describe() -> list[str]:
    """Lines saying what the policy chose and why (``tinygrad-llm info``)."""
    libs = _blas_controllers()
    blas = ", ".join(f"{lib.internal_api} {lib.version}" for lib in libs) or "none that threadpoolctl can control"
    fixed = _fixed_threads()
    lines = [f"cores            {cores()} (this process's CPU affinity)", f"BLAS             {blas}"]
    if fixed is not None:
        lines.append(f"threads          {fixed}, fixed by {_fixed_by}: matrix products of at least "
                     f"{BLAS_PARALLEL_MIN_MNK:,} multiply-adds use {fixed}, smaller ones 1")
    else:
        monitor = LoadMonitor()
        time.sleep(SAMPLE_SECONDS)
        others = monitor.others_busy() or 0.0
        now = max(1, min(cores(), int(cores() - others + OTHERS_TOLERANCE)))
        lines.append(f"threads          automatic: other processes use {others:.1f} of {cores()} cores now, so matrix "
                     f"products of at least {BLAS_PARALLEL_MIN_MNK:,} multiply-adds would use {now}, smaller ones 1 "
                     f"(re-checked every {SAMPLE_SECONDS} s while computing: a busy machine gets one thread)")
    lines.append(f"kernels          {kernel_threads()} thread (between the products: a second pool would spin "
                 f"against BLAS's)")
    lines.append(f"override         --threads N or {ENV}=N")
    return lines
