"""Training: the book's loss helpers (and the training loop, evaluation, checkpoints)."""
from tinygrad_llm.train.losses import calc_loss_batch, calc_loss_loader, perplexity

__all__ = ["calc_loss_batch", "calc_loss_loader", "perplexity"]
