"""What a training loop needs to run data-parallel: each process's rows of a batch, losses over processes.

Every process draws the same global batch from the same seeded loader (``batch_size * world_size`` rows)
and takes its own rows of it, so the processes see disjoint shares of one stream, and N processes with
batch b see exactly the windows one process with batch N*b would. Losses of a share are weighted by its
rows, so a mean over processes is the mean one process would compute over the whole batch.

The book's loops (``train_model_simple``, ``train_classifier_simple``) take a ``DataParallel`` and make two
calls per step: ``parallel.rows(batch)`` before the forward pass, ``parallel.average_gradients()`` before
``optimizer.step()``; ``Trainer`` does the same through its communicator.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from tinygrad_llm.dist import GradientReducer, SingleProcess, broadcast_parameters
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.losses import calc_loss_batch, calc_loss_loader
from tinygrad_llm.train.signals import HANDLED, Interrupted


def local_rows(array, comm):
    """Process ``comm.rank``'s rows of a batch: rows [r*n/N, (r+1)*n/N) of its n rows (b each when n = b*N)."""
    n, world = len(array), comm.world_size
    return array[comm.rank * n // world:(comm.rank + 1) * n // world]


def calc_loss_loader_parallel(data_loader, model, device, num_batches, comm, loss_batch=None) -> float:
    """``calc_loss_loader`` over global batches, each process scoring its rows; the same number on every
    process (the mean over batches of each whole batch's loss, as one process would compute it)."""
    if comm.world_size == 1:
        return calc_loss_loader(data_loader, model, device, num_batches, loss_batch)
    loss_batch = loss_batch or calc_loss_batch
    total, count = 0.0, 0
    with no_grad():
        for i, (inputs, targets) in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            mine = local_rows(inputs, comm)
            if len(mine):  # a short last batch may leave a process no rows
                total += loss_batch(mine, local_rows(targets, comm), model, device).item() * len(mine) / len(inputs)
            count += 1
    return comm.sum(total) / count if count else float("nan")


class DataParallel:
    """The calls a training loop makes to train data-parallel over ``comm``'s processes (with one process,
    each is a no-op). Construction makes every process start from process 0's parameters."""

    def __init__(self, comm, model, optimizer):
        self.comm = comm or SingleProcess()
        self.reducer = None
        if self.comm.world_size > 1:
            broadcast_parameters(model.parameters(), self.comm)
            self.reducer = GradientReducer([p for g in optimizer.param_groups for p in g["params"]], self.comm)

    def rows(self, batch):
        """This process's rows of a global batch (an array, or a dict of arrays such as DPO's)."""
        if isinstance(batch, dict):
            return {key: self.rows(value) if getattr(value, "ndim", 0) else value for key, value in batch.items()}
        return local_rows(batch, self.comm)

    def average_gradients(self) -> None:
        if self.reducer is not None:
            self.reducer.reduce()

    def loss_loader(self, data_loader, model, device, num_batches, loss_batch=None) -> float:
        return calc_loss_loader_parallel(data_loader, model, device, num_batches, self.comm, loss_batch)


@contextlib.contextmanager
def stop_together(comm):
    """Ctrl-C and SIGTERM in a data-parallel run: a signal is only noted; the loop calls the yielded
    ``check()`` after each step, where the processes agree (one scalar Allreduce) and all raise
    ``Interrupted`` at the same step. A process that stopped on its own would leave the others waiting in a
    collective for it forever. With one process this does nothing (the usual handlers stay)."""
    if comm.world_size == 1 or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in HANDLED}

    def check() -> None:
        if comm.sum(float(bool(received))) > 0:  # some process was signalled: every process stops here
            raise Interrupted(received[0] if received else signal.SIGINT)

    try:
        yield check
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
