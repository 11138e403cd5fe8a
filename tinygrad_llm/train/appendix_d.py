"""Appendix D's training loop, as the book writes it: linear warmup, cosine decay, gradient clipping.

    train_losses, val_losses, tokens_seen, lrs = train_model(
        model, train_loader, val_loader, optimizer, device="cpu", n_epochs=15, eval_freq=5, eval_iter=1,
        start_context="Every effort moves you", tokenizer=tokenizer, warmup_steps=20, initial_lr=1e-5,
        min_lr=1e-5)
    find_highest_gradient(model)     # the largest gradient element, to see what clipping does

The optimizer's learning rate is the peak: the loop overwrites every group's "lr" at each step. The
configurable loop with the same schedule, checkpoints and resume is ``Trainer`` (trainer.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tinygrad_llm import backend
from tinygrad_llm.optim import clip_grad_norm_
from tinygrad_llm.train.losses import calc_loss_batch
from tinygrad_llm.train.simple import evaluate_model, generate_and_print_sample

if TYPE_CHECKING:
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tokenizer.base import Tokenizer


def find_highest_gradient(model: Module) -> float | None:
    """The largest gradient element over all parameters (None when no parameter has a gradient), as the
    book's D.3: compare it before and after ``clip_grad_norm_``."""
    max_grad = None
    for param in model.parameters():
        if param.grad is not None:
            largest = float(backend.to_numpy(param.grad.max()))
            if max_grad is None or largest > max_grad:
                max_grad = largest
    return max_grad


def train_model(
    model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    device: str | None,
    n_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None,
    tokenizer: Tokenizer | None,
    warmup_steps: int,
    initial_lr: float = 3e-05,
    min_lr: float = 1e-6,
    log: Callable[[str], object] | None = print,
) -> tuple[list[float], list[float], list[int], list[float]]:
    """The book's D.4 loop: ``warmup_steps`` of linear warmup from ``initial_lr`` to the optimizer's lr, then
    cosine decay to ``min_lr``; gradients clipped to norm 1.0 once warmup is over (the book's corrected
    version: from step ``warmup_steps`` on). A sample of ``start_context`` after each epoch when a tokenizer
    is given. Returns (train_losses, val_losses, track_tokens_seen, track_lrs).

    The step is the book's, one process, fp32. The command line's path (``tinygrad-llm train``: the same
    schedule and clipping, batch parts on the cores: train/step.py) runs the same step 1.6 times
    as fast (1.58x at the mini size, batch 12, on 2 idle cores: benchmarks/book_loop.py, 2026-12-07; the same speed at
    --threads 1, where the batch is one part); it adds mixed precision and data parallelism.
    """
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_training_steps = len(train_loader) * n_epochs
    lr_increment = (peak_lr - initial_lr) / warmup_steps if warmup_steps > 0 else 0.0
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            if global_step < warmup_steps:  # D.1 linear warmup
                lr = initial_lr + global_step * lr_increment
            else:  # D.2 cosine decay
                progress = (global_step - warmup_steps) / max(total_training_steps - warmup_steps, 1)
                lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if global_step >= warmup_steps:  # D.3 gradient clipping, after warmup
                clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens_seen += input_batch.size
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                if log:
                    log(
                        f"Ep {epoch + 1} (Iter {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                    )
        if tokenizer is not None and start_context:
            generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen, track_lrs
