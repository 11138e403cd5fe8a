"""Output folders: checked before the first step, claimed by a lock, marked as ours.

Every command that writes a folder (``train``, ``finetune-*``, ``Trainer.fit``) goes through here, so the
rules hold everywhere:

- ``--out`` must be a folder or creatable as one; an existing file, or a parent that is a file or not
  writable, is refused before any work, naming ``--out``.
- A non-empty folder is written into only if it carries the marker ``.tinygrad-llm-run`` (a tinygrad-llm
  run: "this folder is ours") -- any other folder (a Hugging Face model, your documents) is refused unless
  ``overwrite=True`` (``--overwrite``), which replaces only the files we write. A run that holds results (a
  checkpoint, a model, a log) is continued with ``--resume`` or replaced with ``--overwrite``; one that
  failed before saving anything is simply used again by the next run.
- The lock file ``.tinygrad-llm.lock`` holds the owner's pid under an exclusive ``flock``: a second run on
  the same folder stops with "DIR is in use by process N". The kernel drops a flock when its process dies,
  so the lock of a killed run is stale by construction; the next run takes it over and says so. The lock
  file is opened without following a link; one that is a link, not a regular file, or holds anything but
  a pid is refused, never written.

Process 0 alone should claim a folder when several processes train one model (data parallel).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.files import atomic_write, open_regular

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

MARKER = ".tinygrad-llm-run"
LOCK = ".tinygrad-llm.lock"
FORMAT = "tinygrad_llm.run"
# files a training run writes at the top of its folder; an --overwrite of one of our runs removes these
RUN_OUTPUTS = ("checkpoints", "log.jsonl", "losses.png")

_held: dict[Path, list] = {}  # folder -> [lock file descriptor, depth]: the locks this process holds


class RunFolderError(ValueError):
    """An output folder cannot be used (a file, not writable, someone else's folder, in use); the message
    says which and what to do."""


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a tinygrad-llm run: it has the marker (or, from before markers existed, a
    ``checkpoints/latest`` pointer or a ``finetune.json``)."""
    folder = Path(folder)
    return (
        (folder / MARKER).is_file()
        or (folder / "checkpoints" / "latest").is_file()
        or (folder / "finetune.json").is_file()
    )


def holds_results(folder: str | Path) -> bool:
    """Whether a run folder holds anything a run saved: a checkpoint, a model, a fine-tuning's results or a
    log. A run that failed before its first save (out of memory at step 1, a bad setting) holds none: its
    folder may be used by a fresh run without ``--overwrite``."""
    folder = Path(folder)
    checkpoints = folder / "checkpoints"
    saved = checkpoints.is_dir() and any(
        path.name == "latest" or (path.name.startswith("ckpt-") and "." not in path.name)  # not a .tmp of a save
        for path in checkpoints.iterdir()
    )
    return saved or any((folder / name).exists() for name in ("model.safetensors", "finetune.json", "log.jsonl"))


def check_output_path(out: str | Path, flag: str = "--out") -> Path:
    """``out`` is a folder, or can be created as one: refused up front (naming ``flag``) otherwise."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise RunFolderError(f"{flag} {out}: exists and is not a folder (expected a folder for the run's files)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise RunFolderError(f"{flag} {out}: the folder is not writable")
        return out
    parent = out.absolute().parent
    while not parent.exists():  # the first ancestor that exists must be a writable folder
        parent = parent.parent
    if not parent.is_dir():
        raise RunFolderError(f"{flag} {out}: cannot be created, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"{flag} {out}: cannot be created, {parent} is not writable")
    return out


def _foreign_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in (MARKER, LOCK))


@contextlib.contextmanager
def claim(
    out: str | Path,
    command: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    flag: str = "--out",
    log: Callable[[str], object] | None = None,
) -> Iterator[Path]:
    """Check ``out``, create it, lock it and mark it as a run of ``command``; release the lock on exit.

    ``resume``: the folder must already be a run. ``overwrite``: a non-empty folder that is not a run is
    written into anyway; a run of ours loses its checkpoints and log (a fresh start). Otherwise a
    non-empty folder is refused. If this call created the folder and the command fails before writing
    anything, the empty folder is removed again.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = check_output_path(out, flag)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{flag} {out}: cannot be created ({exc.strerror})") from None
    failed = True
    try:
        with lock(out, log=log):
            _check_contents(out, command, resume=resume, overwrite=overwrite, flag=flag)
            fresh_start = overwrite or not holds_results(out)  # (a run that saved nothing has nothing to lose)
            if fresh_start and not resume and is_run_folder(out):
                for name in RUN_OUTPUTS:  # our own files only: a fresh run must not mix with the old one's
                    path = out / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    elif path.exists() or path.is_symlink():
                        path.unlink()
            mark(out, command)
            yield out
            failed = False
    finally:
        if failed and created and out.is_dir() and not _foreign_entries(out):
            with contextlib.suppress(OSError):
                (out / MARKER).unlink(missing_ok=True)
                out.rmdir()


def _check_contents(out: Path, command: str, *, resume: bool, overwrite: bool, flag: str) -> None:
    entries = _foreign_entries(out)
    if resume:
        if not is_run_folder(out):
            raise RunFolderError(
                f"--resume: {out} is not a tinygrad-llm run (no {MARKER} file); pass the --out of the run to continue"
            )
        return
    if not entries or overwrite:
        return
    if is_run_folder(out):
        if not holds_results(out):  # it failed before saving anything: a fresh run may start there
            return
        resume_hint = "--resume to continue it, " if command == "train" else ""
        raise RunFolderError(
            f"{flag} {out} already holds a run: pass {resume_hint}--overwrite to replace it, or another {flag}"
        )
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise RunFolderError(
        f"{flag} {out}: the folder is not empty ({shown}) and is not a tinygrad-llm run; "
        f"choose a new or empty folder, or pass --overwrite to write {command}'s files into it"
    )


def adopt(out: str | Path, command: str, flag: str = "--out") -> None:
    """For a writer already holding the lock (``Trainer.fit``): ``out`` must be empty or a run; mark it."""
    out = Path(out)
    if not is_run_folder(out):
        _check_contents(out, command, resume=False, overwrite=False, flag=flag)
    mark(out, command)


def mark(out: str | Path, command: str) -> None:
    """Write the marker that says ``out`` is a tinygrad-llm run (kept as it is when already there)."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        with atomic_write(marker, "w") as f:
            f.write(json.dumps({"format": FORMAT, "version": 1, "created_by": command}) + "\n")


@contextlib.contextmanager
def lock(folder: str | Path, log: Callable[[str], object] | None = None) -> Iterator[None]:
    """Hold ``folder``'s lock file (re-entrant within one process); RunFolderError when another live
    process holds it."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(folder, log)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):  # unlink while still holding it, so no one locks a doomed file
            os.unlink(folder / LOCK)
        os.close(fd)


def _acquire(folder: Path, log) -> int:
    try:
        import fcntl
    except ImportError:  # (not a POSIX system)
        fcntl = None
    path = folder / LOCK
    while True:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT)  # never through a link: we write our pid into it
        if not _holds_a_pid(fd):  # a file of that name we did not write: not ours to truncate
            os.close(fd)
            raise RunFolderError(
                f"{path}: is not a lock file of tinygrad-llm (it holds something other than a process id); "
                "move it away and run again"
            )
        try:
            if fcntl is None:
                raise OSError(errno.ENOSYS, "no flock on this system")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):  # a file system without locks
                log(f"{folder}: cannot lock {path} ({exc.strerror}); make sure no other run writes this folder")
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            owner = _read_pid(fd)
            os.close(fd)
            who = f"process {owner}" if owner else "another process"
            raise RunFolderError(
                f"{folder} is in use by {who} (its lock file {path}); wait for it to finish, or use another --out"
            ) from None
        try:
            same_file = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same_file = False
        if not same_file:  # its owner removed it between our open and our lock: try the new one
            os.close(fd)
            continue
        previous = _read_pid(fd)
        if previous and previous != os.getpid():
            log(f"{folder}: taking over the lock of process {previous}, which is no longer running")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _holds_a_pid(fd: int) -> bool:
    """Whether the open lock file is empty or holds one process id, as ours do."""
    return os.fstat(fd).st_size <= 32 and (not os.pread(fd, 33, 0).strip() or _read_pid(fd) is not None)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
