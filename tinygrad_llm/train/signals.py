"""SIGTERM and Ctrl-C during training: stop at a safe point, and never cut a checkpoint in half.

``kill``, systemd, Slurm, Docker and CI stop a program with SIGTERM, whose default action ends the process
on the spot; Ctrl-C sends SIGINT, which Python turns into KeyboardInterrupt wherever the program happens
to be -- possibly in the middle of writing a checkpoint. Inside ``catch_signals()`` both signals raise
``Interrupted`` (a KeyboardInterrupt that remembers the signal), so the trainer's one interrupt path saves
and exits. One guard, three ways to wait:

- inside ``guard.deferred()`` (around every save and every parameter update) a signal is only noted and
  raised once the block is complete;
- with ``guard.at_checks`` (data parallel: ``train.parallel.stop_together``) a signal is only noted and
  raised at ``guard.check(comm)``, where the processes agree, so that all stop at the same step;
- once interrupted, further signals (while the interrupt's own checkpoint is written) are ignored with a
  message.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinygrad_llm.dist.comm import Communicator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal: ``signum`` (SIGINT for Ctrl-C, SIGTERM for kill)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """What SIGINT and SIGTERM do inside ``catch_signals``. A guard that was never installed (outside the
    main thread, or outside ``catch_signals``) receives no signal: its blocks simply run."""

    def __init__(
        self,
        log: Callable[[str], object] = print,
        stopping_message: str = "still writing the checkpoint, please wait (it will be complete)",
    ):
        self.log, self.stopping_message = log, stopping_message
        self.interrupted = False  # Interrupted has been raised: the run is ending
        self.pending = None  # a signal noted, raised at the end of deferred() or at check()
        self.at_checks = False  # data parallel: signals wait for check(), where the processes agree
        self._deferring = []  # what the open deferred() blocks are doing, for the message

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.interrupted:
            self.log(f"{name}: {self.stopping_message}")
        elif self._deferring or self.at_checks:
            if self._deferring and self._deferring[-1]:
                self.log(f"{name}: stopping after {self._deferring[-1]}")
            self.pending = self.pending or signum
        else:
            self._stop(signum)

    def _stop(self, signum: int):
        self.interrupted, self.pending = True, None
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self, doing: str | None = None) -> Iterator[None]:
        """Signals wait until the block ends (a save or an update is never cut short); then the first one is
        raised. ``doing`` ("the checkpoint being written") is said when a signal arrives meanwhile."""
        self._deferring.append(doing)
        try:
            yield
        finally:
            self._deferring.pop()
        if not self._deferring and not self.at_checks and self.pending is not None and not self.interrupted:
            self._stop(self.pending)

    def check(self, comm: Communicator) -> None:
        """With ``at_checks``: whether some process was signalled (one scalar Allreduce, on every process at
        the same step); if so every process raises Interrupted here."""
        if comm.sum(float(self.pending is not None)) > 0:
            self._stop(self.pending or signal.SIGINT)


@contextlib.contextmanager
def catch_signals(log: Callable[[str], object], **options: Any) -> Iterator[SignalGuard]:
    """Install a ``SignalGuard``'s handlers for SIGINT and SIGTERM for the block (main thread only; elsewhere
    the guard is yielded uninstalled); restore the previous ones after.

    Blocks nest (the command line's around the trainer's): when an inner block ends interrupted, the outer
    guard learns it, so signals repeated while the program unwinds are ignored there too."""
    guard = SignalGuard(log, **options)
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signal.signal(signum, guard.handle)
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            outer = getattr(handler, "__self__", None)
            if guard.interrupted and isinstance(outer, SignalGuard):
                outer.interrupted = True


def terminate_as_interrupt(log: Callable[[str], object]) -> contextlib.AbstractContextManager[SignalGuard]:
    """For a whole command: SIGTERM raises Interrupted as Ctrl-C does, so ``finally`` blocks run (locks are
    released, temporaries removed) instead of the process vanishing; repeats while it stops are ignored."""
    return catch_signals(log, stopping_message="already stopping, please wait")
