"""What a training loop needs to run data-parallel: each process's rows of a batch, losses over processes.

Every process draws the same global batch from the same seeded loader (``batch_size * world_size`` rows)
and takes its own rows of it, so the processes see disjoint shares of one stream, and N processes with
batch b see exactly the windows one process with batch N*b would. Losses of a share are weighted by its
rows, so a mean over processes is the mean one process would compute over the whole batch.
"""
from __future__ import annotations

from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.losses import calc_loss_batch, calc_loss_loader


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
