"""A job's progress, shown the same way by every training command: one tqdm bar with its ETA on a terminal;
elsewhere (a log file, a pipe, CI) a plain line for the first step and then every ``interval_s`` seconds,
so that a redirected run shows signs of life without a line per step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """``total`` steps (for several epochs: all of them, so the ETA is the whole job's).

    ``step(loss=..., **extra)`` after each one; ``write(message)`` prints a message without breaking the bar;
    ``close()`` at the end. ``log`` prints the plain lines when there is no terminal.
    """

    def __init__(
        self,
        total: int,
        log: Callable[[str], object] = print,
        interval_s: float = 15.0,
        done: int = 0,
        enabled: bool = True,
    ):
        self.total, self.done, self.log, self.interval_s = total, done, log, interval_s
        self.first = done  # a resumed job's earlier steps: not part of this session's pace
        self.started = time.perf_counter()
        self.last_line: float | None = None  # when a plain line was last printed
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True)
        self.enabled = enabled

    def step(self, loss: float | None = None, **extra: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}", **extra)
            return
        now = time.perf_counter()
        if self.last_line is not None and now - self.last_line < self.interval_s:
            return
        self.last_line = now
        elapsed = now - self.started
        parts = [f"step {self.done:>6}/{self.total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        parts += [f"{value} {name.replace('_', '/')}" for name, value in extra.items()]  # tok_s=... -> tok/s
        parts.append(f"{elapsed:.1f}s")
        if self.done < self.total:
            per_step = elapsed / (self.done - self.first)
            parts.append(f"eta {format_duration(per_step * (self.total - self.done))}")
        self.log("  ".join(parts))

    def write(self, message: str) -> None:
        """A line of output that leaves the bar intact below it."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            self.log(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_duration(seconds: float) -> str:
    """12s, 3m05s, 1h02m: how long, at a glance."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
