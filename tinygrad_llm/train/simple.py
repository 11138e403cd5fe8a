"""Chapter 5's training loop, as the book writes it: ``train_model_simple`` and its helpers.

    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, device="cpu", num_epochs=10,
        eval_freq=5, eval_iter=5, start_context="Every effort moves you", tokenizer=tokenizer)

The configurable loop with checkpoints, schedules and resume is ``Trainer`` (trainer.py); its fast step
(batch parts on the cores, mixed precision, several processes) is train/step.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tinygrad_llm.generate import generate, text_to_token_ids, token_ids_to_text
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.losses import calc_loss_batch, host_losses, mean_loss_on_device

if TYPE_CHECKING:
    from tinygrad_llm.model.gpt import GPTModel
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tensor import Tensor
    from tinygrad_llm.tokenizer.base import Tokenizer
    from tinygrad_llm.train.parallel import DataParallel


def evaluate_model(
    model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    device: str | None,
    eval_iter: int,
    loss_batch: Callable[..., Tensor] | None = None,
    parallel: DataParallel | None = None,
) -> tuple[float, float]:
    """Mean loss over the first ``eval_iter`` batches of each loader, in eval mode (dropout off);
    ``loss_batch`` as in ``calc_loss_loader``; with ``parallel`` (data-parallel) each process scores its rows.
    One process copies both losses to the host at once (one wait for a GPU per evaluation)."""
    was_training = model.training
    model.eval()
    with no_grad():
        if parallel is not None:
            train_loss = parallel.loss_loader(train_loader, model, device, eval_iter, loss_batch)
            val_loss = parallel.loss_loader(val_loader, model, device, eval_iter, loss_batch)
        else:
            losses = [
                mean_loss_on_device(loader, model, device, eval_iter, loss_batch)
                for loader in (train_loader, val_loader)
            ]
            train_loss, val_loss = host_losses(losses)
    model.train(was_training)
    return train_loss, val_loss


def generate_and_print_sample(
    model: GPTModel, tokenizer: Tokenizer, device: str | None, start_context: str, max_new_tokens: int = 50
) -> str:
    """Greedy continuation of ``start_context``, printed on one line (as the book) and returned."""
    context_size = model.config.context_length
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate(model, encoded, max_new_tokens=max_new_tokens, context_size=context_size)
    text = token_ids_to_text(token_ids, tokenizer)
    print(text.replace("\n", " "))
    return text


def train_model_simple(
    model: GPTModel,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    device: str | None,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: Tokenizer,
) -> tuple[list[float], list[float], list[int]]:
    """Train for ``num_epochs``; every ``eval_freq`` steps log the train and validation loss; after every
    epoch print a sample of ``start_context``. Returns (train_losses, val_losses, track_tokens_seen), one
    entry per evaluation, as the book.

    The step is the book's four lines, one process, fp32. The command line's path (``tinygrad-llm train``,
    batch parts on the cores: train/step.py) runs the same step 1.6 times as fast
    (1.58x at the mini size, batch 12, on 2 idle cores: benchmarks/book_loop.py, 2026-12-07; the same speed at
    --threads 1, where the batch is one part); it adds mixed precision and data parallelism too.
    """
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # reset the gradients of the previous step
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # the gradients of the loss
            optimizer.step()  # update the weights with them
            tokens_seen += input_batch.size
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen
