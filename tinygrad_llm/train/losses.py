"""The book's loss helpers (chapter 5): the loss of one batch, the average over a loader, perplexity."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.tensor import Tensor, no_grad

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.nn.module import Module


def calc_loss_batch(
    input_batch: Array | Tensor, target_batch: Array | Tensor, model: Module, device: str | None = None
) -> Tensor:
    """Mean cross-entropy of the model's next-token logits against the targets.

    input_batch, target_batch: integer arrays or Tensors (B, T), the targets being the inputs shifted by
    one, on the host or on the model's device; they are computed where the model is (``device``, the book's
    argument, is accepted for its signature: the model's own device decides).
    Returns a one-element Tensor (call ``.backward()`` on it to train).
    """
    # Host batches stay on the host here: the model and the loss check their ids there (a check on the GPU
    # waits for it), then move them to the model's device.
    inputs = input_batch.data if isinstance(input_batch, Tensor) else input_batch
    targets = target_batch.data if isinstance(target_batch, Tensor) else target_batch
    logits = model(inputs)  # (B, T) -> (B, T, vocab)
    return F.cross_entropy(logits, targets)  # (B, T, vocab) against (B, T) -> ()


def calc_loss_loader(
    data_loader: Iterable,
    model: Module,
    device: str | None = None,
    num_batches: int | None = None,
    loss_batch: Callable[..., Tensor] | None = None,
) -> float:
    """Average of ``calc_loss_batch`` over the first ``num_batches`` batches of ``data_loader`` (all when None).

    data_loader: any iterable of (inputs, targets) pairs; an empty one gives NaN, as the book. No gradients
    are recorded (wrap a training step yourself); the model's mode is left as it is. ``loss_batch`` replaces
    the per-batch loss (chapter 6 scores the last token's class logits instead). The losses are summed on
    the model's device and copied to the host once (one wait for a GPU, not one per batch).
    """
    loss = mean_loss_on_device(data_loader, model, device, num_batches, loss_batch)
    return float("nan") if loss is None else backend.host_floats([loss])[0]


def mean_loss_on_device(
    data_loader: Iterable,
    model: Module,
    device: str | None = None,
    num_batches: int | None = None,
    loss_batch: Callable[..., Tensor] | None = None,
) -> Array | None:
    """``calc_loss_loader``'s average left on the model's device, a float64 0-d array (None when no batch was
    scored), for a caller that copies it to the host with its other numbers (``backend.host_floats``)."""
    loss_batch = loss_batch or calc_loss_batch
    if num_batches is not None and num_batches < 0:
        raise ValueError(f"calc_loss_loader: num_batches must be >= 0 or None, got {num_batches}")
    try:
        available = len(data_loader)
    except TypeError:  # a plain iterator: take what it gives
        available = None
    if available == 0 or num_batches == 0:
        return None
    if num_batches is not None and available is not None:
        num_batches = min(num_batches, available)
    total, count = None, 0
    with no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if num_batches is not None and i >= num_batches:
                break
            loss = loss_batch(input_batch, target_batch, model, device).data.astype(np.float64)
            total = loss if total is None else total + loss
            count += 1
    return total / count if count else None


def host_losses(losses: list) -> list[float]:
    """Losses from ``mean_loss_on_device`` (None: no batch) as floats (NaN for None), in one copy to the host."""
    scored = [loss for loss in losses if loss is not None]
    host = iter(backend.host_floats(scored) if scored else [])
    return [float("nan") if loss is None else next(host) for loss in losses]


def perplexity(loss: float | Tensor) -> float:
    """exp(loss): the number of tokens the model is, on average, as unsure between as a uniform choice."""
    loss = float(loss.item() if isinstance(loss, Tensor) else loss)
    return math.exp(loss) if loss < 709 else float("inf")  # exp overflows a float beyond ~709
