"""Host memory: arrays freed by one training step stay in the process for the next one.

Every step allocates and frees the same arrays (activations, their gradients, temporaries). glibc's malloc
returns large freed blocks to the operating system: a block above ``M_MMAP_THRESHOLD`` is unmapped when
freed, and free space at the top of the heap above ``M_TRIM_THRESHOLD`` is trimmed. The next step's array
of the same size then faults its pages back in one 4 KiB page at a time, each zeroed by the kernel. On the
nanoGPT "baby" model that was 12,900 page faults and about 35 ms of system time in a 90 ms step at one
thread (``resource.getrusage`` around one step; run ``python benchmarks/memory.py --faults`` to see it).

``keep_freed_memory()`` (called by ``runtime.configure()``: the command line and the ``Trainer`` make that
call, a script can; importing ``tinygrad_llm`` changes nothing) raises both thresholds, so a freed block
is kept and reused: no page faults after the first step. glibc caps the mmap threshold at 32 MiB on 64-bit
systems; larger arrays (gpt2-small's logits) are still unmapped when freed, and there the faults are small
beside the step. The price: memory a run has freed is not handed back to other processes until it ends;
the peak stays the peak of what was alive at once (``benchmarks/memory.py`` measures it beside PyTorch).

``TINYGRAD_LLM_MALLOC=default`` leaves malloc as it was. Other C libraries (macOS, musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

from tinygrad_llm.runtime import settings

ENV = settings.MALLOC_ENV
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit systems (half its heap size)
TRIM_THRESHOLD = 1 << 30  # free space kept at the heap's top; mallopt takes a C int

_state = "not configured"


def keep_freed_memory() -> str:
    """Keep freed blocks for reuse (glibc only, unless $TINYGRAD_LLM_MALLOC=default); returns what was done."""
    global _state
    now = settings.current()
    if "ignored" in now.malloc_by and _state == "not configured":  # a bad value: one warning, not a traceback
        warnings.warn(now.malloc_by, stacklevel=3)
    if now.malloc == "default":
        _state = f"malloc's defaults (${ENV}=default)"
        return _state
    mallopt = _glibc_mallopt()
    if mallopt is None:
        _state = "malloc's defaults (not glibc: nothing to set)"
        return _state
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        _state = "malloc's defaults (glibc refused the thresholds)"
        return _state
    _state = (
        f"freed blocks up to {MMAP_THRESHOLD >> 20} MiB kept for reuse (glibc mmap threshold "
        f"{MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 30} GiB): no page faults from one "
        f"step to the next; ${ENV}=default turns it off"
    )
    return _state


def _glibc_mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc has it; musl does not
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def describe() -> str:
    """What keep_freed_memory() did (``tinygrad-llm info``)."""
    return _state


# --- how much memory this process may still take ----------------------------------------------------------
# Read before a command allocates a model or a batch (tinygrad_llm.memory), so that a job that cannot fit is
# refused with the numbers instead of swapping and then failing. psutil is not a dependency: the kernel's own
# files say it. MemAvailable is what the kernel could hand out without swapping (free memory plus the page cache
# it can drop); a container's cgroup limit may be lower, and then the limit less what the cgroup already uses
# (its page cache that can be dropped, inactive_file, not counted as used) is what is left.

UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def available_memory(proc: str = "/proc", cgroup: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """(bytes this process can still allocate without swapping, where that figure comes from), or None where
    the system does not say (not Linux). The smaller of /proc/meminfo's MemAvailable and the room left under
    the cgroup's memory limit (v2 memory.max, or v1 memory.limit_in_bytes) when there is one."""
    found = []
    meminfo = _read_key_values(os.path.join(proc, "meminfo"))
    if "MemAvailable" in meminfo:
        found.append((meminfo["MemAvailable"] * 1024, "MemAvailable in /proc/meminfo"))  # given in kB
    for limit_file, usage_file, inactive_key in (
        ("memory.max", "memory.current", "inactive_file"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes", "total_inactive_file"),  # v1
    ):
        limit = _read_int(os.path.join(cgroup, limit_file))
        usage = _read_int(os.path.join(cgroup, usage_file))
        if limit is None or usage is None or limit >= UNLIMITED:
            continue
        stat = _read_key_values(os.path.join(cgroup, os.path.dirname(limit_file), "memory.stat"))
        used = max(0, usage - stat.get(inactive_key, 0))
        found.append((max(0, limit - used), f"the memory limit of this container ({cgroup}/{limit_file}) less its use"))
        break
    return min(found) if found else None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _read_key_values(path: str) -> dict[str, int]:
    """``name value`` or ``name: value kB`` lines (memory.stat, /proc/meminfo) as {name: value}."""
    values = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                parts = line.replace(":", " ").split()
                if len(parts) >= 2 and parts[1].isdigit():
                    values[parts[0]] = int(parts[1])
    except (OSError, ValueError):
        pass
    return values
