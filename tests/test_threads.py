"""The thread policy (tinygrad_llm.runtime.threads): overrides, the per-size choice for BLAS, the load monitor, the
CLI; runtime.matmul."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_llm.cli import main
from tinygrad_llm.runtime import matmul, settings, threads

pytestmark = pytest.mark.usefixtures("fresh_thread_policy")  # each test starts from the automatic policy


def blas_threads_now() -> int:
    libs = threads._blas_controllers()
    if not libs:
        pytest.skip("threadpoolctl finds no BLAS to control in this NumPy")
    return libs[0].get_num_threads()


PRODUCTS = [
    ((256, 768), (768, 768)),  # 151M multiply-adds, cut by columns
    ((1024, 768), (768, 256)),  # 201M, cut by rows
    ((2, 512, 512), (512, 768)),  # batched, each matrix 201M
    ((3, 1, 96, 1700), (2, 1700, 900)),
]  # broadcast batch dimensions, 147M each


def test_the_bits_of_a_product_do_not_depend_on_the_thread_count():
    """The same result at 1, 2 and 3 threads, automatic or fixed: a resumed run equals a straight one."""
    rng = np.random.default_rng(0)
    for shape_a, shape_b in PRODUCTS:
        a, b = rng.standard_normal(shape_a, dtype=np.float32), rng.standard_normal(shape_b, dtype=np.float32)
        m, k, n = shape_a[-2], shape_a[-1], shape_b[-1]
        assert threads.blocks_for(m, k, n) > 1, (shape_a, shape_b)
        results = []
        for n_threads in (1, 2, 3):
            threads.set_threads(n_threads)
            results.append(matmul(a, b))
            assert blas_threads_now() == 1  # OpenBLAS's own threads would change the sums' order
        threads.set_threads(None)
        results.append(matmul(a, b))  # automatic, whatever the monitor lends
        for result in results[1:]:
            np.testing.assert_array_equal(result, results[0])
        assert results[0].dtype == np.float32 and results[0].shape == np.matmul(a, b).shape
        np.testing.assert_allclose(results[0], np.matmul(a, b), rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_blocks_run_on_the_threads_lent_and_small_products_are_one_call(monkeypatch):
    assert threads.blocks_for(32, 32, 32) == 1 and threads.blocks_for(768, 128, 128) == 1  # 12.6M: one call
    assert threads.blocks_for(2, 1 << 30, 2) == 1  # too few rows and columns to cut
    seen = set()
    real_matmul = np.matmul

    def spying_matmul(*args, **kwargs):
        import threading

        seen.add(threading.current_thread().name)
        return real_matmul(*args, **kwargs)

    monkeypatch.setattr(threads.np, "matmul", spying_matmul)
    a = np.ones((1024, 768), np.float32)
    threads.set_threads(2)
    np.testing.assert_array_equal(matmul(a, a.T[:, :256]), np.full((1024, 256), 768, np.float32))
    assert any(name.startswith("tinygrad-llm") for name in seen) and len(seen) == 2
    seen.clear()
    threads.set_threads(1)
    matmul(a, a.T[:, :256])
    assert len(seen) == 1  # one thread: the same blocks, one after the other, here
    v = np.ones(1 << 20, np.float32)
    assert float(matmul(v, v)) == v.size  # a dot product: one call


def test_environment_variable_overrides_and_bad_values_are_named(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.available() == 3
    assert any("fixed by TINYGRAD_LLM_THREADS=3" in line for line in threads.describe())
    monkeypatch.setattr(settings, "_current", None)  # read the environment again
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


class OtherArray(np.ndarray):
    """Stands for a CuPy array (any array but numpy.ndarray itself): records the shapes each product saw."""

    products: list = []

    def __matmul__(self, other):
        OtherArray.products.append((self.shape, other.shape))
        return np.matmul(np.asarray(self), np.asarray(other)).view(OtherArray)


def test_a_batched_linear_layer_is_one_2d_product_on_every_array_library(monkeypatch):
    """(B, T, k) @ (k, n) folds into one (B*T, k) @ (k, n) product for CuPy too (its > 2-D matmul sends float16
    and bfloat16 to slow or failing paths), with the result NumPy gives; a batched product is one cuBLAS
    strided-batched GEMM (runtime.batched_gemm, tests/test_gpu_products.py)."""
    from tinygrad_llm.runtime import products

    batched = []
    monkeypatch.setattr(products, "batched_gemm", lambda a, b: batched.append((a.shape, b.shape)))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    OtherArray.products.clear()
    out = matmul(a.view(OtherArray), b.view(OtherArray))
    assert OtherArray.products == [((15, 4), (4, 6))] and out.shape == (3, 5, 6)
    np.testing.assert_array_equal(np.asarray(out), matmul(a, b))
    OtherArray.products.clear()
    matmul(a.view(OtherArray), rng.standard_normal((3, 4, 6)).astype(np.float32).view(OtherArray))
    assert OtherArray.products == [] and batched == [((3, 5, 4), (3, 4, 6))]  # a batched product: one GEMM


def test_overridden_changes_a_setting_for_a_block_only():
    from tinygrad_llm import runtime

    threads.set_threads(3)
    with runtime.overridden(threads=1) as now:
        assert threads.available() == 1 and now.threads == 1
    assert threads.available() == 3
    with pytest.raises(TypeError):
        with runtime.overridden(cores=2):
            pass
    with pytest.raises(ValueError, match="expected a positive integer"):
        with runtime.overridden(threads=0):
            pass
    assert threads.available() == 3
