"""Pictures: per-layer gradient norms recorded by the trainer and drawn (grad_norms.png), the learning-rate
schedule (lr_schedule.png), attention maps (tinygrad-llm attention). Each is checked by its data, the PNG's
size and the figure's axes, not by looking."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from test_cli import run_cli
from test_train import interrupt_at, make_trainer

import tinygrad_llm as tl
from tinygrad_llm.optim import grad_norms_by_layer
from tinygrad_llm.train import figures
from tinygrad_llm.train.plot import matplotlib_available

needs_matplotlib = pytest.mark.skipif(
    not matplotlib_available(), reason="matplotlib is not installed (pip install 'tinygrad-llm[plot]')"
)
LAYERS = ["tok_emb", "pos_emb", "trf_blocks.0", "trf_blocks.1", "final_norm", "out_head"]


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_grad_norms_by_layer_groups_parameters_by_block():
    model = tl.GPTModel(tl.GPTConfig(vocab_size=8, context_length=4, emb_dim=4, n_heads=2, n_layers=2))
    for p in model.parameters():
        p.grad = np.ones(p.shape, dtype=p.dtype)
    norms = grad_norms_by_layer(model.named_parameters())
    assert list(norms) == LAYERS
    block = sum(p.size for p in model.trf_blocks[1].parameters())
    assert norms["trf_blocks.1"] == pytest.approx(np.sqrt(block))  # the norm of `block` ones
    model.out_head.weight.grad = None
    assert "out_head" not in grad_norms_by_layer(model.named_parameters())


def test_trainer_records_gradient_norms_before_clipping(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=8, grad_clip=1e-3)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "grad_norms.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]
    for r in records:
        assert list(r["grad_norms"]) == LAYERS
        total = np.sqrt(sum(v * v for v in r["grad_norms"].values()))
        assert total > 1e-2  # the norms of the raw gradients, not of the clipped ones (norm 1e-3)
    assert set(json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])) == {
        "step",
        "tokens_seen",
        "train_loss",
        "val_loss",
        "lr",
        "elapsed_s",
    }  # log.jsonl keeps its fields
    assert (tmp_path / "grad_norms.png").is_file() == matplotlib_available()
    assert (tmp_path / "lr_schedule.png").is_file() == matplotlib_available()


@pytest.mark.slow
def test_gradient_norms_survive_an_interrupted_evaluation(tmp_path, monkeypatch):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    interrupted = make_trainer(tmp_path / "resumed")
    interrupt_at(monkeypatch, interrupted, "evaluate", 3)  # during step 8's evaluation
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.undo()
    resumed = make_trainer(tmp_path / "resumed", seed=99)
    resumed.load_state()
    resumed.fit()
    assert (tmp_path / "resumed" / "grad_norms.jsonl").read_text() == (
        tmp_path / "straight" / "grad_norms.jsonl"
    ).read_text()


@needs_matplotlib
def test_grad_norm_figure_has_a_line_per_layer_on_a_log_scale(tmp_path):
    history = [
        {"step": s, "grad_norms": {layer: (i + 1) * 0.1 / s for i, layer in enumerate(LAYERS)}} for s in (10, 20, 30)
    ]
    fig = figures.plot_grad_norms(history, tmp_path / "grad_norms.png")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "Steps"
    assert [line.get_label() for line in ax.get_lines()] == LAYERS
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), [0.3 / s for s in (10, 20, 30)])
    assert png_size(tmp_path / "grad_norms.png") == (600, 350)
    assert figures.plot_grad_norms([{"step": 1, "train_loss": 2.0}]) is None  # nothing recorded: no figure


@needs_matplotlib
def test_lr_schedule_figure_draws_every_step(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=40, warmup_steps=5)
    fig = figures.plot_lr_schedule(trainer.lr_at, 40, tmp_path / "lr.png", warmup_steps=5)
    (ax,) = fig.axes
    curve = ax.get_lines()[0]
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(40))
    np.testing.assert_allclose(curve.get_ydata(), [trainer.lr_at(s) for s in range(40)])
    assert max(curve.get_ydata()) == pytest.approx(trainer.config.lr)
    assert ax.get_lines()[1].get_xdata()[0] == 5  # the end of warmup, marked
    assert png_size(tmp_path / "lr.png") == (600, 300)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A tiny character-level model saved as a run folder (weights as initialised: attention is still
    spread evenly, which is all these tests need)."""
    from tinygrad_llm.checkpoint import save_checkpoint
    from tinygrad_llm.tokenizer import get_tokenizer

    root = tmp_path_factory.mktemp("attention")
    tokenizer = get_tokenizer("char", text="the cat sat on a mat")
    tl.manual_seed(0)
    model = tl.GPTModel(
        tl.GPTConfig(vocab_size=tokenizer.n_vocab, context_length=16, emb_dim=12, n_heads=3, n_layers=2, drop_rate=0.0)
    )
    run = root / "run"
    save_checkpoint(run, model.state_dict(), model.config.to_dict(), step=0)
    tokenizer.save(run)
    return root


def test_attention_weights_are_causal_rows_that_sum_to_one(run_folder):
    from tinygrad_llm.cli.common import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(run_folder / "run", None)
    ids = tokenizer.encode("the cat")
    weights = figures.attention_weights(model, ids, layer=1)
    assert weights.shape == (3, 7, 7)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.triu(weights, k=1) == 0)  # no query sees a later token
    assert model.trf_blocks[1].att.last_attention is None  # nothing kept after


@needs_matplotlib
def test_attention_figure_has_a_panel_per_head_with_tokens_on_both_axes(tmp_path):
    weights = np.tril(np.ones((3, 4, 4)))
    weights /= weights.sum(axis=-1, keepdims=True)
    fig = figures.plot_attention(weights, ["a", " ", "b", "\n"], tmp_path / "att.png", title="t")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in panels] == ["head 0", "head 1", "head 2"]
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "\u2423", "b", "\u23ce"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "\u2423", "b", "\u23ce"]
    width, height = png_size(tmp_path / "att.png")
    assert width > 2.5 * height  # three panels side by side


@pytest.mark.slow
@needs_matplotlib
def test_attention_command_writes_one_png_and_never_overwrites(run_folder):
    out = run_folder / "att.png"
    result = run_cli(
        "attention", "--checkpoint", run_folder / "run", "--prompt", "the cat sat", "--layer", "0", "--out", out
    )
    assert result.returncode == 0, result.stderr
    assert "3 heads of layer 0 over 11 tokens" in result.stderr
    width, height = png_size(out)
    assert width > 2.5 * height
    again = run_cli("attention", "--checkpoint", run_folder / "run", "--prompt", "the", "--out", out)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = run_cli(
        "attention",
        "--checkpoint",
        run_folder / "run",
        "--prompt",
        "the",
        "--layer",
        "5",
        "--out",
        run_folder / "other.png",
    )
    assert bad.returncode == 1 and "--layer 5: the model has 2 layers" in bad.stderr


@needs_matplotlib
def test_plot_values_puts_each_point_at_its_step_and_its_tokens(tmp_path):
    """Two DPO evaluations (steps 1 and 2): whole-number ticks only, and the top axis (tokens seen) a rescaled
    bottom axis, so that a point's step and its token count line up (the book's hidden second curve did not)."""
    from tinygrad_llm.train.plot import plot_values

    steps, tokens = [1, 2], [2_000, 4_000]
    fig = plot_values(steps, tokens, [0.69, 0.68], [0.69, 0.685], path=tmp_path / "dpo.png", xlabel="Steps")
    ax1, ax2 = fig.axes
    assert all(float(t).is_integer() for t in ax1.get_xticks())
    (lo, hi), (top_lo, top_hi) = ax1.get_xlim(), ax2.get_xlim()
    for step, seen in zip(steps, tokens):
        assert (step - lo) / (hi - lo) == pytest.approx((seen - top_lo) / (top_hi - top_lo))
    assert png_size(tmp_path / "dpo.png")[0] > 0
