"""What the training flags of ``tinygrad-llm train`` do, seen in their effect (issue 25), not in their echo:
--grad-clip bounds the gradient the optimizer steps with, --weight-decay moves the weight matrices by exactly
the decay term, --val-fraction decides how many tokens go to val.bin, --keep-last how many checkpoints stay.
(--zero in one process says it does nothing: tests/test_startup.py; under mpiexec: tests/test_dist.py.)

Each run is the CLI's ``main`` in-process on a tiny model (1 layer, 16 wide, context 8), a step or two."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_llm.cli import main
from tinygrad_llm.data.tokens_file import load_tokens, read_header
from tinygrad_llm.optim import AdamW
from tinygrad_llm.train import trainer as trainer_module

TEXT = "the cat sat on the mat. the dog sat on the log. " * 20  # 960 characters, 15 distinct ones
SMALL = ["--preset", "tiny", "--n-layers", "1", "--emb-dim", "16", "--n-heads", "2", "--context-length", "8"]
SMALL += ["--batch-size", "2", "--eval-iters", "1", "--sample-tokens", "1", "--warmup-steps", "0", "--seed", "3"]


@pytest.fixture
def train(tmp_path, monkeypatch):
    """``train(name, *flags)``: ``tinygrad-llm train`` on TEXT into tmp_path/name, with AdamW.step watched.
    Returns (run folder, one record per optimizer step: the gradients' global norm, each parameter before and
    after the step, and each parameter group's lr and weight_decay)."""
    (tmp_path / "text.txt").write_text(TEXT)
    for plot in ("plot_losses", "plot_grad_norms"):  # the pictures take most of a run this short
        monkeypatch.setattr(trainer_module, plot, lambda *args, **kwargs: None)
    real_step = AdamW.step

    def train(name: str, *flags: str):
        steps = []

        def watched_step(optimizer):
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = float(np.sqrt(sum(float((p.grad.astype(np.float64) ** 2).sum()) for p in params)))
            before = [[p.data.copy() for p in group["params"]] for group in optimizer.param_groups]
            real_step(optimizer)
            after = [[p.data.copy() for p in group["params"]] for group in optimizer.param_groups]
            hyper = [(group["lr"], group["weight_decay"]) for group in optimizer.param_groups]
            steps.append({"grad_norm": norm, "before": before, "after": after, "groups": hyper})

        monkeypatch.setattr(AdamW, "step", watched_step)
        out = tmp_path / name
        assert main(["train", "--data", str(tmp_path / "text.txt"), "--out", str(out), *SMALL, *flags]) == 0
        monkeypatch.setattr(AdamW, "step", real_step)
        return out, steps

    return train


def test_grad_clip_bounds_the_gradient_the_optimizer_steps_with(train):
    _, unclipped = train("unclipped", "--max-steps", "2", "--grad-clip", "0")
    _, clipped = train("clipped", "--max-steps", "2", "--grad-clip", "0.01")
    assert min(s["grad_norm"] for s in unclipped) > 0.1  # a clip of 0.01 has something to do
    # the same first batch and weights: that gradient scaled down to norm 0.01 (torch's clip_grad_norm_)
    assert clipped[0]["grad_norm"] == pytest.approx(0.01, rel=1e-4)
    assert all(s["grad_norm"] <= 0.01 * (1 + 1e-4) for s in clipped)


def test_weight_decay_moves_the_weight_matrices_by_exactly_the_decay_term(train):
    """AdamW (decoupled, as torch): p <- p (1 - lr wd) - lr adam(g). One step with --weight-decay 0.5 against
    one with 0: the same weights and gradient, so the weight matrices differ by -lr 0.5 p and nothing else
    does (biases, LayerNorm and embeddings are not decayed: param_groups_for_weight_decay)."""
    _, plain = train("plain", "--max-steps", "1", "--lr", "0.05", "--weight-decay", "0")
    _, decayed = train("decayed", "--max-steps", "1", "--lr", "0.05", "--weight-decay", "0.5")
    (plain,), (decayed,) = plain, decayed
    for before, p_plain, p_decayed in zip(decayed["before"][0], plain["after"][0], decayed["after"][0]):
        ulp = np.finfo(np.float32).eps * max(float(np.abs(before).max()), float(np.abs(p_plain).max()))
        np.testing.assert_allclose(p_decayed - p_plain, -0.05 * 0.5 * before, rtol=0, atol=2 * ulp)
        assert np.abs(before).max() * 0.05 * 0.5 > 100 * ulp  # the term is far above the rounding
    for p_plain, p_decayed in zip(plain["after"][1], decayed["after"][1]):
        np.testing.assert_array_equal(p_decayed, p_plain)
    assert decayed["groups"] == [(0.05, 0.5), (0.05, 0.0)] and plain["groups"] == [(0.05, 0.0), (0.05, 0.0)]


def test_val_fraction_sets_how_much_of_the_text_goes_to_val_bin(train):
    from tinygrad_llm.tokenizer import load_tokenizer

    out, _ = train("quarter", "--max-steps", "1", "--val-fraction", "0.25")
    tokenizer = load_tokenizer(out)  # one token per character
    split = int(len(TEXT) * (1 - 0.25))  # the book's split: the first 75% of the characters train
    assert tokenizer.decode(load_tokens(out / "val.bin").tolist()) == TEXT[split:]
    assert tokenizer.decode(load_tokens(out / "train.bin").tolist()) == TEXT[:split]
    assert read_header(out / "val.bin")["count"] == len(TEXT) - split == 240


def test_keep_last_keeps_exactly_that_many_checkpoints(train):
    out, _ = train("kept", "--max-steps", "3", "--eval-interval", "1", "--keep-last", "1")  # (the default: 2)
    assert [p.name for p in (out / "checkpoints").glob("ckpt-*")] == ["ckpt-000003"]


def test_zero_in_one_process_reaches_the_trainer_and_says_it_does_nothing(train, monkeypatch, capsys):
    """In one process ZeRO has no moments to shard: the run says so and trains as without it. The flag still
    reaches the Trainer, whose ZeRO tests/test_dist.py runs under mpiexec."""
    from tinygrad_llm.train.trainer import Trainer

    given = []
    real_init = Trainer.__init__

    def init(self, *args, zero=False, **kwargs):
        given.append(zero)
        real_init(self, *args, zero=zero, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", init)
    _, with_zero = train("zero", "--max-steps", "1", "--zero")
    assert "note: --zero has no effect in one process" in capsys.readouterr().err
    _, without = train("plain", "--max-steps", "1")
    assert given == [True, False]
    np.testing.assert_array_equal(with_zero[0]["after"][0][0], without[0]["after"][0][0])  # the same update
