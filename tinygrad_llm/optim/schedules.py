"""Learning-rate schedules: linear warmup, then cosine decay to a floor (the book's appendix D, nanoGPT).

    lr
    max_lr ┤      ╭──╮
           │     ╱    ╲__
           │    ╱        ╲__
    min_lr ┤   ╱            ╲___________
    init   ┤──╯
           └──┴──────────────┴──────────► step
           0  warmup_steps   total_steps

``lr_at(step, ...)`` is the formula; ``WarmupCosineLR`` applies it to an optimiser's groups as PyTorch's
schedulers do (construct it after the optimiser, call ``scheduler.step()`` after each ``optimizer.step()``),
and ``LambdaLR`` is PyTorch's: each group's lr = its initial lr × ``lr_lambda(step)``. Both have
``state_dict()``/``load_state_dict()`` for exact resume.
"""

from __future__ import annotations

import math

from tinygrad_llm.optim.optimizer import check_lr


def lr_at(
    step: int, *, max_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0, initial_lr: float = 0.0
) -> float:
    """The learning rate of optimiser step ``step`` (0-based).

    - ``step < warmup_steps``: linear from ``initial_lr`` (at step 0) towards ``max_lr`` (reached at
      ``warmup_steps``), as the book: ``initial_lr + step · (max_lr − initial_lr) / warmup_steps``;
    - ``warmup_steps <= step < total_steps``: cosine from ``max_lr`` down to ``min_lr``,
      ``min_lr + (max_lr − min_lr) · ½(1 + cos(π · progress))``, progress = (step − warmup) / (total − warmup);
    - ``step >= total_steps``: ``min_lr`` (the floor; training past the schedule keeps it).
    """
    if step < 0:
        raise ValueError(f"lr_at: step must be >= 0, got {step}")
    if warmup_steps < 0 or total_steps < warmup_steps:
        raise ValueError(
            f"lr_at: need 0 <= warmup_steps <= total_steps, got warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if step < warmup_steps:
        return initial_lr + step * (max_lr - initial_lr) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LambdaLR:
    """Each group's lr = its initial lr × ``lr_lambda(step)``, as ``torch.optim.lr_scheduler.LambdaLR``.

    The constructor sets the lr of step 0; ``step()`` (after ``optimizer.step()``) moves to the next.
    The initial lr of each group is kept in the group as ``"initial_lr"``.
    """

    def __init__(self, optimizer, lr_lambda):
        self.optimizer = optimizer
        self.lr_lambda = lr_lambda
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_step = 0
        self._apply()

    def get_lr(self) -> list[float]:
        return [group["initial_lr"] * self.lr_lambda(self.last_step) for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, self.get_lr())):
            group["lr"] = check_lr(lr, f"scheduled lr of parameter group {i} at step {self.last_step}")

    def step(self) -> None:
        """Advance one optimiser step and set the groups' learning rates for it."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """JSON-able: the step count and the groups' initial learning rates."""
        return {
            "last_step": self.last_step,
            "initial_lrs": [group["initial_lr"] for group in self.optimizer.param_groups],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["initial_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"scheduler state has {len(state['initial_lrs'])} parameter groups, "
                f"the optimizer has {len(self.optimizer.param_groups)}"
            )
        for group, lr in zip(self.optimizer.param_groups, state["initial_lrs"]):
            group["initial_lr"] = lr
        self.last_step = int(state["last_step"])
        self._apply()


class WarmupCosineLR(LambdaLR):
    """Linear warmup then cosine decay (``lr_at``), the peak being each group's initial lr.

    ``min_lr`` and ``initial_lr`` are absolute learning rates, the same for every group.
    """

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0, initial_lr: float = 0.0):
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.min_lr = check_lr(min_lr, "min_lr")
        self.initial_lr = check_lr(initial_lr, "initial_lr")
        lr_at(0, max_lr=1.0, total_steps=self.total_steps, warmup_steps=self.warmup_steps)  # validates
        super().__init__(optimizer, lr_lambda=None)

    def get_lr(self) -> list[float]:
        return [
            lr_at(
                self.last_step,
                max_lr=group["initial_lr"],
                total_steps=self.total_steps,
                warmup_steps=self.warmup_steps,
                min_lr=self.min_lr,
                initial_lr=self.initial_lr,
            )
            for group in self.optimizer.param_groups
        ]
