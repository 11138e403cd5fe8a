"""What the scripts in examples/ share so that each one runs the same from the command line and as a notebook
(Jupyter with jupytext, VS Code, PyCharm: the scripts are percent-format, ``# %%`` cells).

- ``example_args(parser)``: the flags, read from the command line, or inside a Jupyter kernel (whose
  ``sys.argv`` holds the kernel's own arguments) from ``$TINYGRAD_LLM_EXAMPLE_ARGS``, else the defaults.
- ``show_or_save(fig, path)`` and ``show_graph(loss, path)``: a picture inline in a notebook, a file on the
  command line.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.runtime.settings import EXAMPLE_ARGS_ENV as NOTEBOOK_ARGS  # flags as typed after the name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tinygrad_llm.tensor import Tensor


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, VS Code's and PyCharm's notebooks and interactive windows): a
    running IPython shell with a kernel, not merely ipykernel imported."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def example_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse an example's flags where it runs: ``argv``, else the command line; in a notebook the flags in
    ``$TINYGRAD_LLM_EXAMPLE_ARGS`` (``"--epochs 1 --preset tiny"``), else the defaults.

    Checks the TINYGRAD_LLM_* variables and applies the runtime's settings, as every command of the command line
    does at start-up, and on the command line makes Ctrl-C end the script with one line ("interrupted") instead
    of a traceback."""
    from tinygrad_llm import runtime
    from tinygrad_llm.runtime.settings import check_environment

    errors, warnings = check_environment()
    for line in [f"warning: {w}" for w in warnings] + [f"error: {e}" for e in errors]:
        print(line, file=sys.stderr)
    if errors:
        sys.exit(2)
    if argv is None and in_notebook():
        argv = shlex.split(os.environ.get(NOTEBOOK_ARGS, ""))
    args = parser.parse_args(argv)
    runtime.configure()
    if not in_notebook():  # a kernel shows an interrupted cell itself
        sys.excepthook = _interrupted_in_one_line
    return args


def _interrupted_in_one_line(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr)  # Python then ends by SIGINT itself: status 130 in a shell
    else:
        sys.__excepthook__(kind, value, traceback)


def show_or_save(fig: Figure | None, path: str | os.PathLike | None) -> None:
    """A matplotlib figure inline in a notebook; on the command line written to ``path`` (PNG, to a temporary
    name and renamed) with a line saying where, or not at all where ``path`` is None. A figure of None
    (matplotlib is not installed) does nothing."""
    if fig is None:
        return
    import matplotlib.pyplot as plt

    if in_notebook():
        buffer = io.BytesIO()  # drawn here: the plotting helpers select a files-only backend
        fig.savefig(buffer, format="png", dpi=100)
        _display_png(buffer.getvalue())
    elif path is not None:
        from tinygrad_llm.files import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
        print(f"wrote {path}")
    plt.close(fig)


def show_graph(loss: Tensor, path: str | os.PathLike, depth: int | None = None) -> None:
    """The computation graph behind ``loss`` (``tl.graph``): in a notebook a picture when Graphviz's ``dot`` is
    installed, else its DOT text; on the command line ``path`` with ``.dot`` (and ``.png`` where ``dot`` is
    installed) written, with a line saying where."""
    from tinygrad_llm.graph import INSTALL_GRAPHVIZ, graph, plot_graph

    path = Path(path)
    if in_notebook():
        if shutil.which("dot") is None:
            print(f"(to see it as a picture, {INSTALL_GRAPHVIZ})")
            print(graph(loss, depth=depth))
            return
        with tempfile.TemporaryDirectory() as folder:
            picture = plot_graph(loss, Path(folder) / "graph.png", depth=depth)
            _display_png(picture.read_bytes())
        return
    print(f"wrote {plot_graph(loss, path.with_suffix('.dot'), depth=depth)}")
    if shutil.which("dot"):
        print(f"wrote {plot_graph(loss, path.with_suffix('.png'), depth=depth)}")
    else:
        print(f"to draw it as a picture, {INSTALL_GRAPHVIZ}")


def _display_png(data: bytes) -> None:
    from IPython.display import Image, display

    display(Image(data=data))
