"""A training step's batch cut into parts that run side by side on the CPU's cores: data parallelism inside
one process, with the same bits at any load.

The matrix products of a small model are too small to share between threads (handing a block to a woken
thread costs about as much as computing it), and Python runs one thread at a time. A whole part of the
batch is big enough: each part's forward and backward run on their own thread, and NumPy's BLAS and our
Numba kernels release the GIL while they compute, so the parts overlap: nanoGPT's "baby" step took 40-42 ms
whole on one thread and 27-33 ms in two parts on two (idle 2-core machine, ``python benchmarks/load.py``).

Exactness: every loss of the book is a mean over the batch's targets, so the batch's loss is the sum of the
parts' means, each weighted by its share of the targets (targets equal to ``ignore_index``, the padding of
instruction data, count for none), and so is its gradient. The first part's backward adds its gradients
into .grad; every other part's are returned by ``tinygrad_llm.grad`` (.grad untouched, so the threads never
race on it) and added into .grad in part order once all are done. Each part draws its dropout masks from a
generator of its own, seeded from the main one. How many parts there are depends on the batch's shape and
the ``--threads`` setting only (``threads.batch_parts``); whether they run side by side or one after the other
depends on the cores free now. So a run gives the same bits on an idle machine and on a busy one, and a
resumed run equals a straight one. (It gives other bits than the whole batch at once, as ``--threads 1``
computes it: sums in another order.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.runtime import threads
from tinygrad_llm.tensor import Tensor, grad

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    from tinygrad_llm.backend import Array
    from tinygrad_llm.nn.module import Module

    class _LossScaler(Protocol):  # amp.MixedPrecision, which this layer must not import (amp imports optim)
        def backward(self, loss: Tensor) -> None: ...

        def grad(self, loss: Tensor, inputs: list) -> tuple: ...


IGNORE_INDEX = -100  # cross_entropy's default: targets that count for nothing


def split_count(inputs: Tensor | Array, model: Module) -> int:
    """How many parts ``backward_in_parts`` cuts this batch into for this model (1: no cut)."""
    data = inputs.data if isinstance(inputs, Tensor) else inputs
    if not isinstance(data, np.ndarray) or data.ndim == 0 or getattr(model, "device", "cpu") != "cpu":
        return 1  # GPU: one stream does it all
    parameters = sum(p.data.size for p in model.parameters())  # ~ multiply-adds per token of the forward pass
    return threads.batch_parts(len(data), data.size * parameters, parameters)


def backward_in_parts(
    loss_batch: Callable[..., Tensor],
    inputs: Tensor | Array,
    targets: Tensor | Array,
    model: Module,
    device: str,
    amp: _LossScaler | None = None,
    parts: int | None = None,
    scale: float = 1.0,
) -> Array:
    """``loss_batch(inputs, targets, model, device) * scale`` differentiated with the batch cut into ``parts``
    row blocks (default: ``split_count``), computed on the threads free now; returns the batch's loss,
    unscaled, as a float64 0-d array where the model is (on a GPU: no wait for it). Gradients are added into
    the parameters' .grad as one backward of the whole batch would.

    ``loss_batch`` must return the mean over its batch's targets (every loss of the book does). ``amp``: a
    ``MixedPrecision``, whose ``backward``/``grad`` scale the loss (fp16); None: ``loss.backward()``. Call it
    inside the autocast block, if any."""
    parts = split_count(inputs, model) if parts is None else parts
    if parts <= 1:
        loss = loss_batch(inputs, targets, model, device)
        _backward(amp, loss * scale if scale != 1.0 else loss)
        return loss.data.astype("float64")
    x = inputs.data if isinstance(inputs, Tensor) else inputs
    y = targets.data if isinstance(targets, Tensor) else targets
    cuts = [len(x) * i // parts for i in range(parts + 1)]
    rows = [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
    counted = [int(np.count_nonzero(y[lo:hi] != IGNORE_INDEX)) for lo, hi in rows]
    total = sum(counted)
    if total == 0:  # nothing to learn from: the whole batch's loss (NaN, as unsplit), computed once
        return backward_in_parts(loss_batch, inputs, targets, model, device, amp, 1, scale)
    seeds = backend.get_generator("cpu").integers(0, 2**63, size=len(rows))  # one stream per part: dropout

    kept = [i for i in range(len(rows)) if counted[i]]
    parameters = [p for p in model.parameters() if p.requires_grad]

    def part(i: int) -> tuple[float, tuple]:
        lo, hi = rows[i]
        with backend.use_generator(np.random.default_rng(int(seeds[i]))):
            loss = loss_batch(x[lo:hi], y[lo:hi], model, device)
            weighted = loss * (scale * counted[i] / total)
            if i == kept[0]:  # the first part adds into .grad itself (nothing else writes there meanwhile)
                _backward(amp, weighted)
                return float(loss.item()), ()
            return float(loss.item()), _grad(amp, weighted, parameters)

    results = threads.run_parallel([lambda i=i: part(i) for i in kept])
    for _, grads in results[1:]:  # in part order: the same sums whichever thread finished first
        for p, g in zip(parameters, grads):
            if g is None:  # a parameter this part's loss does not reach
                continue
            if p.grad is None:
                p.grad = g.data
            else:
                p.grad += g.data
    return np.float64(sum(loss * counted[i] / total for (loss, _), i in zip(results, kept)))


def _backward(amp, loss) -> None:
    if amp is None:
        loss.backward()
    else:
        amp.backward(loss)


def _grad(amp, loss, parameters) -> tuple:
    return grad(loss, parameters) if amp is None else amp.grad(loss, parameters)
