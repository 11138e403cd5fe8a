"""Data-parallel communication: one small interface, three communicators.

    comm = dist.init(device)          # under mpiexec: MPI (NCCL through CuPy when device is "cuda");
                                      # otherwise one process
    comm.rank, comm.world_size        # this process, and how many train together
    comm.allreduce_(flat_array)       # sum over processes, in place (host arrays: MPI; CuPy arrays: NCCL)
    comm.broadcast_(array, root=0)    # rank 0's values everywhere, in place
    comm.sum(3.5)                     # a Python float summed over processes

``GradientReducer`` averages a model's gradients with bucketed in-place Allreduce; ``ZeroAdamW`` shards
AdamW's moments over the processes (ZeRO stage 1). The trainer takes a communicator and calls these in
a few places; with ``SingleProcess`` every call is a no-op and training is what it always was.
"""
from tinygrad_llm.dist.comm import Communicator, DistError, MPICommunicator, SingleProcess
from tinygrad_llm.dist.launch import current, init
from tinygrad_llm.dist.reducer import GradientReducer, broadcast_parameters
from tinygrad_llm.dist.zero import ZeroAdamW

__all__ = ["Communicator", "DistError", "MPICommunicator", "SingleProcess", "current", "init", "GradientReducer",
           "broadcast_parameters", "ZeroAdamW"]
