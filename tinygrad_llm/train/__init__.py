"""Training: the book's loss helpers and loops, and the configurable Trainer.

    from tinygrad_llm.train import train_model_simple, calc_loss_loader     # chapter 5, as the book
    from tinygrad_llm.train import train_model, find_highest_gradient       # appendix D

The book's loops step as the book prints them; the fast step (batch parts on the cores, mixed precision,
several processes) of the Trainer and the command line is ``train.step.train_step``.
"""

from tinygrad_llm.train.appendix_d import find_highest_gradient, train_model
from tinygrad_llm.train.losses import calc_loss_batch, calc_loss_loader, perplexity
from tinygrad_llm.train.plot import plot_losses, plot_values
from tinygrad_llm.train.simple import evaluate_model, generate_and_print_sample, train_model_simple

__all__ = [
    "calc_loss_batch",
    "calc_loss_loader",
    "evaluate_model",
    "find_highest_gradient",
    "generate_and_print_sample",
    "perplexity",
    "plot_losses",
    "plot_values",
    "train_model",
    "train_model_simple",
]
