"""Loss curves: training and validation loss against steps, with tokens seen on a second axis (as the
book's ``plot_losses``). matplotlib is optional (``pip install 'tinygrad-llm[plot]'``): without it the
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
    global _warned
    if not matplotlib_available():
        if not _warned:
            print("note: matplotlib is not installed, so no loss plot is drawn "
                  "(pip install 'tinygrad-llm[plot]')", file=sys.stderr)
            _warned = True
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(steps_seen, train_losses, label="Training loss")
    ax1.plot(steps_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    if len(tokens_seen) > 1:
        ax2 = ax1.twiny()  # the same curves against tokens seen, on the top axis
        ax2.plot(tokens_seen, train_losses, alpha=0)
        ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        with warnings.catch_warnings(), atomic_write(path) as f:
            warnings.simplefilter("ignore")
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)
    return fig
