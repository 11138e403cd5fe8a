"""What every example shares: --help that shows each option's default, --device, and Ctrl-C without a traceback.

    parser = example_parser(__doc__)      # the docstring is the description; --device cpu|cuda is added
    ...
    if __name__ == "__main__":
        run(main)                           # Ctrl-C ends with "interrupted" and exit status 130
"""
from __future__ import annotations

import argparse
import sys

from tinygrad_llm.cli.common import HelpFormatter


def example_parser(doc: str, device_default: str | None = "cpu") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=device_default,
                        help="where to compute: cpu, or cuda for a GPU through CuPy")
    return parser


def run(main) -> None:
    """``sys.exit(main())``, with Ctrl-C ending quietly instead of in a traceback."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
