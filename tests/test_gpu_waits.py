"""How often the fine-tuning loops and the evaluations wait for a GPU, on the stand-in GPU arrays of
tests/gpu_stand_in.py (which count every way to the host): one copy per optimizer step, one per evaluation.
The Trainer's step and the gradient norms: tests/test_gpu_path.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gpu_stand_in import HostCopies, use_stand_in

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW


class StepCounter:
    """Stands in for train.progress.Progress, a loop's ``bar``: after each optimizer step the loop calls
    ``step(loss)``; it formats the loss as the bar does and notes the copies to the host since the step began
    (``run_loop`` zeroes the count as each step begins: the loops' evaluations between steps are not counted)."""

    enabled = False  # (the loops then print their evaluation lines; none is due here)

    def __init__(self):
        self.copies, self.losses = [], []

    def step(self, loss=None, **extra) -> None:
        self.losses.append(f"{loss:.4f}")  # what Progress shows: a device array would be copied here
        self.copies.append(HostCopies.count)


@pytest.fixture
def gpu(monkeypatch):
    """The stand-in GPU: arrays made from stand-in arrays stay on it, operations take their module from their
    inputs (as when CuPy is loaded), and the NumPy reference of every kernel runs."""
    use_stand_in(monkeypatch)
    monkeypatch.setattr(backend, "cupy_loaded", lambda: True)
    with dispatch.use("numpy"):
        yield HostCopies


def tiny_gpt(classes: int | None = None, on_gpu: bool = True, seed: int = 0) -> GPTModel:
    tl.manual_seed(seed)
    model = GPTModel(GPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    if classes:
        tl.finetune.add_classification_head(model, classes)
    if on_gpu:
        for p in model.parameters():
            p.data = p.data.view(HostCopies)
    return model


def class_batches(n=3):
    rng = np.random.default_rng(1)
    return [(rng.integers(0, 13, (2, 6)), rng.integers(0, 2, 2)) for _ in range(n)]


def lm_batches(n=3):
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(n):
        ids = rng.integers(0, 13, (2, 7))
        targets = ids[:, 1:].copy()
        targets[0, :2] = -100  # an instruction's prompt: not learned
        batches.append((ids[:, :-1], targets))
    return batches


def preference_batches(n=3, precomputed=True):
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(n):
        batch = {key: rng.integers(0, 13, (2, 6)) for key in ("chosen", "rejected")}
        for key in ("chosen", "rejected"):
            mask = np.zeros((2, 6), bool)
            mask[:, 2:] = True  # the response
            batch[f"{key}_mask"] = mask
            if precomputed:
                batch[f"reference_{key}_logprobs"] = rng.normal(-2.5, 0.1, 2)
        batches.append(batch)
    return batches


def run_loop(loop: str, precision: str, bar: StepCounter, monkeypatch) -> GPTModel:
    from tinygrad_llm.finetune import classifier, dpo, instruction
    from tinygrad_llm.finetune.classifier import train_classifier
    from tinygrad_llm.finetune.instruction import train_instruction_model
    from tinygrad_llm.train.step import train_step

    def counted_step(*args, **kwargs):
        HostCopies.count = 0
        return train_step(*args, **kwargs)

    for module in (classifier, dpo, instruction):
        monkeypatch.setattr(module, "train_step", counted_step)
    model = tiny_gpt(classes=2 if loop == "classifier" else None)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    if loop == "classifier":
        batches = class_batches()
        train_classifier(
            model, batches, batches[:1], optimizer, None, 1, eval_freq=100, log=None, precision=precision, bar=bar
        )
    elif loop == "instruction":
        batches = lm_batches()
        tokenizer = tl.get_tokenizer("char", text="abcdefghijklm")
        train_instruction_model(
            model, batches, batches[:1], optimizer, None, 1, 100, 1, "abc", tokenizer, precision=precision, bar=bar
        )
    else:
        reference = tiny_gpt(seed=1) if loop == "dpo-reference" else None
        batches = preference_batches(precomputed=reference is None)
        dpo.train_model_dpo(model, reference, batches, batches[:1], optimizer, 1, 0.1, 100, 1, log=None, bar=bar)
    return model


@pytest.mark.parametrize(
    "loop, precision",
    [
        ("classifier", "fp16"),
        ("classifier", "fp32"),
        ("instruction", "fp16"),
        ("dpo", "fp32"),
        ("dpo-reference", "fp32"),
    ],
)
def test_a_fine_tuning_step_copies_to_the_host_once(gpu, monkeypatch, loop, precision, capsys):
    """The loss and fp16's inf/NaN verdict come to the host together, after the step's work is queued (before:
    the verdict, then the loss; the classifier's and DPO's losses also checked their ids on the device, and
    DPO copied its rewards and the reference's log-probabilities to the host in every forward pass)."""
    bar = StepCounter()
    model = run_loop(loop, precision, bar, monkeypatch)
    assert bar.copies == [1, 1, 1], bar.copies
    assert all(0.1 < float(loss) < 5.0 for loss in bar.losses), bar.losses
    for p in model.parameters():  # it ran on the stand-in GPU
        assert isinstance(p.data, HostCopies)


def test_an_fp16_overflow_is_still_skipped_with_one_copy(gpu):
    """The verdict read together with the loss still decides: an inf gradient skips the update and halves the
    scale."""
    from tinygrad_llm.amp import MixedPrecision
    from tinygrad_llm.train.step import train_step

    model = tiny_gpt()
    optimizer = AdamW(model.parameters(), lr=1e-2)
    amp = MixedPrecision("fp16", model.device)
    amp.scaler._scale = 2.0**200  # loss * scale overflows float32: every gradient is inf
    before = [p.data.copy() for p in model.parameters()]
    HostCopies.count = 0
    loss = train_step(model, optimizer, lm_batches(1), None, amp)
    assert HostCopies.count == 1 and isinstance(loss, float) and math.isfinite(loss)
    assert amp.scaler.get_scale() == 2.0**199
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))


def _plain_and_gpu(classes=None, seed=0):
    """The same weights twice: on the host (to compare with) and on the stand-in GPU."""
    return tiny_gpt(classes, on_gpu=False, seed=seed), tiny_gpt(classes, seed=seed)


@pytest.mark.parametrize(
    "what", ["lm", "lm-evaluate", "accuracy", "accuracy-and-loss", "class-loss", "dpo", "dpo-evaluate"]
)
def test_an_evaluation_copies_to_the_host_once(gpu, what):
    """Each batch's loss (and right answers) is summed on the device; one copy brings the result(s), where
    each batch copied its own (and evaluate_model / evaluate_dpo_loss_loader one per loader)."""
    from tinygrad_llm.finetune import classifier, dpo
    from tinygrad_llm.train import calc_loss_loader
    from tinygrad_llm.train.simple import evaluate_model

    plain, model = _plain_and_gpu(2 if what in ("accuracy", "accuracy-and-loss", "class-loss") else None)
    reference = dict(zip((plain, model), _plain_and_gpu(seed=1)))  # DPO's reference, on the same device
    for m in (plain, model, *reference.values()):
        m.eval()
    score = {
        "lm": lambda m: calc_loss_loader(lm_batches(), m, num_batches=3),
        "lm-evaluate": lambda m: evaluate_model(m, lm_batches(), lm_batches(2), None, 3),
        "accuracy": lambda m: classifier.calc_accuracy_loader(class_batches(4), m),
        "accuracy-and-loss": lambda m: classifier.calc_accuracy_and_loss_loader(class_batches(4), m),
        "class-loss": lambda m: classifier.calc_loss_loader(class_batches(4), m),
        "dpo": lambda m: dpo.compute_dpo_loss_loader(preference_batches(precomputed=False), m, reference[m]),
        "dpo-evaluate": lambda m: tuple(
            dpo.evaluate_dpo_loss_loader(m, None, preference_batches(), preference_batches(2), eval_iter=None).values()
        ),
    }[what]
    HostCopies.count = 0
    got = score(model)
    assert HostCopies.count == 1
    want = score(plain)
    assert type(got) is type(want)
    for g, w in zip(np.atleast_1d(got), np.atleast_1d(want)):
        assert isinstance(g, float) and g == pytest.approx(w, rel=1e-5, abs=1e-7)
