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
  products hold most of the work, so they get the threads (as blocks on threads of ours, which sleep rather
  than spin between products) and the kernels between the products run on one.

Within that, the *bits* of a result never depend on the thread count, so a run resumed on a busy machine
equals one that ran straight through on an idle one. OpenBLAS's own threading changes how a product's sums
are split with the number of threads (a (128, 768) @ (768, 128) product differs in the last bits between 1
and 2 threads), so BLAS always runs on one thread, and a large product (``SPLIT_MIN_MNK`` multiply-adds or
more) is always cut into the same blocks of rows (or columns) by its shape alone. The blocks run side by
side on the cores the monitor lends (NumPy releases the GIL inside BLAS), or one after the other when there
is one: the same calls on the same blocks, so the same bits, at any load.

Products big enough to cut are rare in the small models learners train: handing a block to a woken thread
costs about what computing it does. What the threads share there is the training step itself: its batch is
cut into ``batch_parts`` parts, one per core (by the batch's shape and the ``--threads`` setting, never the
load), whose forward and backward passes ``run_parallel`` runs side by side on the cores lent now, or one
after the other on a busy machine (``runtime.batch_parts``). NumPy's BLAS and our Numba kernels release the
GIL, so the parts overlap; inside a part, ``available()`` is 1. The compiled kernels run on the thread that
calls them: a pool of their own would spin against BLAS's (above).

Override: ``set_threads(n)`` (the command line's ``--threads N``, ``runtime.configure(threads=n)``) or
``TINYGRAD_LLM_THREADS=N`` fixes the number and switches the monitor off (``runtime.settings`` holds it);
``describe()`` says what was chosen and why (``tinygrad-llm info``). BLAS is bounded through ``threadpoolctl``
when a product runs, not through environment variables at import. The blocked product itself is
``runtime.products.matmul``.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from tinygrad_llm.runtime import settings

ENV = settings.THREADS_ENV

# A product is cut into blocks from 128M multiply-adds up, each block at least 64M. Smaller blocks lose: a
# block handed to a thread that has just woken often starts on the waker's own core (the scheduler moves it a
# few milliseconds later), so a 768 x 128 x 128 product took 0.52 ms in two blocks against 0.15 ms in one call
# (benchmarks/threads.py, 2026-12-02, idle 2-core machine); from about 150M the blocks gained 1.2-1.45x.
SPLIT_MIN_MNK = 1 << 27
BLOCK_MIN_MNK = 1 << 26

# Others using more than this many cores' worth of CPU take a core away from us (0.3: a desktop's background
# noise still leaves both cores to us; a browser tab playing video or another job does not).
OTHERS_TOLERANCE = 0.3
SAMPLE_SECONDS = 0.25

_blas = None  # threadpoolctl controllers of NumPy's BLAS, once found; () when there is none to control
_blas_threads: int | None = None  # what BLAS was last set to (setting it again costs a library call)
_pool = None  # the worker threads that run run_parallel's other tasks, started on first need
_section = threading.local()  # .inside: this thread is running a task of run_parallel

# A training step's batch is cut into parts only where each part's forward pass has this many multiply-adds,
# and only for models up to PART_MAX_PARAMETERS: every part but the first keeps a whole copy of the gradients,
# which for gpt2-small (124M) cost more than the parts gained (2.4 s a step in 2 parts against 1.0 s with its
# products cut into blocks, and 16% more peak memory than PyTorch; the 10.7M "medium" model gained 1.2x).
PART_MIN_MACS = 1 << 26
PART_MAX_PARAMETERS = 1 << 24


def cores() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(n: int | None) -> None:
    """Use at most ``n`` threads (``None``: back to the automatic choice), for good. Called by ``--threads N``
    (through ``runtime.configure``); ``runtime.overridden(threads=n)`` does it for a ``with`` block."""
    settings.check_threads(n)
    now = settings.current()
    now.threads, now.threads_by = n, "--threads (set_threads)"


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
    """Threads the math may use now: the fixed number, or the cores the other processes leave free; one
    inside a task of ``run_parallel`` (its siblings hold the other threads)."""
    if getattr(_section, "inside", False):
        return 1
    fixed = settings.current().threads
    if fixed is not None:
        return fixed
    global _monitor
    if _monitor is None:
        _monitor = LoadMonitor()
    others = _monitor.others_busy()
    if others is None:
        return 1
    return max(1, min(cores(), int(cores() - others + OTHERS_TOLERANCE)))


def batch_parts(rows: int, macs: int, parameters: int) -> int:
    """How many parts a training step cuts its batch of ``rows`` rows into (``runtime.batch_parts``),
    ``macs`` being the multiply-adds of the batch's forward pass: one part per thread the run may use (the
    fixed number, else this machine's cores), each of at least ``PART_MIN_MACS``; none for a model of more
    than ``PART_MAX_PARAMETERS`` (its products are cut into blocks instead). A function of the shape and the
    setting, never of the load: the parts run side by side or one after the other, with the same bits."""
    if parameters > PART_MAX_PARAMETERS:
        return 1
    return max(1, min(settings.current().threads or cores(), rows, macs // PART_MIN_MACS))


def blocks_for(m: int, k: int, n: int) -> int:
    """How many blocks an (m, k) @ (k, n) product is cut into: a function of its shape (and this machine's
    cores) only, never of the load, so its bits are the same whatever the threads."""
    mnk = m * k * n
    if mnk < SPLIT_MIN_MNK:
        return 1
    return max(1, min(cores(), mnk // BLOCK_MIN_MNK, max(m, n) // 16))


def run_parallel(tasks: list) -> list:
    """Call each zero-argument callable in ``tasks`` on the threads ``available()`` lends now (this one too:
    thread i takes tasks i, i + threads, ...) and return their results in order. Inside a task, ``available()``
    is 1, so a task's own matrix products stay on its thread. Every task has finished when this returns, also
    when one raised (the first error is raised again) or the caller was interrupted."""
    workers = min(available(), len(tasks))
    if workers <= 1:
        return [task() for task in tasks]
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=max(1, cores() - 1), thread_name_prefix="tinygrad-llm")
    results = [None] * len(tasks)

    def run_share(first: int) -> None:
        _section.inside = True
        try:
            for i in range(first, len(tasks), workers):
                results[i] = tasks[i]()
        finally:
            _section.inside = False

    futures = [_pool.submit(run_share, first) for first in range(1, workers)]
    try:
        run_share(0)
    finally:
        for future in futures:
            future.exception()  # wait, whatever happened here
    for future in futures:
        future.result()  # a worker's error, raised here
    return results


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


def set_blas_threads(n: int) -> None:
    """Bound NumPy's BLAS to ``n`` threads (a library call only when it changes)."""
    global _blas_threads
    if n != _blas_threads:
        for lib in _blas_controllers():
            lib.set_num_threads(n)
        _blas_threads = n


def describe() -> list[str]:
    """Lines saying what the policy chose and why (``tinygrad-llm info``)."""
    libs = _blas_controllers()
    blas = ", ".join(f"{lib.internal_api} {lib.version}" for lib in libs) or "none that threadpoolctl can control"
    fixed, fixed_by = settings.current().threads, settings.current().threads_by
    lines = [f"cores            {cores()} (this process's CPU affinity)", f"BLAS             {blas}"]
    parts = fixed or cores()
    lines.append(
        f"batch parts      a training step's batch is cut into {parts} parts (one per "
        f"{'thread set' if fixed is not None else 'core'}; fewer where a part would have under "
        f"{PART_MIN_MACS:,} multiply-adds, none for models over {PART_MAX_PARAMETERS:,} parameters), "
        f"computed side by side on the threads lent: the same bits whichever ran them"
    )
    lines.append(
        f"products         one of at least {SPLIT_MIN_MNK:,} multiply-adds is cut by its shape into blocks "
        f"of single-threaded BLAS calls, run side by side on the threads lent (the same bits at any count)"
    )
    if fixed is not None:
        lines.append(f"threads lent     {fixed}, fixed by {fixed_by}")
    else:
        monitor = LoadMonitor()
        time.sleep(SAMPLE_SECONDS)
        others = monitor.others_busy() or 0.0
        now = max(1, min(cores(), int(cores() - others + OTHERS_TOLERANCE)))
        lines.append(
            f"threads lent     automatic: other processes use {others:.1f} of {cores()} cores now, so {now} "
            f"(re-checked every {SAMPLE_SECONDS} s while computing: a busy machine gets one thread)"
        )
    lines.append(
        "kernels          1 thread per call, no pool of their own (it would spin against "
        "BLAS's); they release the GIL, so the batch parts' kernels overlap"
    )
    lines.append(f"override         --threads N or {ENV}=N")
    return lines
