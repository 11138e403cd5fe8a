"""Communicators: ``SingleProcess`` (every operation a no-op) and ``MPICommunicator`` (mpi4py, host buffers).

Everything goes through MPI's buffer interface (``Allreduce``, ``Bcast``, ``Allgather`` on NumPy arrays):
no pickled Python objects cross between processes. A process that fails calls ``abort``, which makes
``mpiexec`` end every process of the job (MPI_Abort), so no rank waits forever in a collective whose
partner is gone; ``mpiexec`` itself ends the job when a rank dies (killed, or exit with a non-zero status).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array


class DistError(RuntimeError):
    """Data-parallel training cannot go on as asked (another process count, a missing library)."""


class Communicator:
    """The interface. The base class is also the single-process communicator: every call is a no-op."""

    rank, world_size, local_rank, local_size = 0, 1, 0, 1  # local: among the processes of this machine
    name = "one process"
    note: str | None = None  # why this is one process, when the user may have expected more

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_(self, array: Array) -> Array:
        """Sum ``array`` (a contiguous 1-D NumPy or CuPy array) over the processes, in place."""
        return array

    def broadcast_(self, array: Array, root: int = 0) -> Array:
        """Overwrite ``array`` with process ``root``'s values, in place."""
        return array

    def allgather_(self, array: Array) -> Array:
        """``array`` holds ``world_size`` equal slices; fill every slice with its owner's (slice r from rank r)."""
        return array

    def sum(self, value: float) -> float:
        """A Python float summed over the processes."""
        return float(value)

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (the caller has already printed why)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class SingleProcess(Communicator):
    def __init__(self, note: str | None = None):
        self.note = note


class MPICommunicator(Communicator):
    """Collectives on host (NumPy) arrays through mpi4py; CuPy arrays are staged through the host."""

    name = "MPI"

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the processes on this machine
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()

    def allreduce_(self, array: Array) -> Array:
        if backend.device_of(array) != "cpu":  # no CUDA-aware MPI assumed: stage through the host
            host = backend.to_numpy(array)
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            array[...] = backend.to_device(host, backend.device_of(array))
            return array
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def broadcast_(self, array: Array, root: int = 0) -> Array:
        if backend.device_of(array) != "cpu":
            host = np.ascontiguousarray(backend.to_numpy(array))
            self.comm.Bcast(host, root=root)
            array[...] = backend.to_device(host, backend.device_of(array))
            return array
        self.comm.Bcast(array, root=root)
        return array

    def allgather_(self, array: Array) -> Array:
        if backend.device_of(array) != "cpu":
            host = np.ascontiguousarray(backend.to_numpy(array))
            self.comm.Allgather(self.MPI.IN_PLACE, host)
            array[...] = backend.to_device(host, backend.device_of(array))
            return array
        self.comm.Allgather(self.MPI.IN_PLACE, array)
        return array

    def sum(self, value: float) -> float:
        buffer = np.array([value], dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return float(buffer[0])

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # The caller has said why; MPICH's own "Abort(1) on node 0 ... MPI_Abort" line would only repeat it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stderr__.fileno())
        self.comm.Abort(code)  # tells mpiexec to end every process of the job
        os._exit(code)  # MPICH's MPI_Abort can return to its caller, which would then print its error again
