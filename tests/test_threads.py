"""The thread policy (tinygrad_llm.threads): overrides, the per-size choice for BLAS, the load monitor, the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from tinygrad_llm import threads
from tinygrad_llm.cli import main


@pytest.fixture(autouse=True)
def fresh_policy(monkeypatch):
    """Each test starts from the automatic policy with nothing read yet, and leaves it so."""
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "_fixed", None)
    monkeypatch.setattr(threads, "_env_read", False)
    monkeypatch.setattr(threads, "_monitor", None)
    yield
    threads._blas_threads = None  # the next matmul sets BLAS again


def blas_threads_now() -> int:
    libs = threads._blas_controllers()
    if not libs:
        pytest.skip("threadpoolctl finds no BLAS to control in this NumPy")
    return libs[0].get_num_threads()


def test_set_threads_fixes_blas_threads_by_product_size():
    threads.set_threads(2)
    assert threads.available() == 2
    rng = np.random.default_rng(0)
    big_a, big_b = rng.standard_normal((256, 128), dtype=np.float32), rng.standard_normal((128, 64), dtype=np.float32)
    np.testing.assert_array_equal(threads.matmul(big_a, big_b), big_a @ big_b)  # 2M multiply-adds: the threads
    assert blas_threads_now() == 2
    small_a = big_a[:8, :8]
    np.testing.assert_array_equal(threads.matmul(small_a, small_a), small_a @ small_a)  # 512: one thread
    assert blas_threads_now() == 1
    threads.set_threads(1)
    threads.matmul(big_a, big_b)
    assert blas_threads_now() == 1


def test_batched_and_vector_products_are_sized_per_matrix():
    a = np.ones((64, 32, 32), np.float32)  # 64 products of 32 x 32 x 32: each far below the threshold
    assert threads.blas_threads_for(32 * 32 * 32) == 1
    threads.set_threads(2)
    np.testing.assert_array_equal(threads.matmul(a, a), a @ a)
    assert blas_threads_now() == 1
    v = np.ones(threads.BLAS_PARALLEL_MIN_MNK, np.float32)  # a dot product of 1M: the threshold exactly
    assert float(threads.matmul(v, v)) == v.size
    assert blas_threads_now() == 2


def test_environment_variable_overrides_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.available() == 3
    assert any("fixed by TINYGRAD_LLM_THREADS=3" in line for line in threads.describe())
    monkeypatch.setattr(threads, "_env_read", False)
    monkeypatch.setenv(threads.ENV, "two")
    with pytest.raises(ValueError, match="TINYGRAD_LLM_THREADS='two': expected a positive integer"):
        threads.available()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="expected a positive integer"):
            threads.set_threads(bad)


def test_automatic_policy_starts_on_one_thread_then_lends_the_cores_others_leave(monkeypatch):
    assert threads.available() == 1  # the monitor has not seen a whole interval yet
    monitor = threads._monitor
    monkeypatch.setattr(monitor, "others_busy", lambda: 0.1)
    monkeypatch.setattr(threads, "cores", lambda: 4)
    assert threads.available() == 4
    monkeypatch.setattr(monitor, "others_busy", lambda: 1.5)  # others hold 1.5 cores: 2.5 left, we take 2
    assert threads.available() == 2
    monkeypatch.setattr(monitor, "others_busy", lambda: 7.0)  # a saturated machine: never below one
    assert threads.available() == 1


def test_load_monitor_measures_other_processes_not_ours(monkeypatch):
    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0.05)
    monitor = threads.LoadMonitor()
    assert monitor.others_busy() is None
    import time

    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # keep our own core busy: the monitor must not count it as others'
        pass
    others = monitor.others_busy()
    assert others is not None and 0.0 <= others <= threads.cores()
    # the same arithmetic on made-up counters: 3 cores' worth of busy ticks over 1 s, 1 s of it ours
    start = time.monotonic() - 1.0
    monitor.last, monitor.previous = (start, 0, 0.0), None
    monkeypatch.setattr(monitor, "_sample", lambda: (start + 1.0, 3 * monitor.tick, 1.0))
    assert monitor.others_busy() == pytest.approx(2.0)
    # then a quiet interval (nobody but us): still 2.0, the busier of the last two; quiet again: 0
    for want in (2.0, 0.0):
        start = time.monotonic() - 1.0
        monitor.last = (start, 0, 0.0)
        monkeypatch.setattr(monitor, "_sample", lambda: (start + 1.0, monitor.tick, 1.0))
        assert monitor.others_busy() == pytest.approx(want)


def test_cli_threads_flag_and_info(capsys):
    assert main(["info", "--threads"]) == 0
    out = capsys.readouterr().out
    assert "automatic" in out and "TINYGRAD_LLM_THREADS" in out and "kernels" in out
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--checkpoint", "x", "--prompt", "a", "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads: expected a positive integer, got 0" in capsys.readouterr().err
    assert main(["generate", "--checkpoint", "no-such-folder", "--prompt", "a", "--threads", "2"]) == 1
    assert threads.available() == 2  # applied before the command ran (which then failed on the folder)
