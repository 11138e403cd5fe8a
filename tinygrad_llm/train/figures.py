"""Pictures of what a model learns, beside losses.png: per-layer gradient norms over training
(grad_norms.png), the learning-rate schedule before training starts (lr_schedule.png), and the attention
weights of one layer for a prompt (``tinygrad-llm attention``). matplotlib is optional, as for the loss
plot: without it nothing is drawn and each function returns None.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.files import atomic_write
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.plot import matplotlib_available

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tinygrad_llm.model.gpt import GPTModel


def _pyplot():
    if not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, plt) -> None:
    if path is None:
        return
    with warnings.catch_warnings(), atomic_write(Path(path)) as f:
        warnings.simplefilter("ignore")
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def plot_grad_norms(history: list[dict], path: str | os.PathLike | None = None) -> Figure | None:
    """One line per layer: the L2 norm of its gradients (before clipping) at each evaluation, on a log
    scale, transformer blocks shaded from light (first) to dark (last). ``history`` holds log.jsonl's
    records; those without ``grad_norms`` are skipped. Returns the figure, or None (no matplotlib, no data)."""
    records = [r for r in history if r.get("grad_norms")]
    plt = _pyplot()
    if plt is None or not records:
        return None
    layers = list(dict.fromkeys(layer for r in records for layer in r["grad_norms"]))
    blocks = [layer for layer in layers if layer.split(".")[-1].isdigit()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for layer in layers:
        steps = [r["step"] for r in records if layer in r["grad_norms"]]
        norms = [r["grad_norms"][layer] for r in records if layer in r["grad_norms"]]
        if layer in blocks:
            shade = 0.25 + 0.65 * blocks.index(layer) / max(len(blocks) - 1, 1)
            ax.plot(steps, norms, color=plt.cm.Blues(shade), label=layer)
        else:
            ax.plot(steps, norms, linestyle="--", label=layer)
    ax.set_yscale("log")
    ax.set_xlabel("Steps")
    ax.set_ylabel("Gradient norm (before clipping)")
    ax.set_title("Gradient norm per layer")
    ax.legend(fontsize=7, ncol=2 if len(layers) > 6 else 1, loc="best")
    fig.tight_layout()
    _save(fig, path, plt)
    return fig


def plot_lr_schedule(
    lr_at: Callable[[int], float], total_steps: int, path: str | os.PathLike | None = None, warmup_steps: int = 0
) -> Figure | None:
    """The learning rate of every step, 0 .. total_steps - 1, with the end of the warmup marked."""
    plt = _pyplot()
    if plt is None:
        return None
    steps = np.unique(np.linspace(0, total_steps - 1, min(total_steps, 2000)).round().astype(int))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, [lr_at(int(s)) for s in steps])
    if 0 < warmup_steps < total_steps:
        ax.axvline(warmup_steps, color="grey", linestyle=":", label=f"end of warmup ({warmup_steps} steps)")
        ax.legend(loc="upper right")
    ax.set_xlabel("Steps")
    ax.set_ylabel("Learning rate")
    ax.set_title("Learning-rate schedule")
    fig.tight_layout()
    _save(fig, path, plt)
    return fig


def attention_weights(model: GPTModel, ids: Sequence[int], layer: int) -> np.ndarray:
    """The attention weights of block ``layer`` for one sequence of token ids: (n_heads, T, T), row i the
    weights query i gives keys 0..i (before dropout)."""
    att = model.trf_blocks[layer].att
    att.keep_attention = True
    try:
        with no_grad():
            model(np.asarray([ids], dtype=np.int64))
        weights = backend.to_numpy(att.last_attention[0])
    finally:
        att.keep_attention = False
        att.last_attention = None
    return weights


def _readable(token: str) -> str:
    """A token as a tick label: whitespace made visible."""
    return token.replace(" ", "\u2423").replace("\n", "\u23ce").replace("\t", "\u21e5") or "\u2205"


def plot_attention(
    weights: np.ndarray, tokens: list[str], path: str | os.PathLike | None = None, title: str | None = None
) -> Figure | None:
    """One heat map per head (``weights`` (H, T, T)), keys on the x axis, queries on the y axis, both
    labelled with the tokens."""
    plt = _pyplot()
    if plt is None:
        return None
    heads, t = weights.shape[0], weights.shape[-1]
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)
    side = 1.2 + 0.16 * t
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side, rows * side), squeeze=False)
    labels = [_readable(tok) for tok in tokens]
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(weights[h], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(t))
        ax.set_yticks(range(t))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, plt)
    return fig
