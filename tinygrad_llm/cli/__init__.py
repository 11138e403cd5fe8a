"""The ``tinygrad-llm`` command (also ``python -m tinygrad_llm``): train, generate, chat, info, finetune-*, classify,
plot, gradcheck, attention.

Errors in what the user gave (a missing file, a bad number, a checkpoint that does not fit) end the
command with one line on stderr and exit status 1 (2 for a usage error), never a traceback;
TINYGRAD_LLM_DEBUG=1 shows the traceback for bug reports. Every TINYGRAD_LLM_* variable is checked at
start-up (runtime.settings.check_environment): a bad value is a usage error, an unknown name a warning.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from tinygrad_llm import __version__

COMMANDS = (
    "train",
    "generate",
    "chat",
    "info",
    "finetune-classifier",
    "finetune-instruct",
    "finetune-dpo",
    "classify",
    "plot",
    "gradcheck",
    "attention",
)


def build_parser() -> argparse.ArgumentParser:
    from tinygrad_llm.cli import classify, dpo, finetune, generate, info, plot, study, train

    parser = argparse.ArgumentParser(
        prog="tinygrad-llm",
        description="Train a GPT from scratch on your text, then generate from it. Every gradient is "
        "computed by tinygrad_llm's own NumPy/CuPy autograd engine.",
        epilog="Run 'tinygrad-llm COMMAND --help' for a command's options. With no --data, 'train' uses "
        "Python's own help texts, so a first run needs no download.",
    )
    parser.add_argument("--version", action="version", version=f"tinygrad-llm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train.add_parser(sub)
    generate.add_generate_parser(sub)
    generate.add_chat_parser(sub)
    info.add_parser(sub)
    finetune.add_parsers(sub)
    dpo.add_parser(sub)
    classify.add_parser(sub)
    plot.add_parser(sub)
    study.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # which options were given, not defaulted
    from tinygrad_llm import runtime
    from tinygrad_llm.runtime.settings import check_environment

    errors, warnings = check_environment()  # every TINYGRAD_LLM_* variable, before any work, in every command
    for warning in warnings:
        print(f"tinygrad-llm {args.command}: warning: {warning}", file=sys.stderr)
    if errors:
        for error in errors:
            print(f"tinygrad-llm {args.command}: error: {error}", file=sys.stderr)
        return 2  # a usage error, as argparse's
    from tinygrad_llm.train.signals import Interrupted, terminate_as_interrupt

    runtime.configure(threads=getattr(args, "threads", None))  # host memory and --threads, before any work
    # SIGTERM unwinds like Ctrl-C (a run saves its checkpoint, unlocks its folder); repeats wait for the end
    with terminate_as_interrupt(lambda message: print(message, file=sys.stderr, flush=True)):
        try:
            return args.run(args) or 0
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else 2
            print(f"\ninterrupted ({'SIGTERM' if signum == 15 else 'Ctrl-C'})", file=sys.stderr)
            return 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
        except BrokenPipeError:  # the reader left (| head): stop quietly, as cat and grep do
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
            return 141  # 128 + SIGPIPE, the status of a program the pipe ended
        except Exception as exc:  # bad input: one line, no traceback
            if debugging() and not _data_parallel():
                raise
            message = str(exc) or type(exc).__name__
            if isinstance(exc, MemoryError):
                message = "out of memory: use a smaller --batch-size, --context-length or model"
            if _data_parallel():
                _stop_the_job(args.command, message)
            print(f"tinygrad-llm {args.command}: error: {message}", file=sys.stderr)
            return 1


def _data_parallel():
    """The communicator of a data-parallel run under mpiexec (None for one process)."""
    from tinygrad_llm import dist

    current = dist.current()
    return current if current is not None and current.world_size > 1 else None


def _stop_the_job(command: str, message: str) -> None:
    """A process of a data-parallel run failed: say which and why, then end every process of the job (the
    others may be waiting for it in a collective, and would wait forever). Process 0's own failure is the
    likeliest to be everyone's (bad input), so the others give it a second to report it first."""
    import time
    import traceback

    comm = _data_parallel()
    if comm.rank:
        time.sleep(1.0)
    if debugging():
        traceback.print_exc(file=sys.__stderr__)
    print(
        f"tinygrad-llm {command}: error on process {comm.rank} of {comm.world_size}: {message}; stopping all "
        f"{comm.world_size} processes",
        file=sys.__stderr__,
        flush=True,
    )
    comm.abort(1)


def debugging() -> bool:
    """TINYGRAD_LLM_DEBUG=1: errors show their traceback (for bug reports); 0 or unset: one line."""
    return os.environ.get("TINYGRAD_LLM_DEBUG", "").strip() == "1"


def fail(message: str) -> NoReturn:
    """Stop the command with a one-line error (raised as ValueError, printed by ``main``)."""
    raise ValueError(message)
