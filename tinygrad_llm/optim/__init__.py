"""Optimisers, learning-rate schedules and gradient clipping, with PyTorch's names and semantics.

    from tinygrad_llm.optim import AdamW, WarmupCosineLR, clip_grad_norm_, param_groups_for_weight_decay

    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=4e-4)
    scheduler = WarmupCosineLR(optimizer, warmup_steps=100, total_steps=2000, min_lr=4e-5)
    for step in range(2000):
        optimizer.zero_grad()
        for micro_batch in range(grad_accum):              # gradient accumulation
            inputs, targets = next(batches)
            loss = F.cross_entropy(model(inputs), targets)
            (loss / grad_accum).backward()                 # .grad accumulates (+=) across backward calls
        clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        scheduler.step()

Gradient accumulation needs nothing from the optimiser: ``Tensor.backward`` adds into ``.grad`` of each
leaf, so k micro-batches whose losses are divided by k leave in ``.grad`` the gradient of the mean loss
over the k micro-batches — what one batch k times larger would give (dropout aside). ``zero_grad()``
(``.grad = None``) starts the next accumulation.

Modules:
    optimizer   Optimizer base: param groups, zero_grad, state_dict/load_state_dict
    adamw       AdamW (its arithmetic: ``functional.adamw_update_``, reference and compiled kernel)
    sgd         SGD with momentum / Nesterov
    schedules   lr_at (warmup + cosine), LambdaLR, WarmupCosineLR
    clip        clip_grad_norm_ (clip_grad_norm_on_device_: no wait for a GPU), grad_norms_by_layer (per-layer
                gradient norms, for plots)
    ema         ExponentialMovingAverage: an exponential moving average of a model's weights
    groups      param_groups_for_weight_decay: decay linear weight matrices only
"""

from tinygrad_llm.optim.adamw import AdamW
from tinygrad_llm.optim.clip import clip_grad_norm_, clip_grad_norm_on_device_, grad_norms_by_layer
from tinygrad_llm.optim.ema import ExponentialMovingAverage
from tinygrad_llm.optim.groups import param_groups_for_weight_decay
from tinygrad_llm.optim.optimizer import Optimizer
from tinygrad_llm.optim.schedules import LambdaLR, WarmupCosineLR, lr_at
from tinygrad_llm.optim.sgd import SGD

__all__ = [
    "AdamW",
    "ExponentialMovingAverage",
    "LambdaLR",
    "Optimizer",
    "SGD",
    "WarmupCosineLR",
    "clip_grad_norm_",
    "clip_grad_norm_on_device_",
    "grad_norms_by_layer",
    "lr_at",
    "param_groups_for_weight_decay",
]
