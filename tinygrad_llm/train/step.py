"""One training step on the fast path: what the ``Trainer`` and the command line's fine-tuning loops run in
place of the book's four lines (``optimizer.zero_grad()``, ``loss = ...``, ``loss.backward()``,
``optimizer.step()``), with the same result up to the order of floating-point sums.

    loss = train_step(model, optimizer, [(inputs, targets)], device, amp, parallel, grad_clip=1.0)

1. ``optimizer.zero_grad()``;
2. for each micro-batch: this process's rows of it (data parallel), its loss and backward under autocast
   (mixed precision), the batch cut into parts computed side by side on the CPU's cores
   (``runtime.batch_parts``), scaled by 1 / the number of micro-batches, so that ``.grad`` sums to the
   gradient of their mean;
3. the gradients averaged over the processes (data parallel);
4. the update: unscale (fp16), clip the global norm to ``grad_clip``, ``optimizer.step()`` (skipped by
   fp16's loss scaler after an inf/NaN gradient).

Steps 1-3 are ``backward_step``, step 4 ``update_step``. ``train_step`` (and the Trainer) run step 4 in its
two halves (``MixedPrecision.unscale_and_clip``, then ``finish_step``): the first stays on the GPU, so that
one copy to the host (``read_loss``) brings the loss and fp16's inf/NaN verdict together, after the step's
work is queued: one wait for a GPU per optimizer step. The Trainer checks the loss between the halves, so an
interruption before the second rewinds the step; signals are held during the second (train/signals.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tinygrad_llm import backend
from tinygrad_llm.amp import MixedPrecision
from tinygrad_llm.runtime import backward_in_parts
from tinygrad_llm.train.losses import calc_loss_batch

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tensor import Tensor
    from tinygrad_llm.train.parallel import DataParallel

    Batches = Sequence[tuple[Array, Array]]


def backward_step(
    model: Module,
    optimizer: Optimizer,
    batches: Batches,
    device: str | None = None,
    amp: MixedPrecision | None = None,
    parallel: DataParallel | None = None,
    loss_batch: Callable[..., Tensor] = calc_loss_batch,
) -> Array:
    """Steps 1-3: zero the gradients, then the loss and backward of every (inputs, targets) micro-batch of
    ``batches``, gradients averaged over ``parallel``'s processes (a ``train.parallel.DataParallel``; None:
    one process). ``amp``: a ``MixedPrecision`` (None: fp32, whose backward is ``loss.backward()``).
    Returns this process's mean loss over the micro-batches (a float64 0-d array: on a GPU, no wait)."""
    amp = amp or MixedPrecision("fp32", model.device)
    optimizer.zero_grad()
    scale = 1.0 / len(batches)
    total = 0.0
    for inputs, targets in batches:
        if parallel is not None:  # this process's rows of the global batch
            inputs, targets = parallel.rows(inputs), parallel.rows(targets)
        with amp.autocast():  # .grad sums the micro-batches: the gradient of their mean
            total = total + backward_in_parts(loss_batch, inputs, targets, model, device, amp, scale=scale)
    if parallel is not None:
        parallel.average_gradients()  # every process now holds the whole batch's gradient
    return total / len(batches)


def update_step(
    model: Module, optimizer: Optimizer, amp: MixedPrecision | None = None, grad_clip: float | None = None
) -> bool:
    """Step 4: clip to ``grad_clip`` (None or 0: no clipping) and update, through ``amp``'s loss scaler.
    Returns True when the parameters moved (fp16 skips a step with an inf/NaN gradient)."""
    amp = amp or MixedPrecision("fp32", model.device)
    return amp.step(optimizer, model.parameters(), grad_clip)


def train_step(
    model: Module,
    optimizer: Optimizer,
    batches: Batches,
    device: str | None = None,
    amp: MixedPrecision | None = None,
    parallel: DataParallel | None = None,
    loss_batch: Callable[..., Tensor] = calc_loss_batch,
    grad_clip: float | None = None,
) -> float:
    """Steps 1-4: one optimizer step over ``batches`` (a list of (inputs, targets) micro-batches). Returns
    this process's mean loss, copied to the host together with fp16's inf/NaN verdict: one wait for a GPU."""
    amp = amp or MixedPrecision("fp32", model.device)
    loss = backward_step(model, optimizer, batches, device, amp, parallel, loss_batch)
    amp.unscale_and_clip(optimizer, model.parameters(), grad_clip)
    loss = read_loss(loss, amp)
    amp.finish_step(optimizer)
    return loss


def read_loss(loss: Array, amp: MixedPrecision) -> float:
    """The step's loss (a 0-d array from ``backward_step``) as a float, and ``amp``'s inf/NaN verdict (fp16,
    after ``unscale_and_clip``) handed to its scaler: both copied to the host at once, one wait for a GPU."""
    found_inf = amp.scaler.unread_found_inf()
    loss, *verdict = backend.host_floats([loss] if found_inf is None else [loss, found_inf])
    if verdict:
        amp.scaler.read_found_inf(bool(verdict[0]))
    return loss
