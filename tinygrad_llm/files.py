"""Files: where local data lives, atomic writes, checksummed downloads, safe archive extraction.

Used by every layer that touches the disk; it imports nothing else of the package. The rules every write
follows:

- A file is written to a temporary name beside it and renamed over it (``atomic_write``), so a killed
  process leaves the old file or the new one; a rename replaces a symbolic link, never what it points to.
- A file a user names (``plot --out``) goes through ``write_file``: a link, a folder or a device there is
  refused, and so is an existing file that is not one of ours, unless the user asked to overwrite it.
- A file written in place (the run's lock) is opened by ``open_regular``: never through a link, regular
  files only.
- JSON is written by ``json_text``/``write_json``: strict JSON, a non-finite number (NaN, infinity) is
  written as ``null``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DATA_ENV = "TINYGRAD_LLM_DATA"
CACHE_ENV = "TINYGRAD_LLM_CACHE"


def _env_folder(name: str, create: bool = False) -> Path | None:
    """The folder an environment variable names (None when unset); one that is a file, or missing (unless
    ``create``), is an error naming the variable."""
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name}={value}: is a file, expected a folder")
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{name}={value}: no such folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"{name}={value}: the folder cannot be created ({exc.strerror})") from None
    return path


def data_dir() -> Path | None:
    """The folder named by TINYGRAD_LLM_DATA (laid out like ../shared/data), or None when unset."""
    return _env_folder(DATA_ENV)


def find_data_file(relative: str) -> Path | None:
    """``relative`` inside TINYGRAD_LLM_DATA if it exists there, else None."""
    root = data_dir()
    if root is not None and (root / relative).exists():
        return root / relative
    return None


def require_data_file(relative: str, given: str | Path | None = None) -> Path:
    """A data file: ``given`` (the file itself, or a folder holding ``relative``), else
    ``$TINYGRAD_LLM_DATA/relative``; a FileNotFoundError saying where it looked and what to do otherwise."""
    if given:
        path = Path(given).expanduser()
        candidate = path if path.is_file() else path / relative
        looked = str(candidate)
    else:
        root = data_dir()
        candidate = root / relative if root is not None else None
        looked = str(candidate) if candidate is not None else f"${DATA_ENV} (unset)"
    if candidate is not None and candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"{relative} not found (looked at {looked}): pass the file or its folder, or set "
        f"{DATA_ENV} to a folder laid out like ../shared/data"
    )


def cache_dir() -> Path:
    """Where downloads are kept: TINYGRAD_LLM_CACHE, else ~/.cache/tinygrad_llm."""
    path = _env_folder(CACHE_ENV, create=True)
    if path is None:
        path = Path.home() / ".cache" / "tinygrad_llm"
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    A process killed at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file gets the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:  # disk full, too large, ...
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from None  # (same OSError subclass)
        raise
    fsync_dir(path.parent)


class UnsafeFileError(ValueError):
    """A file we were asked to write is a link, not a regular file, or someone else's file; the message names
    the path (and the flag that gave it) and what to do."""


def _named(path: Path, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def check_output_file(
    path: str | Path,
    *,
    flag: str | None = "--out",
    overwrite: bool = False,
    owned: Callable[[Path], bool] | None = None,
    suffixes: tuple[str, ...] | None = None,
    overwrite_flag: str | None = "--overwrite",
) -> Path:
    """``path`` may be written by a command: it ends in one of ``suffixes`` (any when None), is not a symbolic
    link, a folder or a device, and is new, or ``owned(path)`` says it is a file of ours (a figure we drew),
    or ``overwrite`` was asked for (``overwrite_flag``: the command's option for it, named in the message;
    None where it has none). UnsafeFileError naming ``flag`` and ``path`` otherwise."""
    path = Path(path)
    name = _named(path, flag)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UnsafeFileError(f"{name}: expected a file name ending in {', '.join(suffixes)}")
    if path.is_symlink():
        raise UnsafeFileError(
            f"{name}: is a symbolic link; refusing to write through it (name the file it points to, or remove the link)"
        )
    if not path.exists():
        return path
    if not path.is_file():
        raise UnsafeFileError(f"{name}: exists and is not a regular file (a folder or a device); choose a file name")
    if not overwrite and not (owned is not None and owned(path)):
        to_do = f"pass {overwrite_flag} to replace it" if overwrite_flag else "remove it"
        raise UnsafeFileError(
            f"{name}: already exists and is not a file this command wrote: {to_do}, or choose another name"
        )
    return path


@contextlib.contextmanager
def write_file(
    path: str | Path,
    mode: str = "wb",
    *,
    flag: str | None = "--out",
    overwrite: bool = False,
    owned: Callable[[Path], bool] | None = None,
    suffixes: tuple[str, ...] | None = None,
    overwrite_flag: str | None = "--overwrite",
) -> Iterator[IO]:
    """The one writer of a file a user names: ``check_output_file`` (its arguments), then ``atomic_write``."""
    path = check_output_file(
        path, flag=flag, overwrite=overwrite, owned=owned, suffixes=suffixes, overwrite_flag=overwrite_flag
    )
    with atomic_write(path, mode) as f:
        yield f


def open_regular(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for a file written in place (a lock file): a symbolic link is never followed, and anything
    but a regular file with a single name (a FIFO, a device, a hard link to another file) is refused with an
    UnsafeFileError naming ``path``; the descriptor otherwise."""
    path = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on a regular file)
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW gives for a link
            raise UnsafeFileError(
                f"{path}: is a symbolic link; refusing to write through it (remove the link)"
            ) from None
        raise UnsafeFileError(f"{path}: cannot be opened ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # (0: its owner just removed it)
        os.close(fd)
        what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else "has other names (a hard link)"
        raise UnsafeFileError(f"{path}: {what}; refusing to write into it (remove it)")
    return fd


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every float that is NaN or infinite replaced by None (in dicts, lists and tuples)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    return obj


def json_text(obj: Any, indent: int | None = None, **options: Any) -> str:
    """``obj`` as strict JSON (no NaN or Infinity, which JSON has not): a non-finite number becomes null, so
    that every reader, not only Python's, can parse what we write. Numbers of NumPy are written as numbers."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False, default=_plain_number, **options)


def _plain_number(value: Any) -> Any:
    """A NumPy scalar (float32 loss, int64 count) as the Python number json writes; TypeError otherwise."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return finite_or_none(value.item())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` to ``path`` atomically as strict JSON (``json_text``: non-finite numbers as null)."""
    path = Path(path)
    text = json_text(obj, indent=indent)  # before opening: a value that is not JSON leaves no file
    with atomic_write(path, "w") as f:
        f.write(text + "\n")
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DownloadError(RuntimeError):
    """A download failed, or its content did not match the expected size or hash."""


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    size: int | None = None,
    desc: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` once, resumably, with a progress bar, checked against sha256/size.

    An existing ``dest`` that matches is reused without touching the network; without a known sha256 the
    one recorded at download time (``dest.sha256``) is checked instead, and a file that no longer matches
    it is downloaded again. A partial download is kept as ``dest.part`` and resumed with an HTTP Range
    request; one the server cannot resume (longer than the file: HTTP 416) is restarted, with a message.
    A mismatch deletes the data and raises.
    """
    dest = Path(dest)
    record = dest.with_name(dest.name + ".sha256")
    if dest.exists():
        if _matches(dest, sha256, size) and (sha256 is not None or _matches_record(dest, record)):
            return dest
        print(f"{dest}: differs from the copy downloaded earlier (corrupt?): downloading it again", file=sys.stderr)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not start:
            raise DownloadError(f"cannot download {url} (HTTP {exc.code} {exc.reason})") from exc
        print(
            f"{part}: the partial download ({start} bytes) cannot be resumed (HTTP 416: longer than the file "
            "on the server?); starting again",
            file=sys.stderr,
        )
        part.unlink()
        start = 0
        response = _open(url, 0, timeout)
    with response:
        if start and response.status != 206:  # the server ignored the range: start over
            start = 0
        length = getattr(response, "length", None)  # file:// responses have no .length
        total = length + start if length is not None else None
        from tqdm import tqdm

        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=desc or dest.name,
                disable=not sys.stderr.isatty(),
            ) as bar,
        ):
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
    if not _matches(part, sha256, size):
        got = sha256_of(part)
        part.unlink()
        raise DownloadError(
            f"{url}: downloaded content has sha256 {got}, expected {sha256} (size {size}); the partial file was removed"
        )
    with atomic_write(record, "w") as f:  # what a later call checks the file against
        f.write(sha256_of(part) + "\n")
    os.replace(part, dest)
    return dest


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except OSError as exc:
        raise DownloadError(
            f"cannot download {url} ({exc}); without network, place the file at the path "
            f"named or point {DATA_ENV} at a folder that has it"
        ) from exc


def _matches_record(path: Path, record: Path) -> bool:
    """``path`` still has the sha256 recorded when it was downloaded (True when nothing was recorded)."""
    try:
        recorded = record.read_text().strip()
    except OSError:
        return True
    return sha256_of(path) == recorded


def _matches(path: Path, sha256: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_of(path) == sha256


class ArchiveError(ValueError):
    """An archive is corrupt, or holds something we refuse to extract (paths outside, links, huge members)."""


def _is_symlink(member: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(member.external_attr >> 16)


@contextlib.contextmanager
def _open_zip(archive):
    try:
        with zipfile.ZipFile(archive) as zf:
            yield zf
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ArchiveError(f"{archive}: not a valid zip archive ({exc})") from None


def safe_extract_zip(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract a zip into ``target``, refusing any member that would land outside it or is a symbolic link."""
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with _open_zip(archive) as zf:
        members = zf.infolist()
        for member in members:
            destination = (target / member.filename).resolve()
            if destination != target and target not in destination.parents:
                raise ArchiveError(f"{archive}: member {member.filename!r} would be extracted outside {target}")
            if _is_symlink(member):
                raise ArchiveError(f"{archive}: member {member.filename!r} is a symbolic link; not extracted")
        extracted = []
        for member in members:
            zf.extract(member, target)
            extracted.append(target / member.filename)
    return extracted


def extract_member(archive: str | Path, name: str, dest: str | Path, max_bytes: int) -> Path:
    """Extract the one member of ``archive`` whose file name is ``name`` (in any folder) to ``dest``,
    atomically, and nothing else; more than ``max_bytes`` (counted while copying, not taken from the
    header), a link or a missing member raise ArchiveError naming the archive."""
    dest = Path(dest)
    with _open_zip(archive) as zf:
        found = [m for m in zf.infolist() if not m.is_dir() and m.filename.rstrip("/").rsplit("/", 1)[-1] == name]
        if not found:
            raise ArchiveError(f"{archive}: has no member {name}")
        member = found[0]
        if _is_symlink(member):
            raise ArchiveError(f"{archive}: member {member.filename!r} is a symbolic link, expected a file")
        if member.file_size > max_bytes:
            raise ArchiveError(
                f"{archive}: member {member.filename!r} would be {member.file_size:,} bytes, more than "
                f"the {max_bytes:,} expected"
            )
        try:
            with zf.open(member) as source, atomic_write(dest) as out:
                copied = 0
                while block := source.read(1 << 20):
                    copied += len(block)
                    if copied > max_bytes:
                        raise ArchiveError(f"{archive}: member {member.filename!r} expands past {max_bytes:,} bytes")
                    out.write(block)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # a CRC or deflate error mid-member
            raise ArchiveError(f"{archive}: corrupt member {member.filename!r} ({exc})") from None
    return dest


def copy_atomic(src: str | Path, dest: str | Path) -> None:
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        shutil.copyfileobj(fin, fout)
