"""Archives and downloads that go wrong, served from a loopback HTTP server (127.0.0.1 only); environment
variables and small inputs that used to fail late or without a name."""

from __future__ import annotations

import http.server
import io
import os
import stat
import threading
import zipfile

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.files import ArchiveError, cache_dir, data_dir, download, extract_member, safe_extract_zip
from tinygrad_llm.finetune.spam_data import SPAM_FILE, download_and_unzip_spam_data, read_sms_spam

SPAM_LINES = "ham\tsee you at noon\nspam\tWIN a prize now\n"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP Range support, as archive.ics.uci.edu does."""

    files: dict = {}
    requests: list = []

    def do_GET(self):
        body = self.files.get(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def zip_bytes(members: dict, symlinks=()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, content)
    return buffer.getvalue()


def test_only_the_needed_member_is_extracted_with_a_size_cap(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(
        zip_bytes({"readme.txt": "x", "sms/SMSSpamCollection": SPAM_LINES, "junk.bin": b"\0" * (64 << 20)})
    )  # 64 MiB of zeros: a ~64 KB member
    out = extract_member(archive, SPAM_FILE, tmp_path / "out" / SPAM_FILE, max_bytes=1 << 20)
    assert out.read_text() == SPAM_LINES and sorted(p.name for p in (tmp_path / "out").iterdir()) == [SPAM_FILE]
    with pytest.raises(ArchiveError, match="junk.bin.*more than the 1,048,576 expected"):
        extract_member(archive, "junk.bin", tmp_path / "junk", max_bytes=1 << 20)
    assert not (tmp_path / "junk").exists() and not list(tmp_path.glob(".junk*"))
    # a header that under-states the size: counted while copying, stopped at the cap
    lying = bytearray(zip_bytes({SPAM_FILE: "ham\t" + "x" * 5000}))
    at = lying.rfind(b"PK\x01\x02")  # central directory: its uncompressed size field says 10 bytes
    lying[at + 24 : at + 28] = (10).to_bytes(4, "little")
    (tmp_path / "lying.zip").write_bytes(bytes(lying))
    with pytest.raises(ArchiveError, match="expands past|corrupt member"):
        extract_member(tmp_path / "lying.zip", SPAM_FILE, tmp_path / "lie", max_bytes=100)
    assert not (tmp_path / "lie").exists()


def test_symlink_members_are_refused(tmp_path):
    archive = tmp_path / "links.zip"
    archive.write_bytes(zip_bytes({SPAM_FILE: "/etc/passwd"}, symlinks={SPAM_FILE}))
    for extract in (
        lambda: extract_member(archive, SPAM_FILE, tmp_path / "x" / SPAM_FILE, 1 << 20),
        lambda: safe_extract_zip(archive, tmp_path / "x"),
    ):
        with pytest.raises(ArchiveError, match="symbolic link"):
            extract()
    assert not (tmp_path / "x" / SPAM_FILE).exists()  # no plain file left in its place


def test_corrupt_archive_is_named_hashed_deleted_then_downloaded_afresh(tmp_path, server, monkeypatch):
    base, handler = server
    monkeypatch.setattr(
        "tinygrad_llm.finetune.spam_data.SPAM_FILE_SHA256",
        __import__("hashlib").sha256(SPAM_LINES.encode()).hexdigest(),
    )
    handler.files["/spam.zip"] = b"PK\x03\x04 this is not a zip archive at all"
    folder = tmp_path / "cache"
    with pytest.raises(ArchiveError) as info:
        download_and_unzip_spam_data(f"{base}/spam.zip", folder)
    message = str(info.value)
    assert str(folder / "sms_spam_collection.zip") in message and "not a valid zip" in message
    assert "sha256 " in message and "deleted" in message
    assert sorted(p.name for p in folder.iterdir()) == []  # nothing bad is kept for the next call
    handler.files["/spam.zip"] = zip_bytes({f"sms/{SPAM_FILE}": SPAM_LINES, "big.bin": b"\0" * (1 << 20)})
    path = download_and_unzip_spam_data(f"{base}/spam.zip", folder)
    assert read_sms_spam(path) == (["see you at noon", "WIN a prize now"], [0, 1])
    assert not (folder / "big.bin").exists()
    # a cached archive that changed on disk after its download is not trusted: the recorded hash says so
    path.unlink()
    (folder / "sms_spam_collection.zip").write_bytes(b"garbage")
    handler.requests.clear()
    assert download_and_unzip_spam_data(f"{base}/spam.zip", folder).read_text() == SPAM_LINES
    assert handler.requests == [("/spam.zip", None)]


def test_a_stale_partial_download_longer_than_the_file_restarts(tmp_path, server, capsys):
    base, handler = server
    handler.files["/model.bin"] = body = os.urandom(1000)
    dest = tmp_path / "model.bin"
    dest.with_name("model.bin.part").write_bytes(os.urandom(5000))  # left by another version of the file
    import hashlib

    assert download(f"{base}/model.bin", dest, sha256=hashlib.sha256(body).hexdigest()).read_bytes() == body
    assert handler.requests == [("/model.bin", "bytes=5000-"), ("/model.bin", None)]
    err = capsys.readouterr().err
    assert str(dest.with_name("model.bin.part")) in err and "416" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.bin.sha256"]
    # a genuine partial download resumes where it stopped
    dest.unlink()
    dest.with_name("model.bin.part").write_bytes(body[:300])
    handler.requests.clear()
    assert download(f"{base}/model.bin", dest, sha256=hashlib.sha256(body).hexdigest()).read_bytes() == body
    assert handler.requests == [("/model.bin", "bytes=300-")]


def test_environment_variables_that_name_a_file_are_named(tmp_path, monkeypatch, capsys):
    from tinygrad_llm.cli import main

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    monkeypatch.setenv("TINYGRAD_LLM_DATA", str(a_file))
    with pytest.raises(NotADirectoryError, match=f"TINYGRAD_LLM_DATA={a_file}: is a file"):
        data_dir()
    monkeypatch.setenv("TINYGRAD_LLM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="TINYGRAD_LLM_DATA=.*no such folder"):
        data_dir()
    monkeypatch.delenv("TINYGRAD_LLM_DATA")
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(a_file))
    with pytest.raises(NotADirectoryError, match=f"TINYGRAD_LLM_CACHE={a_file}: is a file"):
        cache_dir()
    monkeypatch.delenv("TINYGRAD_LLM_CACHE")
    monkeypatch.setenv("TINYGRAD_LLM_DEVICE", "tpu")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    # checked at start-up, before the checkpoint is read: a usage error (test_startup.py)
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "x"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "TINYGRAD_LLM_DEVICE='tpu'" in last and "config.json" not in last


def test_spam_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / SPAM_FILE
    path.write_bytes(b"\xef\xbb\xbf" + SPAM_LINES.encode())
    assert read_sms_spam(path) == (["see you at noon", "WIN a prize now"], [0, 1])


@pytest.mark.parametrize(
    "data, error",
    [
        (["a", "b"], TypeError),
        (None, TypeError),
        ([1.0, None], TypeError),
        ({"a": 1}, TypeError),
        ([[1, 2], [3]], ValueError),
        (np.array(["x"]), TypeError),
        (np.array([1], dtype=object), TypeError),
    ],
)
def test_tensor_refuses_non_numeric_data_at_construction(data, error):
    with pytest.raises(error, match="Tensor: expected"):
        tl.Tensor(data)


def test_tensor_keeps_its_dtype_rules():
    assert tl.Tensor([1.0, 2.0]).dtype == np.float32 and tl.Tensor(2.5).dtype == np.float32
    assert tl.Tensor(np.zeros(2)).dtype == np.float64 and tl.Tensor([1, 2]).dtype == np.int64
    assert tl.Tensor([True, False]).dtype == np.bool_ and tl.Tensor([1], dtype=np.float16).dtype == np.float16
