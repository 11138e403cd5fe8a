"""The runtime's settings: one object, read from the environment once, changed only by explicit calls.

``current()`` is the ``Settings`` in force. The first call reads ``TINYGRAD_LLM_THREADS`` and
``TINYGRAD_LLM_MALLOC``; after that nothing reads the environment again (the hot path never does), and the
settings change only through ``runtime.configure(...)`` (for good) or ``runtime.overridden(...)`` (a ``with``
block that puts the old values back). Tests start over with ``reset()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

THREADS_ENV = "TINYGRAD_LLM_THREADS"
MALLOC_ENV = "TINYGRAD_LLM_MALLOC"
MALLOC_CHOICES = ("keep", "default")


@dataclasses.dataclass
class Settings:
    threads: int | None = None  # a fixed thread count; None: the load monitor lends the free cores
    threads_by: str = ""  # who fixed it (for describe())
    malloc: str = "keep"  # "keep": freed blocks stay for reuse (host_memory); "default": malloc as it was
    malloc_by: str = ""  # "" or the environment variable that chose it


_current: Settings | None = None


def current() -> Settings:
    """The settings in force (the environment is read on the first call only)."""
    global _current
    if _current is None:
        _current = from_environment()
    return _current


def reset() -> None:
    """Forget the settings: the next ``current()`` reads the environment again."""
    global _current
    _current = None


def from_environment() -> Settings:
    settings = Settings()
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV}={value!r}: expected a positive integer")
        settings.threads, settings.threads_by = int(value), f"{THREADS_ENV}={value}"
    value = os.environ.get(MALLOC_ENV, "").strip().lower()
    if value:
        if value not in MALLOC_CHOICES:  # a warning naming the variable, not a traceback (configure() warns)
            settings.malloc_by = (
                f"${MALLOC_ENV}={os.environ[MALLOC_ENV]!r} ignored: expected 'keep' (the "
                f"default) or 'default' (leave malloc as it is)"
            )
        else:
            settings.malloc, settings.malloc_by = value, f"${MALLOC_ENV}={value}"
    return settings


def check_threads(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads: expected a positive integer, got {n!r}")


@contextlib.contextmanager
def overridden(**changes: object) -> Iterator[Settings]:
    """``with overridden(threads=1):`` these settings inside the block, the previous ones after it."""
    if "threads" in changes:
        check_threads(changes["threads"])
        changes.setdefault("threads_by", "runtime.overridden")
    settings = current()
    previous = dataclasses.replace(settings)
    _copy_into(settings, dataclasses.replace(settings, **changes))  # a TypeError names a setting that is none
    try:
        yield settings
    finally:
        _copy_into(settings, previous)


def _copy_into(settings: Settings, values: Settings) -> None:
    for field in dataclasses.fields(Settings):
        setattr(settings, field.name, getattr(values, field.name))
