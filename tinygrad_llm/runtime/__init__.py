"""The runtime: everything that exists only to make a step fast on this machine, and nothing of the math.

    from tinygrad_llm import runtime
    runtime.configure()            # what the command line and the Trainer do: host memory, threads from the env
    runtime.configure(threads=4)   # the same, the thread count fixed (as --threads 4)
    with runtime.overridden(threads=1):
        ...                        # one thread inside the block, the previous setting after it

Operations (``functional``, ``optim.clip``) call one thing of it, ``matmul``; the trainers call
``backward_in_parts``; the command line calls ``configure`` and ``describe``. Inside:

    settings.py      the settings object: read from the environment once, changed by configure()/overridden()
    threads.py       the thread policy: fixed or lent by the load monitor; blocks, batch parts, run_parallel
    products.py      matmul: leading axes folded into one 2-D product, cut into blocks on the threads
    batched_gemm.py  a GPU's batched product (attention's) as one cuBLAS strided-batched GEMM, any float dtype
    batch_parts.py   a training step's batch in parts computed side by side (grad() for all but the first)
    host_memory.py   glibc keeps freed blocks for the next step (no page faults)

Ambient state, one style: the runtime's settings (``TINYGRAD_LLM_THREADS``, ``TINYGRAD_LLM_MALLOC``) live in one
``Settings`` object, ``settings.current()``. The environment is read into it once, on first use; after that only
``configure(...)`` (for good; ``threads.set_threads`` underneath) and the ``overridden(...)`` context manager (for
a block) change it, and the hot path reads the object, never the environment. Nothing happens at import:
importing ``tinygrad_llm`` neither tunes malloc nor sets a thread count or an environment variable. State that
belongs to one thread (inside a task of ``run_parallel`` the thread count is 1) is a ``threading.local``, as the
engine's grad mode is.
"""

from __future__ import annotations

from tinygrad_llm.runtime import host_memory, settings, threads
from tinygrad_llm.runtime.batch_parts import backward_in_parts, split_count
from tinygrad_llm.runtime.products import matmul
from tinygrad_llm.runtime.settings import overridden
from tinygrad_llm.runtime.threads import set_threads

__all__ = ["backward_in_parts", "configure", "describe", "matmul", "overridden", "split_count"]


def configure(threads: int | None = None) -> settings.Settings:
    """Apply the runtime's settings to this process and return them: host memory is tuned (glibc keeps freed
    blocks, unless ``TINYGRAD_LLM_MALLOC=default``) and ``threads``, when given, fixes the thread count as
    ``--threads`` does (None keeps it: ``TINYGRAD_LLM_THREADS`` or an earlier call, else the load monitor).
    Called by the command line and by the ``Trainer``; calling it again is harmless."""
    now = settings.current()
    if threads is not None:
        set_threads(threads)
    host_memory.keep_freed_memory()
    return now


def describe() -> list[str]:
    """Lines saying what the runtime chose and why (``tinygrad-llm info``)."""
    return threads.describe() + [f"host memory      {host_memory.describe()}"]
