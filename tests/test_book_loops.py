"""The book's loops step as the book prints them (zero_grad, loss, backward, step: the whole batch at once),
the command line's loops run the one fast step (train/step.py) with the same results where it has one part,
and the one signal guard (train/signals.py) holds a data-parallel stop until the processes agree."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from test_batch_parts import two_cores

import tinygrad_llm as tl
from tinygrad_llm import runtime
from tinygrad_llm.data import DataLoader
from tinygrad_llm.finetune import classifier
from tinygrad_llm.optim import AdamW
from tinygrad_llm.runtime import split_count, threads
from tinygrad_llm.train.losses import calc_loss_batch
from tinygrad_llm.train.signals import Interrupted, catch_signals
from tinygrad_llm.train.simple import train_model_simple
from tinygrad_llm.train.step import backward_step, train_step

pytestmark = pytest.mark.usefixtures("fresh_thread_policy")

TOKENIZER = tl.get_tokenizer("byte")
CONFIG = tl.GPTConfig(vocab_size=TOKENIZER.n_vocab, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def fresh_model(head: bool = False, context_length: int = 16):
    tl.manual_seed(3)
    model = tl.GPTModel(tl.GPTConfig(**{**CONFIG.to_dict(), "context_length": context_length}))
    return classifier.add_classification_head(model, 2) if head else model


def batches(n=3, rows=6, classes=False):
    rng = np.random.default_rng(1)
    x = rng.integers(0, CONFIG.vocab_size, (n, rows, CONFIG.context_length))
    y = rng.integers(0, 2, (n, rows)) if classes else rng.integers(0, CONFIG.vocab_size, x.shape)
    return list(zip(x, y))


def weights(model) -> dict:
    return {name: value.copy() for name, value in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name], err_msg=name)


def by_hand(model, data, loss_batch, step) -> dict:
    optimizer = AdamW(model.parameters(), lr=1e-2)
    model.train()
    for x, y in data:
        step(model, optimizer, x, y, loss_batch)
    return weights(model)


def book_step(model, optimizer, x, y, loss_batch):
    optimizer.zero_grad()
    loss = loss_batch(x, y, model, "cpu")
    loss.backward()
    optimizer.step()


def fast_step(model, optimizer, x, y, loss_batch):
    train_step(model, optimizer, [(x, y)], "cpu", loss_batch=loss_batch)


@pytest.mark.parametrize("loop", ["train_model_simple", "train_classifier_simple"])
def test_book_loops_backward_the_whole_batch_where_the_fast_step_cuts_it(monkeypatch, loop, capsys):
    """On two cores with every batch big enough to cut, the book's loop still steps as its four lines by hand
    (one backward of the whole batch), and not as the fast step (two parts: sums in another order)."""
    monkeypatch.setattr(threads, "PART_MIN_MACS", 1)
    two_cores(monkeypatch, busy=0.0)
    is_classifier = loop == "train_classifier_simple"
    data = batches(classes=is_classifier)
    loss_batch = classifier.calc_loss_batch if is_classifier else calc_loss_batch
    model = fresh_model(is_classifier)
    assert split_count(data[0][0], model) == 2  # the fast step would cut these batches in two
    optimizer = AdamW(model.parameters(), lr=1e-2)
    if is_classifier:
        classifier.train_classifier_simple(model, data, data[:1], optimizer, "cpu", 1, 100, 1, log=None)
    else:
        train_model_simple(model, data, data[:1], optimizer, "cpu", 1, 100, 1, "a", TOKENIZER)
    book = by_hand(fresh_model(is_classifier), data, loss_batch, book_step)
    assert_same_weights(weights(model), book)
    fast = by_hand(fresh_model(is_classifier), data, loss_batch, fast_step)
    assert any(not np.array_equal(fast[name], book[name]) for name in book)  # the test can tell them apart


@pytest.fixture
def one_thread():
    """--threads 1 inside the test, the previous setting after it: the fast step then has one part."""
    with runtime.overridden(threads=1):
        yield


def test_the_fast_step_in_one_part_is_the_books_step_bit_for_bit(one_thread):
    """At one thread the fast step has one part: the four lines exactly, plain and accumulated over one
    micro-batch; over two micro-batches its gradient is their mean."""
    data = batches()
    assert_same_weights(
        by_hand(fresh_model(), data, calc_loss_batch, fast_step),
        by_hand(fresh_model(), data, calc_loss_batch, book_step),
    )
    (x1, y1), (x2, y2) = data[:2]
    grads = []
    for micro_batches in ([(x1, y1), (x2, y2)], [(np.concatenate([x1, x2]), np.concatenate([y1, y2]))]):
        model = fresh_model()
        loss = backward_step(model, AdamW(model.parameters(), lr=1e-2), micro_batches, "cpu")
        grads.append((float(loss), {name: p.grad.copy() for name, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for name, grad in grads[1][1].items():
        np.testing.assert_allclose(grads[0][1][name], grad, rtol=1e-4, atol=1e-7, err_msg=name)


def test_the_clis_instruction_and_dpo_loops_equal_the_books_in_one_part(capsys, one_thread):
    """finetune-instruct's and finetune-dpo's loops (the fast step) give the book loops' numbers where the
    fast step has one part (one thread; DPO's batches are never cut)."""
    from test_finetune_dpo import _byte_preferences

    from tinygrad_llm.finetune import dpo
    from tinygrad_llm.finetune.instruction import train_instruction_model
    from tinygrad_llm.finetune.preference import PreferenceDataset

    data = batches()
    results = []
    for loop in (train_model_simple, train_instruction_model):
        model = fresh_model()
        results.append(loop(model, data, data[:1], AdamW(model.parameters(), lr=1e-2), "cpu", 2, 2, 1, "a", TOKENIZER))
        results.append(weights(model))
    assert results[0] == results[2]
    assert_same_weights(results[1], results[3])

    train_set = PreferenceDataset(_byte_preferences(16), TOKENIZER)
    results = []
    for loop in (dpo.train_model_dpo_simple, dpo.train_model_dpo):
        model, reference = fresh_model(context_length=192), fresh_model(context_length=192)
        loader = DataLoader(train_set, batch_size=4, shuffle=True, seed=5)
        results.append(
            loop(
                model,
                reference,
                loader,
                loader,
                AdamW(model.parameters(), lr=1e-3),
                num_epochs=1,
                beta=0.1,
                eval_freq=2,
                eval_iter=1,
                log=None,
            )
        )
        results.append(weights(model))
    assert results[0] == results[2] and len(results[0]["steps"]) == 2
    assert_same_weights(results[1], results[3])


class TwoProcesses:
    """A communicator of two processes whose other process was (or was not) signalled."""

    world_size, rank, is_root = 2, 0, True

    def __init__(self, other_signalled: bool):
        self.other = float(other_signalled)

    def sum(self, value: float) -> float:
        return value + self.other


def test_a_data_parallel_stop_waits_for_the_check_where_the_processes_agree():
    from tinygrad_llm.train.parallel import stop_together

    with catch_signals(lambda message: None) as guard:
        with stop_together(TwoProcesses(False), guard) as check:
            signal.raise_signal(signal.SIGTERM)  # only noted, even at the end of a deferred block
            with guard.deferred():
                pass
            with pytest.raises(Interrupted) as stopped:
                check()
        assert stopped.value.signum == signal.SIGTERM
    with catch_signals(lambda message: None) as guard:
        with stop_together(TwoProcesses(True), guard) as check, pytest.raises(Interrupted):
            check()  # the other process was signalled: this one stops at the same step
        signal.raise_signal(signal.SIGINT)  # stopping: ignored
        with stop_together(TwoProcesses(False), guard) as check:
            check()
