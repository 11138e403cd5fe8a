"""files.py: atomic writes, data lookup, safe extraction."""

from __future__ import annotations

import os
import socket
import stat
import zipfile

import pytest

from tinygrad_llm import files
from tinygrad_llm.files import atomic_write, require_data_file, safe_extract_zip, sha256_of


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]  # no temporary left behind
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("text")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_safe_extract_refuses_members_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escaped.txt", "bad")
    with pytest.raises(ValueError, match=r"'../escaped.txt' would be extracted outside"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("data/a.txt", "fine")
    assert [p.name for p in safe_extract_zip(good, tmp_path / "out")] == ["a.txt"]


def test_require_data_file(tmp_path, monkeypatch):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "vocab.bpe").write_text("x")
    assert require_data_file("gpt2/vocab.bpe", tmp_path) == tmp_path / "gpt2" / "vocab.bpe"
    monkeypatch.setenv("TINYGRAD_LLM_DATA", str(tmp_path))
    assert require_data_file("gpt2/vocab.bpe") == tmp_path / "gpt2" / "vocab.bpe"
    with pytest.raises(FileNotFoundError, match="the-verdict.txt not found.*TINYGRAD_LLM_DATA"):
        require_data_file("the-verdict.txt")
    monkeypatch.delenv("TINYGRAD_LLM_DATA")
    monkeypatch.setattr(files, "CHECKOUT_DATA", tmp_path / "no-shared-data")
    with pytest.raises(FileNotFoundError, match=r"TINYGRAD_LLM_DATA unset and no .*no-shared-data\): pass --data"):
        require_data_file("the-verdict.txt")


def test_the_data_beside_the_checkout_is_found_without_setup(shared_data, monkeypatch):
    """../shared/data beside the clone (where the tests and CI keep it) needs no TINYGRAD_LLM_DATA."""
    monkeypatch.delenv("TINYGRAD_LLM_DATA", raising=False)
    assert files.CHECKOUT_DATA.resolve() == shared_data.resolve()
    assert files.data_dir() == files.CHECKOUT_DATA
    assert require_data_file("the-verdict.txt") == files.CHECKOUT_DATA / "the-verdict.txt"
    monkeypatch.setenv("TINYGRAD_LLM_DATA", str(shared_data / "gpt2"))  # the variable still comes first
    assert files.data_dir() == shared_data / "gpt2"


def test_a_download_without_network_names_the_path_and_the_flag(tmp_path):
    from tinygrad_llm.files import DownloadError, download

    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "cache" / "data.zip"
    with pytest.raises(DownloadError) as info:
        download(f"http://127.0.0.1:{port}/data.zip", dest, offline="pass --data FILE")
    assert f"without network, pass --data FILE, or place the file at {dest}" in str(info.value)


def test_shared_data_matches_its_published_checksum(shared_data):
    assert sha256_of(shared_data / "the-verdict.txt").startswith("b41e41a6")
