"""The training loop: it learns, resumes bit for bit, and stops cleanly on a non-finite loss."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.checkpoint import load_checkpoint
from tinygrad_llm.data import GPTDataset
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.train.corpus import CorpusError, builtin_corpus, load_corpus, read_text_file
from tinygrad_llm.train.plot import matplotlib_available
from tinygrad_llm.train.trainer import TrainConfig, Trainer, TrainingError, read_log

CONFIG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)


def make_trainer(out, seed=0, **overrides) -> Trainer:
    """A small model on a repeating pattern with noise; dropout on, so generator state matters."""
    tl.manual_seed(seed)
    rng = np.random.default_rng(1)
    ids = (np.arange(600) * 7 % 32 + (rng.random(600) < 0.1)) % 32
    settings = dict(
        max_steps=12, batch_size=4, lr=3e-3, warmup_steps=3, eval_interval=4, eval_iters=2, grad_accum=2, seed=seed
    )
    settings.update(overrides)
    model = GPTModel(CONFIG)
    return Trainer(
        model,
        GPTDataset(ids[:500], 8, stride=3),
        GPTDataset(ids[500:], 8),
        TrainConfig(**settings),
        out,
        log=lambda message: None,
    )


def test_training_lowers_the_loss(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=40, eval_interval=20)
    _, initial_val_loss = trainer.evaluate()
    history = trainer.fit()
    assert initial_val_loss > 3.0  # about ln(32): an untrained model knows nothing
    assert history[-1]["val_loss"] < initial_val_loss - 0.3
    assert [r["step"] for r in history] == [20, 40]
    assert set(history[0]) == {"step", "tokens_seen", "train_loss", "val_loss", "lr", "elapsed_s"}
    assert history[-1]["tokens_seen"] == 40 * 2 * 4 * 8  # steps x micro-batches x batch x context


@pytest.mark.slow
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    interrupted = make_trainer(tmp_path / "resumed")
    interrupted.fit(stop_after=6)  # between evaluations: a checkpoint at step 6, as Ctrl-C leaves
    resumed = make_trainer(tmp_path / "resumed", seed=99)  # another seed: everything must come from the checkpoint
    assert resumed.load_state() == 6
    resumed.fit()
    assert read_log(tmp_path / "straight") == [
        {**r, "elapsed_s": s["elapsed_s"]}
        for r, s in zip(read_log(tmp_path / "resumed"), read_log(tmp_path / "straight"))
    ]
    for name, value in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def interrupt_at(monkeypatch, trainer, where: str, call: int) -> None:
    """Send this process SIGINT (a real Ctrl-C) from inside the ``call``-th forward pass ("forward"), parameter
    update ("update") or evaluation ("evaluate") of ``trainer``."""
    import signal

    from tinygrad_llm.train import trainer as trainer_module

    calls = [0]

    def wrap(function):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call:
                signal.raise_signal(signal.SIGINT)
            return function(*args, **kwargs)

        return wrapped

    if where == "forward":
        monkeypatch.setattr(trainer_module, "calc_loss_batch", wrap(trainer_module.calc_loss_batch))
    elif where == "update":
        trainer.optimizer.step = wrap(trainer.optimizer.step)
    else:
        monkeypatch.setattr(trainer_module, "mean_loss_on_device", wrap(trainer_module.mean_loss_on_device))


@pytest.mark.parametrize(
    "where, call, saved_step",
    [
        ("forward", 14, 6),  # the 2nd micro-batch of step 7: its 1st batch was read, dropout drawn; rewound
        ("update", 5, 5),  # mid-update: the update finishes first, step 5 is whole
        ("evaluate", 3, 8),  # during step 8's evaluation: the resumed run evaluates step 8 first
    ],
)
@pytest.mark.slow
def test_resume_after_ctrl_c_is_bitwise_identical(tmp_path, monkeypatch, where, call, saved_step):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    interrupted = make_trainer(tmp_path / "resumed")
    interrupt_at(monkeypatch, interrupted, where, call)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed").trainer_state["data"]["position"] == saved_step * 2  # 2 batches a step
    resumed = make_trainer(tmp_path / "resumed", seed=99)
    assert resumed.load_state() == saved_step
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)
    assert [{**r, "elapsed_s": 0} for r in read_log(tmp_path / "resumed")] == [
        {**r, "elapsed_s": 0} for r in read_log(tmp_path / "straight")
    ]


@pytest.mark.slow
def test_progress_lines_without_a_terminal(tmp_path):
    lines = []
    trainer = make_trainer(tmp_path, max_steps=6, eval_interval=3)
    trainer.log = lines.append  # pytest captures stderr: no terminal, so no bar
    trainer.progress_interval_s = 0.0
    trainer.fit()
    steps = [line.split()[1] for line in lines if "tok/s" in line]
    assert steps == ["1/6", "2/6", "3/6", "3/6", "4/6", "5/6", "6/6", "6/6"]  # progress, and evaluations
    assert "loss" in lines[0] and "val" in lines[3]
    lines.clear()
    trainer = make_trainer(tmp_path / "quiet", max_steps=6, eval_interval=3)
    trainer.log = lines.append
    trainer.progress_interval_s = 3600.0
    trainer.fit()  # the first step's line is the sign of life, then one every progress_interval_s
    assert [line.split()[1] for line in lines] == ["1/6", "3/6", "6/6"]


@pytest.mark.slow
def test_the_best_model_is_kept_and_overfitting_is_named(tmp_path):
    from tinygrad_llm.checkpoint import read_safetensors

    lines = []
    trainer = make_trainer(tmp_path, max_steps=12, eval_interval=2)
    trainer.log = lines.append
    val_losses = iter([3.0, 2.5, 2.4, 2.6, 2.7, 2.9])  # best at step 6, then above it for 3 evaluations
    real_evaluate = trainer.evaluate
    weights_at = {}

    def scripted_evaluate():
        weights_at[trainer.step] = {k: v.copy() for k, v in trainer.model.state_dict().items()}
        return real_evaluate()[0], next(val_losses)

    trainer.evaluate = scripted_evaluate
    trainer.fit(stop_after=10)
    assert trainer.best == {"step": 6, "val_loss": 2.4}
    assert not any("memorising" in line for line in lines)  # 2 evaluations above the best: too early to say
    resumed = make_trainer(tmp_path, seed=5)
    resumed.log = lines.append
    resumed.evaluate = scripted_evaluate
    resumed.load_state()
    trainer = resumed  # (scripted_evaluate reads trainer.step)
    resumed.fit()
    assert resumed.best == {"step": 6, "val_loss": 2.4}  # the best survives a resume
    published = read_safetensors(tmp_path / "model.safetensors")
    for name, value in weights_at[6].items():
        np.testing.assert_array_equal(published[name], value, err_msg=name)  # generate reads the best
    assert load_checkpoint(tmp_path).step == 12  # the latest stays there to resume from
    notes = [line for line in lines if "memorising" in line]
    assert len(notes) == 1 and "best 2.4000 at step 6, now 2.9000" in notes[0] and "--dropout" in notes[0]


def test_log_and_plot_and_checkpoint_files(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=8, keep_last=1)
    trainer.fit()
    for name in ("model.safetensors", "config.json", "log.jsonl"):
        assert (tmp_path / name).is_file(), name
    if matplotlib_available():
        assert (tmp_path / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:  # the plot is optional: without matplotlib the run carries on without it
        assert not (tmp_path / "losses.png").exists()
    assert [p.name for p in (tmp_path / "checkpoints").glob("ckpt-*")] == ["ckpt-000008"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 8 and ckpt.trainer_state["tokens_seen"] == 8 * 2 * 4 * 8
    assert GPTConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == CONFIG


def test_non_finite_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.fit(stop_after=4)
    trainer.model.out_head.weight.data[...] = np.nan
    with pytest.raises(TrainingError, match=r"became nan at step 5.*last good checkpoint"):
        trainer.fit()
    assert load_checkpoint(tmp_path).step == 4
    assert np.isfinite(load_checkpoint(tmp_path).model_state["out_head.weight"]).all()


def test_bad_configurations_are_named():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr must be a finite"):
        TrainConfig(lr=float("nan"))
    model = GPTModel(CONFIG)
    with pytest.raises(TrainingError, match="fewer than one batch"):
        Trainer(
            model,
            GPTDataset(np.arange(20) % 32, 8),
            GPTDataset(np.arange(20) % 32, 8),
            TrainConfig(batch_size=64),
            "unused",
        )


def test_corpus_reading(tmp_path):
    assert "assert" in builtin_corpus() and len(builtin_corpus()) > 100_000
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="empty.txt: the file is empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match="not valid UTF-8 at byte offset 3"):
        read_text_file(tmp_path / "latin1.txt")
    (tmp_path / "blob.bin").write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(CorpusError, match="looks binary"):
        read_text_file(tmp_path / "blob.bin")
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorpusError, match="no text files"):
        load_corpus(tmp_path / "folder")
    (tmp_path / "folder" / "b.txt").write_text("second")
    (tmp_path / "folder" / "a.md").write_text("first")
    assert load_corpus(tmp_path / "folder")[0] == "first\n\nsecond"


def test_grad_accum_steps_on_the_gradient_of_the_whole_batch(tmp_path):
    """One step of grad_accum=2 micro-batches of 4 gives the gradient of one batch of 8 (the same windows;
    dropout off, its masks being drawn per micro-batch): each micro-batch's loss is scaled by 1/grad_accum.
    Without that scale the gradient would be twice as large, which AdamW's first step (scale-free) and
    clipping would hide: so the gradient the optimizer receives is compared, with clipping off."""
    grads = {}
    for accum, batch in ((2, 4), (1, 8)):
        trainer = make_trainer(tmp_path / f"accum{accum}", grad_accum=accum, batch_size=batch, grad_clip=0.0)
        for module in trainer.model.modules():
            if hasattr(module, "p"):  # Dropout
                module.p = 0.0
        step = trainer.optimizer.step

        def seen_then_step(step=step, accum=accum, model=trainer.model):
            grads[accum] = np.concatenate([p.grad.ravel() for p in model.parameters()])
            step()

        trainer.optimizer.step = seen_then_step
        trainer.train_step()
    assert np.abs(grads[1]).max() > 0
    np.testing.assert_allclose(grads[2], grads[1], rtol=1e-4, atol=1e-5 * np.abs(grads[1]).max())
