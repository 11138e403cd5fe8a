"""Files: where local data lives, atomic writes, checksummed downloads, safe archive extraction.

Used by every layer that touches the disk; it imports nothing else of the package.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

DATA_ENV = "TINYGRAD_LLM_DATA"
CACHE_ENV = "TINYGRAD_LLM_CACHE"


def data_dir() -> Path | None:
    """The folder named by TINYGRAD_LLM_DATA (laid out like ../shared/data), or None when unset."""
    value = os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def find_data_file(relative: str) -> Path | None:
    """``relative`` inside TINYGRAD_LLM_DATA if it exists there, else None."""
    root = data_dir()
    if root is not None and (root / relative).exists():
        return root / relative
    return None


def require_data_file(relative: str, given=None) -> Path:
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
    raise FileNotFoundError(f"{relative} not found (looked at {looked}): pass the file or its folder, or set "
                            f"{DATA_ENV} to a folder laid out like ../shared/data")


def cache_dir() -> Path:
    """Where downloads are kept: TINYGRAD_LLM_CACHE, else ~/.cache/tinygrad_llm."""
    value = os.environ.get(CACHE_ENV)
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "tinygrad_llm"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
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


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def fsync_dir(path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_of(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DownloadError(RuntimeError):
    """A download failed, or its content did not match the expected size or hash."""


def download(url: str, dest, sha256: str | None = None, size: int | None = None,
             desc: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` once, resumably, with a progress bar, checked against sha256/size.

    An existing ``dest`` that matches is reused without touching the network. A partial download is
    kept as ``dest.part`` and resumed with an HTTP Range request. A mismatch deletes the data and raises.
    """
    dest = Path(dest)
    if dest.exists() and _matches(dest, sha256, size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except OSError as exc:
        raise DownloadError(f"cannot download {url} ({exc}); without network, place the file at {dest} "
                            f"or point {DATA_ENV} at a folder that has it") from exc
    with response:
        if start and response.status != 206:  # the server ignored the range: start over
            start = 0
        length = getattr(response, "length", None)  # file:// responses have no .length
        total = length + start if length is not None else None
        from tqdm import tqdm

        with open(part, "ab" if start else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=desc or dest.name,
            disable=not sys.stderr.isatty(),
        ) as bar:
            while block := response.read(1 << 20):
                f.write(block)
                bar.update(len(block))
    if not _matches(part, sha256, size):
        got = sha256_of(part)
        part.unlink()
        raise DownloadError(f"{url}: downloaded content has sha256 {got}, expected {sha256} (size {size}); "
                            "the partial file was removed")
    os.replace(part, dest)
    return dest


def _matches(path: Path, sha256: str | None, size: int | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return sha256 is None or sha256_of(path) == sha256


def safe_extract_zip(archive, target) -> list[Path]:
    """Extract a zip into ``target``, refusing any member that would land outside it."""
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for member in members:
            destination = (target / member.filename).resolve()
            if destination != target and target not in destination.parents:
                raise ValueError(f"{archive}: member {member.filename!r} would be extracted outside {target}")
        extracted = []
        for member in members:
            zf.extract(member, target)
            extracted.append(target / member.filename)
    return extracted


def copy_atomic(src, dest) -> None:
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        shutil.copyfileobj(fin, fout)
