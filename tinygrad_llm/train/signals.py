"""SIGTERM and Ctrl-C during training: stop at a safe point, and never cut a checkpoint in half.

``kill``, systemd, Slurm, Docker and CI stop a program with SIGTERM, whose default action ends the process
on the spot; Ctrl-C sends SIGINT, which Python turns into KeyboardInterrupt wherever the program happens
to be -- possibly in the middle of writing a checkpoint. Inside ``catch_signals()`` both signals raise
``Interrupted`` (a KeyboardInterrupt that remembers the signal), so the trainer's one interrupt path saves
and exits; inside ``guard.deferred()`` (around every save) a signal is only noted and acted on once the
save is complete, and further signals while the interrupt's own checkpoint is written are ignored with a
message.
"""
from __future__ import annotations

import contextlib
import signal
import threading

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal: ``signum`` (SIGINT for Ctrl-C, SIGTERM for kill)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """The state of the handlers installed by ``catch_signals``."""

    def __init__(self, log, stopping_message: str = "still writing the checkpoint, please wait (it will be complete)"):
        self.log, self.stopping_message = log, stopping_message
        self.interrupted = False  # a signal has been raised as Interrupted: the run is ending
        self.pending = None       # a signal that arrived during a save, raised once the save is done
        self._deferring = 0

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.interrupted or self._deferring:
            if self.interrupted:
                self.log(f"{name}: {self.stopping_message}")
            else:
                self.log(f"{name}: stopping after the checkpoint being written")
                self.pending = self.pending or signum
            return
        self.interrupted = True
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self):
        """Signals wait until the block ends (a save is never cut short); then the first one is raised."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self.pending is not None and not self.interrupted:
            signum, self.pending = self.pending, None
            self.interrupted = True
            raise Interrupted(signum)


class _NoGuard:
    """Outside the main thread handlers cannot be installed: saves are simply not protected."""

    interrupted = False

    def deferred(self):
        return contextlib.nullcontext()


@contextlib.contextmanager
def catch_signals(log, **options):
    """Install the handlers for SIGINT and SIGTERM for the block (main thread only); restore them after.

    Blocks nest (the command line's around the trainer's): when an inner block ends interrupted, the outer
    guard learns it, so signals repeated while the program unwinds are ignored there too."""
    if threading.current_thread() is not threading.main_thread():
        yield _NoGuard()
        return
    guard = SignalGuard(log, **options)
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    for signum in HANDLED:
        signal.signal(signum, guard._handle)
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            outer = getattr(handler, "__self__", None)
            if guard.interrupted and isinstance(outer, SignalGuard):
                outer.interrupted = True


def terminate_as_interrupt(log):
    """For a whole command: SIGTERM raises Interrupted as Ctrl-C does, so ``finally`` blocks run (locks are
    released, temporaries removed) instead of the process vanishing; repeats while it stops are ignored."""
    return catch_signals(log, stopping_message="already stopping, please wait")
