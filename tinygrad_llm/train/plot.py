"""Curves: training and validation loss against steps, with tokens seen on a second axis (the book's
``plot_losses``), and any other pair of curves (the book's ``plot_values``). matplotlib is optional (``pip install 'tinygrad-llm[plot]'``): without it the
plot is skipped with one notice."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from tinygrad_llm.files import atomic_write

_warned = False


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_losses(steps_seen, tokens_seen, train_losses, val_losses, path=None, xlabel: str = "Steps"):
    """Plot train and validation losses against ``steps_seen`` (epochs in the book), tokens seen on top.

    Writes a PNG to ``path`` atomically when given; returns the figure, or None without matplotlib.
    """
    return plot_values(steps_seen, tokens_seen, train_losses, val_losses, label="loss", path=path, xlabel=xlabel,
                       top_xlabel="Tokens seen")


def plot_values(epochs_seen, examples_seen, train_values, val_values, label: str = "loss", path=None,
                xlabel: str = "Epochs", top_xlabel: str = "Examples seen"):
    """The book's chapter-6 ``plot_values``: training and validation ``label`` (loss, accuracy, reward
    margin, ...) against ``epochs_seen``, with ``examples_seen`` on a second axis on top.

    The book saves ``f"{label}-plot.pdf"`` and shows the figure; here the figure is returned, and written to
    ``path`` (PNG unless the name ends in .pdf/.svg) atomically when given. None without matplotlib.
    """
    global _warned
    if not matplotlib_available():
        if not _warned:
            print("note: matplotlib is not installed, so no plot is drawn "
                  "(pip install 'tinygrad-llm[plot]')", file=sys.stderr)
            _warned = True
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel(label[:1].upper() + label[1:])
    ax1.legend()
    if len(examples_seen) > 1:
        ax2 = ax1.twiny()  # the same curves against examples (or tokens) seen, on the top axis
        ax2.plot(examples_seen, train_values, alpha=0)
        ax2.set_xlabel(top_xlabel)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        fmt = path.suffix[1:].lower() if path.suffix.lower() in (".pdf", ".svg") else "png"
        with warnings.catch_warnings(), atomic_write(path) as f:
            warnings.simplefilter("ignore")
            fig.savefig(f, format=fmt, dpi=100)
        plt.close(fig)
    return fig
