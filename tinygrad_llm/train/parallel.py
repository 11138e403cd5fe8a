"""What a training loop needs to run data-parallel: each process's rows of a batch, losses over processes.

Every process draws the same global batch from the same seeded loader (``batch_size * world_size`` rows)
and takes its own rows of it, so the processes see disjoint shares of one stream, and N processes with
batch b see exactly the windows one process with batch N*b would. Losses of a share are weighted by its
rows, so a mean over processes is the mean one process would compute over the whole batch.

The fast step (train/step.py), which the ``Trainer`` and the command line's fine-tuning loops run, takes a
``DataParallel`` and makes two calls per step: ``parallel.rows(batch)`` before the forward pass,
``parallel.average_gradients()`` before the update. The book's loops stay single-process, as the book's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.dist import GradientReducer, SingleProcess, broadcast_parameters
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.losses import calc_loss_batch, calc_loss_loader

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.dist.zero import ZeroAdamW
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tensor import Tensor
    from tinygrad_llm.train.signals import SignalGuard

Rows = TypeVar("Rows")


def local_rows(array: Rows, comm: Communicator) -> Rows:
    """Process ``comm.rank``'s rows of a batch: rows [r*n/N, (r+1)*n/N) of its n rows (b each when n = b*N)."""
    n, world = len(array), comm.world_size
    return array[comm.rank * n // world : (comm.rank + 1) * n // world]


def calc_loss_loader_parallel(
    data_loader: Iterable,
    model: Module,
    device: str | None,
    num_batches: int | None,
    comm: Communicator,
    loss_batch: Callable[..., Tensor] | None = None,
) -> float:
    """``calc_loss_loader`` over global batches, each process scoring its rows; the same number on every
    process (the mean over batches of each whole batch's loss, as one process would compute it)."""
    if comm.world_size == 1:
        return calc_loss_loader(data_loader, model, device, num_batches, loss_batch)
    loss_batch = loss_batch or calc_loss_batch
    total, count = 0.0, 0  # this process's share, summed on the model's device: copied to the host once
    with no_grad():
        for i, (inputs, targets) in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            mine = local_rows(inputs, comm)
            if len(mine):  # a short last batch may leave a process no rows
                loss = loss_batch(mine, local_rows(targets, comm), model, device).data.astype(np.float64)
                total = total + loss * len(mine) / len(inputs)
            count += 1
    return comm.sum(backend.host_floats([total])[0]) / count if count else float("nan")


class DataParallel:
    """The calls a training loop makes to train data-parallel over ``comm``'s processes (with one process,
    each is a no-op). Construction makes every process start from process 0's parameters."""

    def __init__(self, comm: Communicator | None, model: Module, optimizer: Optimizer | ZeroAdamW):
        self.comm = comm or SingleProcess()
        self.reducer = None
        if self.comm.world_size > 1:
            broadcast_parameters(model.parameters(), self.comm)
            self.reducer = GradientReducer([p for g in optimizer.param_groups for p in g["params"]], self.comm)

    def rows(self, batch: Array | dict[str, Array] | None) -> Array | dict[str, Array] | None:
        """This process's rows of a global batch (an array, or a dict of arrays such as DPO's; None stays None)."""
        if batch is None:
            return None
        if isinstance(batch, dict):
            return {key: self.rows(value) if getattr(value, "ndim", 0) else value for key, value in batch.items()}
        return local_rows(batch, self.comm)

    def average_gradients(self) -> None:
        if self.reducer is not None:
            self.reducer.reduce()

    def loss_loader(
        self,
        data_loader: Iterable,
        model: Module,
        device: str | None,
        num_batches: int | None,
        loss_batch: Callable[..., Tensor] | None = None,
    ) -> float:
        return calc_loss_loader_parallel(data_loader, model, device, num_batches, self.comm, loss_batch)


@contextlib.contextmanager
def stop_together(comm: Communicator, guard: SignalGuard) -> Iterator[Callable[[], None]]:
    """Ctrl-C and SIGTERM in a data-parallel run: inside the block ``guard`` (a ``train.signals.SignalGuard``)
    only notes a signal; the loop calls the yielded ``check()`` after each step, where the processes agree
    (one scalar Allreduce) and all raise ``Interrupted`` at the same step. A process that stopped on its own
    would leave the others waiting in a collective for it forever. With one process this does nothing (the
    guard raises at once, as usual)."""
    if comm.world_size == 1:
        yield lambda: None
        return
    guard.at_checks = True
    try:
        yield lambda: guard.check(comm)
    finally:
        guard.at_checks = False
        guard.pending = None  # a signal after the last check: the processes agree to finish, as they are
