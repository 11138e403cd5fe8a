"""Shared test configuration: Hypothesis profiles, the real-data folder, optional oracles."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings

# "ci" keeps the whole suite within minutes on 2 cores and is reproducible; "dev" explores more.
settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Tests read real data (the GPT-2 BPE files, the-verdict, ...) through TINYGRAD_LLM_DATA, as users do.
if "TINYGRAD_LLM_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["TINYGRAD_LLM_DATA"] = str(SHARED_DATA)
os.environ.pop("TINYGRAD_LLM_DEVICE", None)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line for everything skipped, grouped by reason (pytest's -ra would print a line per test)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    grouped = "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda item: -item[1]))
    terminalreporter.write_line(f"skipped {len(skipped)}: {grouped}")


@pytest.fixture
def fresh_thread_policy(monkeypatch):
    """The automatic thread policy with nothing read yet (no --threads, no $TINYGRAD_LLM_THREADS, no monitor),
    restored afterwards."""
    from tinygrad_llm.runtime import settings, threads

    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(settings, "_current", None)  # the environment is read again
    monkeypatch.setattr(threads, "_monitor", None)
    yield threads
    threads._blas_threads = None  # the next matmul sets BLAS again


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or TINYGRAD_LLM_DATA); the test is skipped when it is absent."""
    path = Path(os.environ.get("TINYGRAD_LLM_DATA", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set TINYGRAD_LLM_DATA or place ../shared/data)")
    return path


@pytest.fixture(scope="session")
def torch():
    """PyTorch as an oracle; skipped with a reason when not installed (CI installs the CPU build)."""
    return pytest.importorskip("torch", reason="PyTorch is not installed (oracle only: pip install torch==2.13.0)")


@pytest.fixture(scope="session")
def transformers(torch):
    """Hugging Face transformers as an oracle for checkpoints; skipped with a reason when not installed."""
    transformers = pytest.importorskip(
        "transformers", reason="Hugging Face transformers is not installed (oracle only: pip install transformers)"
    )
    transformers.logging.set_verbosity_error()
    return transformers


@contextlib.contextmanager
def serve_folder(root):
    """A local HTTP server of the folder ``root`` (a stand-in for the Hugging Face hub in download tests):
    yields (its URL, the list of paths requested so far)."""
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


def load_script(path: Path, name: str) -> ModuleType:
    """A script of benchmarks/ or tests/tools/ loaded by its path, as module ``name``: benchmarks/ on sys.path
    would shadow installed packages (its kernels.py, Hugging Face's ``kernels``). The module stays in
    sys.modules under its own name, where its dataclasses look it up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
