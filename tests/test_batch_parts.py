"""A batch cut into parts computed side by side (tinygrad_llm.runtime.batch_parts) and what it stands on:
tinygrad_llm.grad, per-thread grad mode and generators, threads.run_parallel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_train import make_trainer

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.runtime import backward_in_parts, split_count, threads
from tinygrad_llm.train.losses import calc_loss_batch

CONFIG = GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)


pytestmark = pytest.mark.usefixtures("fresh_thread_policy")  # each test starts from the automatic policy


class Load:
    """A load monitor that says the other processes use ``busy`` of this machine's cores."""

    def __init__(self, busy: float):
        self.busy = busy

    def others_busy(self) -> float:
        return self.busy


def two_cores(monkeypatch, busy: float) -> None:
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "_monitor", Load(busy))


def batch(rows=7, padded_from=5):
    rng = np.random.default_rng(0)
    x = rng.integers(0, CONFIG.vocab_size, (rows, CONFIG.context_length))
    y = rng.integers(0, CONFIG.vocab_size, (rows, CONFIG.context_length))
    y[padded_from:, 3:] = -100  # instruction data's padding: the last rows count for fewer targets
    return x, y


def loss_and_grads(model, x, y, parts, n_threads, dropout=False, scale=1.0):
    model.train(dropout)
    tl.manual_seed(1)
    threads.set_threads(n_threads)
    for p in model.parameters():
        p.grad = None
    loss = backward_in_parts(calc_loss_batch, x, y, model, "cpu", None, parts=parts, scale=scale)
    return float(loss), {name: p.grad.copy() for name, p in model.named_parameters()}


def test_parts_give_the_loss_and_gradients_of_the_whole_batch():
    """Each part's mean weighted by its share of the counted targets: the whole batch's mean, padding and all."""
    tl.manual_seed(0)
    model = GPTModel(CONFIG)
    x, y = batch()
    whole_loss, whole = loss_and_grads(model, x, y, parts=1, n_threads=1)
    for parts in (2, 3, 7):
        loss, grads = loss_and_grads(model, x, y, parts=parts, n_threads=2)
        assert loss == pytest.approx(whole_loss, rel=1e-6)
        for name, g in whole.items():
            np.testing.assert_allclose(grads[name], g, rtol=1e-4, atol=1e-7, err_msg=f"{parts} parts: {name}")
    loss, grads = loss_and_grads(model, x, y, parts=3, n_threads=2, scale=0.25)  # gradient accumulation's scale
    assert loss == pytest.approx(whole_loss, rel=1e-6)  # the loss comes back unscaled
    np.testing.assert_allclose(grads["out_head.weight"], 0.25 * whole["out_head.weight"], rtol=1e-4, atol=1e-8)


def test_the_bits_do_not_depend_on_how_many_threads_ran_the_parts():
    """Dropout on: each part draws from its own generator, so one thread or two give the same bits."""
    tl.manual_seed(0)
    model = GPTModel(CONFIG)
    x, y = batch()
    one_loss, one = loss_and_grads(model, x, y, parts=3, n_threads=1, dropout=True)
    two_loss, two = loss_and_grads(model, x, y, parts=3, n_threads=2, dropout=True)
    plain_loss, _ = loss_and_grads(model, x, y, parts=1, n_threads=1, dropout=True)
    assert one_loss == two_loss and one_loss != plain_loss  # dropout really drew (other masks than unsplit)
    for name, g in one.items():
        np.testing.assert_array_equal(two[name], g, err_msg=name)


def test_a_part_without_counted_targets_is_skipped_and_an_empty_batch_is_nan():
    tl.manual_seed(0)
    model = GPTModel(CONFIG)
    x, y = batch(rows=4)
    y[2:] = -100
    whole_loss, whole = loss_and_grads(model, x, y, parts=1, n_threads=1)
    loss, grads = loss_and_grads(model, x, y, parts=4, n_threads=2)
    assert np.isfinite(loss) and loss == pytest.approx(whole_loss, rel=1e-6)
    np.testing.assert_allclose(grads["out_head.weight"], whole["out_head.weight"], rtol=1e-4, atol=1e-7)
    y[:] = -100
    model.train(False)
    assert np.isnan(backward_in_parts(calc_loss_batch, x, y, model, "cpu", None, parts=2))


def test_split_count_follows_the_shape_and_the_setting_never_the_load(monkeypatch):
    model = GPTModel(CONFIG)  # ~30K parameters
    x, _ = batch(rows=8)
    assert split_count(x, model) == 1  # 128 tokens x 30K: far below PART_MIN_MACS
    monkeypatch.setattr(threads, "PART_MIN_MACS", 1)
    two_cores(monkeypatch, busy=0.0)
    assert threads.available() == 2 and split_count(x, model) == 2  # one part per core
    two_cores(monkeypatch, busy=1.0)  # a busy machine: the same parts, run one after the other
    assert threads.available() == 1 and split_count(x, model) == 2
    threads.set_threads(3)
    assert split_count(x, model) == 3 and split_count(x[:2], model) == 2  # never more parts than rows
    threads.set_threads(1)
    assert split_count(x, model) == 1  # --threads 1: the whole batch at once
    threads.set_threads(2)
    monkeypatch.setattr(threads, "PART_MAX_PARAMETERS", 10_000)
    assert split_count(x, model) == 1  # a big model: its products are cut into blocks instead


@pytest.mark.slow
def test_a_trainer_run_in_parts_is_the_same_on_one_thread_and_two(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "PART_MIN_MACS", 1)  # the tiny model's batches of 4 are cut in parts
    parts, run_parallel = [], threads.run_parallel
    monkeypatch.setattr(threads, "run_parallel", lambda tasks: parts.append(len(tasks)) or run_parallel(tasks))
    runs = []
    for busy in (0.0, 1.0):  # idle: the parts side by side; busy: one after the other
        two_cores(monkeypatch, busy)
        trainer = make_trainer(tmp_path / f"busy-{busy}", max_steps=4, eval_interval=4)
        trainer.fit()
        runs.append(trainer.model.state_dict())
    assert set(parts) == {2} and len(parts) == 2 * 4 * 2  # 2 runs x 4 steps x 2 micro-batches, each in 2 parts
    for name, value in runs[0].items():
        np.testing.assert_array_equal(runs[1][name], value, err_msg=name)


def test_grad_leaves_grad_alone_and_its_results_add_up_over_calls():
    """What the parts after the first rely on (tl.grad replaced the engine's gradient sinks)."""
    w = tl.Tensor(np.arange(3.0), requires_grad=True)
    w.grad = np.full(3, 10.0)
    (g1,) = tl.grad((w * 2.0).sum(), [w])
    (g2,) = tl.grad((w * w).sum(), [w])
    np.testing.assert_array_equal(w.grad, np.full(3, 10.0))
    assert isinstance(g1, tl.Tensor) and not g1.requires_grad
    np.testing.assert_array_equal(g1.data + g2.data, 2.0 + 2.0 * np.arange(3.0))
    (w * 3.0).sum().backward()  # outside the block: into .grad again
    np.testing.assert_array_equal(w.grad, np.full(3, 13.0))


def test_grad_mode_module_path_and_generator_are_per_thread():
    seen = {}

    def other_thread():
        seen["grad"] = tl.is_grad_enabled()
        seen["draw"] = backend.get_generator("cpu").random()

    with tl.no_grad(), backend.use_generator(np.random.default_rng(5)):
        assert not tl.is_grad_enabled()
        mine = backend.get_generator("cpu").random()
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert seen["grad"] is True  # a new thread records, whatever this one does (as in PyTorch)
    assert mine == np.random.default_rng(5).random() and seen["draw"] != mine
    assert tl.is_grad_enabled()


def test_run_parallel_keeps_order_waits_for_all_and_raises_the_first_error(monkeypatch):
    two_cores(monkeypatch, busy=0.0)
    names, inside = [], []

    def task(i):
        names.append(threading.current_thread().name)
        inside.append(threads.available())
        return i * i

    assert threads.run_parallel([lambda i=i: task(i) for i in range(5)]) == [0, 1, 4, 9, 16]
    assert len(set(names)) == 2 and inside == [1] * 5  # inside a task its products stay on its thread
    finished = []

    def slow():
        threading.Event().wait(0.05)
        finished.append(True)

    def fails():
        raise ValueError("part 0 failed")

    with pytest.raises(ValueError, match="part 0 failed"):
        threads.run_parallel([fails, slow])
    assert finished == [True]  # the other task had finished before the error came back


def test_kernels_run_in_threads_at_once_and_agree_with_one_thread():
    """nogil kernels called from two threads: the same results as one after the other."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((64, 256)).astype(np.float32) for _ in range(4)]
    serial = [F.gelu(tl.Tensor(x)).data for x in xs]
    threads.set_threads(2)
    parallel = threads.run_parallel([lambda x=x: F.gelu(tl.Tensor(x)).data for x in xs])
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ctrl_c_inside_a_part_leaves_the_last_whole_step_and_resume_is_exact(tmp_path, monkeypatch):
    """A real SIGINT from inside a part's forward pass (on either thread): the step is rewound, the checkpoint
    is the last finished step's, and the resumed run equals a straight one, bit for bit."""
    from test_train import interrupt_at

    from tinygrad_llm.checkpoint import load_checkpoint
    from tinygrad_llm.train.trainer import read_log

    monkeypatch.setattr(threads, "PART_MIN_MACS", 1)  # every micro-batch in 2 parts
    two_cores(monkeypatch, busy=0.0)
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    for call in (13, 14):  # step 4's first micro-batch: its first part, its second (4 parts a step)
        out = tmp_path / f"resumed-{call}"
        interrupted = make_trainer(out)
        with monkeypatch.context() as patch:
            interrupt_at(patch, interrupted, "forward", call)
            with pytest.raises(KeyboardInterrupt):
                interrupted.fit()
        assert load_checkpoint(out).trainer_state["data"]["position"] == 3 * 2  # 3 whole steps of 2 batches
        resumed = make_trainer(out, seed=99)
        assert resumed.load_state() == 3
        resumed.fit()
        for name, value in straight.model.state_dict().items():
            np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=f"call {call}: {name}")
        assert [{**r, "elapsed_s": 0} for r in read_log(out)] == [
            {**r, "elapsed_s": 0} for r in read_log(tmp_path / "straight")
        ]
