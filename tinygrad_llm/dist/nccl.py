"""NCCL through CuPy for arrays on CUDA GPUs, one GPU per process.

The processes are started by ``mpiexec`` as usual; MPI chooses each process's GPU (its rank among the
processes of its machine) and carries NCCL's unique id from rank 0 to the others (as llm.c and
``cupyx.distributed`` do). Then every collective on a CuPy array is one NCCL call on the current stream;
host (NumPy) arrays and scalars still go through MPI.
"""
from __future__ import annotations

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.dist.comm import MPICommunicator

UNIQUE_ID_BYTES = 128  # ncclUniqueId: nccl.get_unique_id() returns these as a tuple of small ints


class NcclCommunicator(MPICommunicator):
    name = "NCCL"

    def __init__(self, mpi: MPICommunicator):
        import cupy
        from cupy.cuda import nccl

        self.__dict__.update(mpi.__dict__)  # rank, world_size, local_rank, the MPI communicator
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        # the unique id is 128 bytes: sent as an integer array, never pickled
        uid = np.array(nccl.get_unique_id() if self.rank == 0 else [0] * UNIQUE_ID_BYTES, dtype=np.int64)
        MPICommunicator.broadcast_(self, uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.world_size, tuple(int(x) for x in uid), self.rank)
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _nccl_type(self, array):
        kind = self._types.get(np.dtype(array.dtype))
        if kind is None or not array.flags.c_contiguous:
            raise TypeError(f"NCCL collectives take contiguous float16/32/64 arrays, got {array.dtype} "
                            f"(contiguous: {array.flags.c_contiguous})")
        return kind

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def allreduce_(self, array: Array) -> Array:
        if backend.device_of(array) == "cpu":
            return super().allreduce_(array)
        ptr = array.data.ptr  # in place: NCCL allows the send and receive buffers to be the same
        self.nccl_comm.allReduce(ptr, ptr, array.size, self._nccl_type(array), self.nccl.NCCL_SUM, self._stream())
        return array

    def broadcast_(self, array: Array, root: int = 0) -> Array:
        if backend.device_of(array) == "cpu":
            return super().broadcast_(array, root)
        self.nccl_comm.bcast(array.data.ptr, array.size, self._nccl_type(array), root, self._stream())
        return array

    def allgather_(self, array: Array) -> Array:
        if backend.device_of(array) == "cpu":
            return super().allgather_(array)
        count = array.size // self.world_size
        # in place: rank r's slice starts at r * count, the layout NCCL's in-place allGather expects
        send = array.data.ptr + self.rank * count * array.itemsize
        self.nccl_comm.allGather(send, array.data.ptr, count, self._nccl_type(array), self._stream())
        return array

    def abort(self, code: int = 1) -> None:
        try:
            self.nccl_comm.abort()
        finally:
            super().abort(code)
