"""``tinygrad-llm plot RUN``: draw a run's loss curves again from its log.jsonl."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a run's loss curves again (losses.png)",
        description="Redraw the training and validation loss of a run folder from its log.jsonl, "
        "against steps and tokens seen: after a run, during one, or for an older run.",
    )
    p.add_argument("run_dir", metavar="RUN", help="a run folder from 'tinygrad-llm train' (it holds log.jsonl)")
    p.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="where to write the figure (.png, .pdf or .svg; default RUN/losses.png); an existing file is "
        "replaced only if it is a figure tinygrad-llm drew",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file whoever wrote it")
    p.set_defaults(run=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from tinygrad_llm.train.plot import matplotlib_available, plot_run

    if not matplotlib_available():
        raise ValueError("plot needs matplotlib: pip install matplotlib")
    _, path = plot_run(args.run_dir, args.out, overwrite=args.overwrite)
    print(f"wrote {path}", file=sys.stderr)
    return 0
