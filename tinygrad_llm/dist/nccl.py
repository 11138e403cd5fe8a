"""NCCL through CuPy for arrays on CUDA GPUs, one GPU per process.

The processes are started by ``mpiexec`` as usual; MPI chooses each process's GPU (its rank among the
processes of its machine) and carries NCCL's unique id from rank 0 to the others (as llm.c and
``cupyx.distributed`` do). Then every collective on a CuPy array is one NCCL call on the current stream;
host (NumPy) arrays and scalars still go through MPI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.dist.comm import MPICommunicator

UNIQUE_ID_BYTES = 128  # ncclUniqueId: bytes from CuPy 14's nccl.get_unique_id(), a tuple of C chars before
# How rank 0's CuPy gave the id, sent ahead of its bytes: every rank hands NcclCommunicator the same form back.
ID_BYTES, ID_SIGNED_CHARS, ID_UNSIGNED_CHARS = 0, 1, 2


class NcclCommunicator(MPICommunicator):
    name = "NCCL"

    def __init__(self, mpi: MPICommunicator):
        import cupy
        from cupy.cuda import nccl

        self.__dict__.update(mpi.__dict__)  # rank, world_size, local_rank, the MPI communicator
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = share_unique_id(mpi, nccl)
        self.nccl_comm = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self._types = {
            np.dtype(np.float16): nccl.NCCL_FLOAT16,
            np.dtype(np.float32): nccl.NCCL_FLOAT32,
            np.dtype(np.float64): nccl.NCCL_FLOAT64,
        }

    def _nccl_type(self, array):
        kind = self._types.get(np.dtype(array.dtype))
        if kind is None or not array.flags.c_contiguous:
            raise TypeError(
                f"NCCL collectives take contiguous float16/32/64 arrays, got {array.dtype} "
                f"(contiguous: {array.flags.c_contiguous})"
            )
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


def share_unique_id(mpi: MPICommunicator, nccl: Any) -> bytes | tuple[int, ...]:
    """Rank 0's ``nccl.get_unique_id()`` on every process of ``mpi``, in the form ``nccl.NcclCommunicator``
    takes: ``bytes`` on CuPy 14 (``NcclCommunicator(int ndev, bytes commId, int rank)``), a tuple of 128 C
    chars before it (signed on x86, unsigned where char is). Sent as 1 + 128 uint8s through MPI, never pickled;
    only rank 0 calls get_unique_id (each call opens NCCL's bootstrap socket)."""
    message = np.zeros(1 + UNIQUE_ID_BYTES, dtype=np.uint8)  # the form, then the id's bytes
    if mpi.rank == 0:
        uid = nccl.get_unique_id()
        if len(uid) != UNIQUE_ID_BYTES:
            raise RuntimeError(f"nccl.get_unique_id() returned {len(uid)} values, expected {UNIQUE_ID_BYTES}")
        if isinstance(uid, (bytes, bytearray)):
            message[0], message[1:] = ID_BYTES, np.frombuffer(uid, dtype=np.uint8)
        else:  # C chars as Python ints: -128..127 (signed char) or 0..255; both are the same 128 bytes
            values = np.array(uid, dtype=np.int64)
            message[0] = ID_SIGNED_CHARS if values.min() < 0 else ID_UNSIGNED_CHARS
            message[1:] = values.astype(np.uint8)  # two's complement: -1 -> 255
    mpi.broadcast_(message, root=0)
    form, raw = int(message[0]), message[1:]
    if form == ID_BYTES:
        return raw.tobytes()
    return tuple(raw.view(np.int8 if form == ID_SIGNED_CHARS else np.uint8).tolist())
