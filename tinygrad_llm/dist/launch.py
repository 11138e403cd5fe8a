"""How this process was started (``mpiexec``, ``srun``, or alone) and its one communicator, made by ``init``.

Apart from the communicators themselves (``comm.py``, ``nccl.py``), which it chooses between.
"""

from __future__ import annotations

import os

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.dist.comm import Communicator, MPICommunicator, SingleProcess
from tinygrad_llm.dist.nccl import NcclCommunicator

# set by the launchers we know: MPICH/Intel MPI (hydra), Open MPI, PMIx, Slurm's srun
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LAUNCHER_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launcher_size() -> int:
    """How many processes the launcher (mpiexec, srun, ...) started, from its environment; 1 when none."""
    for name in _LAUNCHER_SIZE:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def launcher_rank() -> int:
    for name in _LAUNCHER_RANK:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


_current: Communicator | None = None  # this process's, once init() made it


def current() -> Communicator | None:
    """The communicator ``init`` made for this process, or None before it was called."""
    return _current


def init(device: str | None = None) -> Communicator:
    """The communicator for this process (created once, then returned again).

    Started by ``mpiexec -n N`` with mpi4py installed: an ``MPICommunicator`` (an ``NcclCommunicator`` when
    ``device`` is "cuda" and N > 1). Started without ``mpiexec``: ``SingleProcess``. Started by ``mpiexec``
    without mpi4py: ``SingleProcess`` with a ``note`` saying so (the run is one process, not N).
    ``TINYGRAD_LLM_DIST=single`` forces one process.
    """
    global _current
    if _current is not None:
        return _current
    size = launcher_size()
    if os.environ.get("TINYGRAD_LLM_DIST") == "single":
        _current = SingleProcess()
    elif size == 1:
        _current = SingleProcess()  # the usual run: nothing asked for several processes, nothing to say
    else:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            _current = SingleProcess(
                f'one process: mpiexec started {size} but mpi4py is not installed, pip install -e ".[mpi]"'
            )
            _current.launcher_rank = launcher_rank()
            return _current
        comm = MPICommunicator()
        if comm.world_size > 1 and (device or backend.default_device()) == "cuda":
            comm = NcclCommunicator(comm)
        _current = comm
    return _current


def describe_processes(comm: Communicator, batch_size: int) -> str:
    """The text ", batch 8" or ", 2 processes (MPI, pids ...) x batch 4": for the line a command prints when training
    starts (with the note of a run that is one process although MPI is around)."""
    if comm.world_size == 1:
        return f", batch {batch_size}" + (f" ({comm.note})" if comm.note else "")
    # the process ids, so that mpiexec's report of a process that died ("PID 1234 ... signal 9") names its rank
    pids = np.zeros(comm.world_size, dtype=np.int64)
    pids[comm.rank] = os.getpid()
    comm.allgather_(pids)
    return (
        f", {comm.world_size} processes ({comm.name}, pids {' '.join(map(str, pids))} for ranks 0..) "
        f"x batch {batch_size}"
    )
