"""Curves: training and validation loss against steps, with tokens seen on a second axis (the book's
``plot_losses``), and any other pair of curves (the book's ``plot_values``). matplotlib is a dependency; where
it is missing anyway (a trimmed install) the plot is skipped with one notice.

The legend sits below the axes, where it cannot hide a curve, and the counts on the top axis read "500K",
"1.5M" rather than a bare "1e6" offset. A figure is written as PNG, PDF or SVG (by its file name's ending;
any other ending is refused) and carries ``Creator: tinygrad-llm`` in its metadata: ``is_own_figure`` tells
a figure we drew, which ``plot`` may draw again, from a file of someone else's, which it never replaces
unasked."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tinygrad_llm.files import atomic_write, check_output_file, write_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_warned = False

FIGURE_SUFFIXES = (".png", ".pdf", ".svg")
CREATOR = "tinygrad-llm"  # in every figure's metadata: how is_own_figure knows one of ours
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}
_LARGEST_FIGURE = 64 << 20  # a file bigger than this is no figure of ours


def figure_format(path: str | os.PathLike) -> str:
    """ "png", "pdf" or "svg" from ``path``'s ending; ValueError naming the path for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"{path}: a figure is written as {', '.join(FIGURE_SUFFIXES)}; name the file with one of them")
    return suffix[1:]


def is_own_figure(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a figure this module drew: the format its ending says, ``CREATOR`` in its metadata."""
    path = Path(path)
    magic = _MAGIC.get(path.suffix.lower())
    try:
        if magic is None or not path.is_file() or path.stat().st_size > _LARGEST_FIGURE:
            return False
        with open(path, "rb") as f:
            content = f.read()
    except OSError:
        return False
    return content.startswith(magic) and CREATOR.encode() in content


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def short_count(x: float) -> str:
    """A count as an axis label: 750, 12K, 1.5M, 2B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def plot_run(
    run_dir: str | os.PathLike, path: str | os.PathLike | None = None, overwrite: bool = False
) -> tuple[Figure | None, Path]:
    """Draw a training run's curves again from its ``log.jsonl``, to ``path`` (default ``run_dir/losses.png``).

    An existing ``path`` is replaced only when it is a figure we drew (``is_own_figure``), the run's own
    losses.png, or ``overwrite``; a link, a folder, or an ending other than .png/.pdf/.svg is refused."""
    import json

    run_dir = Path(run_dir)
    default = run_dir / "losses.png"
    given = path is not None
    path = Path(path) if given else default
    rules = {  # files.write_file's: checked before any work, and again as the figure is written
        "flag": "--out" if given else None,
        "overwrite": overwrite or path == default,  # redrawing the run's own figure is what plot is for
        "owned": is_own_figure,
        "suffixes": FIGURE_SUFFIXES,
    }
    check_output_file(path, **rules)
    log = run_dir / "log.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"{log}: missing (expected a run folder written by 'tinygrad-llm train')")
    try:
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        columns = [[r[key] for r in records] for key in ("step", "tokens_seen", "train_loss", "val_loss")]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{log}: not a training log (one JSON record per line with step, tokens_seen, train_loss, val_loss: {exc})"
        ) from None
    if not records:
        raise ValueError(f"{log}: no evaluation yet, nothing to plot")
    fig = plot_losses(*columns)
    if fig is not None:
        with write_file(path, **rules) as f:
            save_figure(fig, f, figure_format(path))
        import matplotlib.pyplot as plt

        plt.close(fig)
    return fig, path


def plot_losses(
    steps_seen: Sequence[float],
    tokens_seen: Sequence[float],
    train_losses: Sequence[float],
    val_losses: Sequence[float],
    path: str | os.PathLike | None = None,
    xlabel: str = "Steps",
) -> Figure | None:
    """Plot train and validation losses against ``steps_seen`` (epochs in the book), tokens seen on top.

    Writes a PNG to ``path`` atomically when given; returns the figure, or None without matplotlib.
    """
    return plot_values(
        steps_seen,
        tokens_seen,
        train_losses,
        val_losses,
        label="loss",
        path=path,
        xlabel=xlabel,
        top_xlabel="Tokens seen",
    )


def plot_values(
    epochs_seen: Sequence[float],
    examples_seen: Sequence[float],
    train_values: Sequence[float],
    val_values: Sequence[float],
    label: str = "loss",
    path: str | os.PathLike | None = None,
    xlabel: str = "Epochs",
    top_xlabel: str = "Examples seen",
) -> Figure | None:
    """The book's chapter-6 ``plot_values``: training and validation ``label`` (loss, accuracy, reward
    margin, ...) against ``epochs_seen``, with ``examples_seen`` on a second axis on top.

    The book saves ``f"{label}-plot.pdf"`` and shows the figure; here the figure is returned, and written to
    ``path`` (.png, .pdf or .svg, by its ending) atomically when given. None without matplotlib.
    """
    global _warned
    fmt = figure_format(path) if path is not None else None  # a bad name is refused before any drawing
    if not matplotlib_available():
        if not _warned:
            print("note: matplotlib is not installed, so no plot is drawn (pip install matplotlib)", file=sys.stderr)
            _warned = True
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax1 = plt.subplots(figsize=(6, 4), layout="constrained")
    ax1.plot(epochs_seen, train_values, label=f"Training {label}")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel(label[:1].upper() + label[1:])
    fig.legend(loc="outside lower center", ncols=2, frameon=False)  # below the axes: never over a curve
    if len(examples_seen) > 1:
        ax2 = ax1.twiny()  # the same curves against examples (or tokens) seen, on the top axis
        ax2.plot(examples_seen, train_values, alpha=0)
        ax2.set_xlabel(top_xlabel)
        ax2.xaxis.set_major_formatter(FuncFormatter(lambda x, _: short_count(x)))
    if path is not None:
        with atomic_write(path) as f:
            save_figure(fig, f, fmt)
        plt.close(fig)
    return fig


def save_figure(fig: Figure, file: IO[bytes], fmt: str) -> None:
    """Write ``fig`` to the open ``file`` as ``fmt`` (png, pdf, svg), marked as ours (``CREATOR``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(file, format=fmt, dpi=100, metadata={"Creator": CREATOR})
