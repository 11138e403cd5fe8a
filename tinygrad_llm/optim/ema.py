"""An exponential moving average of a model's weights (timm's ``ModelEmaV2``, torch's ``AveragedModel`` with
``get_ema_multi_avg_fn``; nanoGPT-style model averaging).

    ema = ExponentialMovingAverage(model, decay=0.995)
    for inputs, targets in loader:
        ...; optimizer.step()
        ema.update(model)                          # after every step
    with ema.average_parameters(model):            # evaluate (or save) the averaged weights
        accuracy = calc_accuracy_loader(val_loader, model)

After each step, every parameter's average moves towards the new weights:

    θ_ema ← d·θ_ema + (1 − d)·θ,   d = min(decay, (n − 1) / n)   at the n-th update (n = 1, 2, ...)

The cap (n − 1)/n makes the first 1/(1 − decay) updates a plain mean of the weights seen so far (the first
update copies them), so the random initial weights never linger in the average, however few steps there
are; after that it forgets with a time constant of 1/(1 − decay) steps. ``decay=1`` never forgets: the
average stays the plain mean of every update (stochastic weight averaging's, updated once per epoch). Why:
with small batches the weights at any one step carry that step's noise; their average over the last few
hundred steps scores steadier, and often better, than any single step's.

The averages are copies in each parameter's dtype and on its device, one per parameter that learns (frozen
ones never change, so they need none).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from tinygrad_llm import backend

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tinygrad_llm.nn.module import Module


class ExponentialMovingAverage:
    """Exponential moving average of the parameters of ``model`` that learn (``requires_grad``)."""

    def __init__(self, model, decay: float = 0.999):
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: p.data.copy() for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        """The decay the next update will use: a plain running mean until 1/(1 - decay) updates (for ever
        with decay 1)."""
        n = self.num_updates + 1
        return min(self.decay, (n - 1) / n)

    def update(self, model: Module) -> None:
        """Fold the model's current weights into the average (call after every optimizer step)."""
        decay = self.current_decay()
        params = dict(model.named_parameters())
        for name, average in self.shadow.items():
            # in place: average = decay * average + (1 - decay) * weight
            average *= decay
            average += (1.0 - decay) * params[name].data
        self.num_updates += 1

    def state_dict(self) -> dict:
        """{name: copy of the averaged weights}, on the host: for ``model.load_state_dict(..., strict=False)``."""
        return {name: backend.to_numpy(average).copy() for name, average in self.shadow.items()}

    def copy_to(self, model: Module) -> None:
        """Put the averaged weights into ``model`` (its own weights are overwritten)."""
        model.load_state_dict(self.shadow, strict=False)

    @contextlib.contextmanager
    def average_parameters(self, model: Module) -> Iterator[Module]:
        """Inside the ``with``, the model holds the averaged weights; its own come back afterwards."""
        own = {name: p.data.copy() for name, p in model.named_parameters() if name in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(own, strict=False)
