"""Averaging gradients over processes: one flat buffer, reduced bucket by bucket in place.

After ``backward`` each process holds the gradient of its own share of the batch. ``reduce()`` copies every
gradient into one contiguous buffer (parameters in a fixed order, the same on every process), sums it over
the processes with in-place Allreduce, one bucket of ``bucket_mb`` megabytes at a time, scales by
1 / world_size, and leaves each ``p.grad`` a view into the buffer. The mean of the processes' gradients is
the gradient of the whole batch (equal shares), so the update is the one a single process would make with
the whole batch, up to the order of the float32 sums; every process then applies the same update.

Bucket size trades the number of calls (latency each) against how long one call holds the buffer; see
``benchmarks/dist.py`` for the measured effect. ``bucket_mb=None`` reduces the whole buffer at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tinygrad_llm import backend

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.nn import Parameter

DEFAULT_BUCKET_MB = 25.0  # torch DDP's default; benchmarks/dist.py measures the choice on this engine


class GradientReducer:
    """``GradientReducer(params, comm, bucket_mb=25)``: ``reduce()`` after backward, before clipping and the
    optimizer step. Parameters that do not require a gradient are left out."""

    def __init__(self, params, comm, bucket_mb: float | None = DEFAULT_BUCKET_MB):
        self.comm = comm
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("GradientReducer: no parameter requires a gradient")
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"GradientReducer: parameters of several dtypes {sorted(map(str, dtypes))}; "
                             "one flat buffer needs one dtype")
        dtype = dtypes.pop()
        self.offsets, total = [], 0
        for p in self.params:
            self.offsets.append(total)
            total += p.data.size
        self.numel = total
        # padded to a multiple of world_size so that ZeRO can split it into equal slices
        padded = -(-total // comm.world_size) * comm.world_size
        xp = backend.get_array_module(self.params[0].data)
        self.flat = xp.zeros(padded, dtype=dtype)
        step = padded if bucket_mb is None else max(int(bucket_mb * 2**20) // dtype.itemsize, 1)
        self.buckets = [(lo, min(lo + step, padded)) for lo in range(0, padded, step)]

    def reduce(self) -> None:
        """Average every parameter's gradient over the processes (a parameter without one counts as zeros,
        so that every process updates the same parameters)."""
        flat = self.flat
        for p, offset in zip(self.params, self.offsets):
            n = p.data.size
            if p.grad is None:
                flat[offset:offset + n] = 0
            else:
                flat[offset:offset + n] = p.grad.reshape(-1)
        for lo, hi in self.buckets:
            self.comm.allreduce_(flat[lo:hi])
        flat *= flat.dtype.type(1.0 / self.comm.world_size)
        for p, offset in zip(self.params, self.offsets):
            p.grad = flat[offset:offset + p.data.size].reshape(p.data.shape)


def broadcast_parameters(parameters: Iterable[Parameter], comm: Communicator, root: int = 0) -> None:
    """Give every process ``root``'s parameter values (in place), so that they start identical."""
    for p in parameters:
        comm.broadcast_(p.data, root)
