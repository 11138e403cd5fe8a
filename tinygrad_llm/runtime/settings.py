"""The runtime's settings: one object, read from the environment once, changed only by explicit calls.

``current()`` is the ``Settings`` in force. The first call reads ``TINYGRAD_LLM_THREADS``,
``TINYGRAD_LLM_MALLOC`` and ``TINYGRAD_LLM_MEMORY_CHECK``; after that nothing reads the environment again (the
hot path never does), and the settings change only through ``runtime.configure(...)`` (for good) or
``runtime.overridden(...)`` (a ``with`` block that puts the old values back). Tests start over with ``reset()``.

``ENVIRONMENT`` lists every ``TINYGRAD_LLM_*`` variable the project reads, with the values each accepts;
``check_environment()`` checks them all at once: the command line calls it at start-up, in every command, so a
bad value is named before any work (not when, deep in a run, the setting is first consulted), and a variable
that is none of them (a typo, which would otherwise do nothing) is named with the closest known one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

THREADS_ENV = "TINYGRAD_LLM_THREADS"
MALLOC_ENV = "TINYGRAD_LLM_MALLOC"
MALLOC_CHOICES = ("keep", "default")
MEMORY_CHECK_ENV = "TINYGRAD_LLM_MEMORY_CHECK"
MEMORY_CHECK_CHOICES = ("on", "off")
EXAMPLE_ARGS_ENV = "TINYGRAD_LLM_EXAMPLE_ARGS"  # an example's flags where it runs as a notebook
PREFIX = "TINYGRAD_LLM_"

# Every variable the project reads, and what it accepts: a tuple of values, or a description (a number, a
# folder) that check_environment checks. The values are the readers' own (backend.DEVICES, kernels/dispatch.MODES:
# tests/test_startup.py holds them equal); empty is the default, as unset.
ENVIRONMENT = {
    THREADS_ENV: "a positive integer (CPU threads for the matrix products)",
    MALLOC_ENV: MALLOC_CHOICES,
    MEMORY_CHECK_ENV: MEMORY_CHECK_CHOICES,
    "TINYGRAD_LLM_DEVICE": ("cpu", "cuda"),
    "TINYGRAD_LLM_KERNELS": ("auto", "numpy"),
    "TINYGRAD_LLM_DIST": ("single",),
    "TINYGRAD_LLM_DEBUG": ("1", "0"),
    "TINYGRAD_LLM_REQUIRE_MPI": ("1", "0"),
    "TINYGRAD_LLM_REQUIRE_NVRTC": ("1", "0"),
    "TINYGRAD_LLM_DATA": "a folder laid out like ../shared/data",
    "TINYGRAD_LLM_CACHE": "a folder for downloads (made when missing)",
    EXAMPLE_ARGS_ENV: "an example's flags, as typed after its name (read when it runs as a notebook)",
}
# Read with surrounding spaces dropped and case ignored, as their readers do; the others are taken as written.
LOOSE = {THREADS_ENV, MALLOC_ENV, MEMORY_CHECK_ENV, "TINYGRAD_LLM_KERNELS", "TINYGRAD_LLM_DEBUG"}


@dataclasses.dataclass
class Settings:
    threads: int | None = None  # a fixed thread count; None: the load monitor lends the free cores
    threads_by: str = ""  # who fixed it (for describe())
    malloc: str = "keep"  # "keep": freed blocks stay for reuse (host_memory); "default": malloc as it was
    malloc_by: str = ""  # "" or the environment variable that chose it
    memory_check: bool = True  # commands refuse a job whose memory estimate exceeds what is available


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
    settings.memory_check = os.environ.get(MEMORY_CHECK_ENV, "").strip().lower() != "off"
    return settings


def check_environment(environ: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the TINYGRAD_LLM_* variables of ``environ`` (default os.environ): a value a
    variable does not accept is an error naming the variable and the values it takes; an unknown variable a
    warning naming the closest known one."""
    import difflib

    environ = os.environ if environ is None else environ
    errors, warnings = [], []
    for name in sorted(key for key in environ if key.startswith(PREFIX)):
        raw = environ[name]
        value = raw.strip().lower() if name in LOOSE else raw
        if name not in ENVIRONMENT:
            known = [known.removeprefix(PREFIX) for known in ENVIRONMENT]  # compared without the shared prefix
            close = difflib.get_close_matches(name.removeprefix(PREFIX), known, n=1, cutoff=0.6)
            hint = (
                f"did you mean {PREFIX}{close[0]}?" if close else f"the known ones are {', '.join(sorted(ENVIRONMENT))}"
            )
            warnings.append(f"{name} is not a variable tinygrad-llm reads, so it does nothing: {hint}")
            continue
        accepted = ENVIRONMENT[name]
        if not value:
            continue  # empty: the default, as unset
        if isinstance(accepted, tuple):
            if value not in accepted:
                errors.append(f"{name}={raw!r}: expected {' or '.join(repr(a) for a in accepted)} (or unset)")
        elif name == THREADS_ENV:
            if not value.isdigit() or int(value) < 1:
                errors.append(f"{name}={raw!r}: expected {accepted}")
        elif name == EXAMPLE_ARGS_ENV:
            pass  # the example's own parser checks its flags
        else:  # a folder: the data folder must exist; the cache folder is made when first needed
            path = os.path.expanduser(raw)
            if os.path.exists(path) and not os.path.isdir(path):
                errors.append(f"{name}={raw!r}: is a file, expected {accepted}")
            elif name == "TINYGRAD_LLM_DATA" and not os.path.exists(path):
                errors.append(f"{name}={raw!r}: no such folder, expected {accepted}")
    return errors, warnings


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
