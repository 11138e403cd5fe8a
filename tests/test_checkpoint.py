"""Checkpoints: bitwise round trips, exact resume, the folder layout, kills mid-write, clear errors."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.checkpoint import (
    CheckpointError,
    NoCheckpointError,
    find_checkpoint,
    load_checkpoint,
    load_model_files,
    read_safetensors,
    save_checkpoint,
)
from tinygrad_llm.optim import AdamW

CONFIG = {"vocab_size": 11, "emb_dim": 4, "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}


def make_model_state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "tok_emb.weight": rng.standard_normal((11, 4)).astype(np.float32),
        "blocks.0.att.W_query.weight": rng.standard_normal((4, 4)).astype(np.float32),
        "blocks.0.norm1.scale": np.ones(4, np.float32),
        "buffer.f64": rng.standard_normal(3),
        "mask": np.tril(np.ones((3, 3), bool)),
    }


def trained_optimizer(params, steps=3, seed=1):
    optimizer = AdamW([(f"p{i}", p) for i, p in enumerate(params)], lr=0.01, weight_decay=0.1)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(np.float32)
        optimizer.step()
    return optimizer


def trainer_state(step, generator):
    return {
        "step": step,
        "tokens_seen": np.int64(step * 4096),
        "best_val_loss": float("inf"),
        "rng": {"numpy": generator.bit_generator.state},
        "data": {"epoch": 2, "position": np.int64(17), "order": np.arange(9, dtype=np.int64)[::-1]},
    }


def test_round_trip_is_bitwise(tmp_path):
    model_state = make_model_state()
    params = [
        tl.Tensor(model_state["tok_emb.weight"].copy(), requires_grad=True),
        tl.Tensor(model_state["blocks.0.norm1.scale"].copy(), requires_grad=True),
    ]
    optimizer = trained_optimizer(params)
    generator = np.random.default_rng(12345)
    generator.random(5)
    state = trainer_state(42, generator)
    folder = save_checkpoint(tmp_path, model_state, CONFIG, optimizer.state_dict(), state)
    assert folder == tmp_path / "checkpoints" / "ckpt-000042"

    loaded = load_checkpoint(tmp_path, expected_state=model_state)
    assert loaded.path == folder and loaded.step == 42 and loaded.config == CONFIG
    assert loaded.model_state.keys() == model_state.keys()
    for name, array in model_state.items():
        assert loaded.model_state[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded.model_state[name], array)
    # the optimizer state restores into a fresh optimizer and matches bit for bit
    fresh = AdamW([(f"p{i}", tl.Tensor(p.data.copy(), requires_grad=True)) for i, p in enumerate(params)])
    fresh.load_state_dict(loaded.optimizer_state)
    assert fresh.param_groups[0]["lr"] == 0.01 and fresh.param_groups[0]["betas"] == (0.9, 0.999)
    for p, q in zip(params, fresh.param_groups[0]["params"]):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(fresh.state[q][key], optimizer.state[p][key])
        assert fresh.state[q]["step"] == 3
    # the trainer state: big PCG64 integers, numpy scalars, arrays; inf as null (strict JSON, files.json_text)
    ts = loaded.trainer_state
    assert ts["tokens_seen"] == 42 * 4096 and ts["best_val_loss"] is None
    np.testing.assert_array_equal(ts["data"]["order"], np.arange(9)[::-1])
    restored = np.random.default_rng()
    restored.bit_generator.state = ts["rng"]["numpy"]
    np.testing.assert_array_equal(restored.random(4), generator.random(4))
    # the top-level files are the latest weights and config
    top_state, top_config = load_model_files(tmp_path, expected_state=model_state)
    assert top_config == CONFIG
    for name, array in model_state.items():
        np.testing.assert_array_equal(top_state[name], array)
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "ckpt-000042"


def test_resume_through_checkpoint_is_bitwise(tmp_path):
    """20 AdamW steps straight == 10 steps, save, load into fresh objects, 10 more (weights and rng)."""
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(20)]
    start = rng.standard_normal((6, 5)).astype(np.float32)

    def run(param, optimizer, generator, steps):
        for g in steps:
            param.grad = g * generator.random()  # the generator's draws enter the update
            optimizer.step()

    straight = tl.Tensor(start.copy(), requires_grad=True)
    run(straight, AdamW([("w", straight)]), np.random.default_rng(0), grads)

    param, generator = tl.Tensor(start.copy(), requires_grad=True), np.random.default_rng(0)
    optimizer = AdamW([("w", param)])
    run(param, optimizer, generator, grads[:10])
    save_checkpoint(
        tmp_path, {"w": param.data}, CONFIG, optimizer.state_dict(), {"step": 10, "rng": generator.bit_generator.state}
    )
    del param, optimizer, generator

    ckpt = load_checkpoint(tmp_path, expected_state={"w": (6, 5)})
    param = tl.Tensor(ckpt.model_state["w"], requires_grad=True)
    optimizer = AdamW([("w", param)])
    optimizer.load_state_dict(ckpt.optimizer_state)
    generator = np.random.default_rng()
    generator.bit_generator.state = ckpt.trainer_state["rng"]
    run(param, optimizer, generator, grads[ckpt.step :])
    np.testing.assert_array_equal(param.data, straight.data)


def test_keep_last_resave_and_latest_pointer(tmp_path):
    for step in (1, 2, 3, 4, 5):
        save_checkpoint(
            tmp_path, {"w": np.full(3, step, np.float32)}, CONFIG, trainer_state={"step": step}, keep_last=2
        )
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-000004", "ckpt-000005", "latest"]
    save_checkpoint(tmp_path, {"w": np.full(3, 50, np.float32)}, CONFIG, step=5, keep_last=2)  # same step again
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-000004", "ckpt-000005", "latest"]
    assert load_checkpoint(tmp_path).model_state["w"][0] == 50
    assert load_checkpoint(root / "ckpt-000004").step == 4  # a checkpoint folder can be named directly
    assert load_checkpoint(root).step == 5
    (root / "latest").unlink()  # no pointer (killed before the first one was written): highest step
    assert find_checkpoint(tmp_path) == root / "ckpt-000005"
    (root / "latest").write_text("ckpt-000009\n")  # names a folder that is gone: highest complete step
    assert find_checkpoint(tmp_path) == root / "ckpt-000005"
    (root / "ckpt-000007.tmp").mkdir()  # an unfinished save is never loaded, and the next save removes it
    assert find_checkpoint(tmp_path) == root / "ckpt-000005"
    save_checkpoint(tmp_path, {"w": np.zeros(3, np.float32)}, CONFIG, step=6, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-000005", "ckpt-000006", "latest"]


_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tinygrad_llm.checkpoint import save_checkpoint

    out, first_step = sys.argv[1], int(sys.argv[2])
    generator = np.random.default_rng(0)
    big = np.empty((512, 512), np.float32)  # 1 MiB, so that kills land inside writes
    i = 0
    while True:
        step = first_step + i // 2  # every step saved twice: exercises replacing a checkpoint
        big.fill(step)
        save_checkpoint(out, {"w": big, "b": np.full(5, step, np.int64)}, {"step": step},
                        {"state": {0: {"step": step, "exp_avg": big}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
                        {"step": step, "rng": generator.bit_generator.state}, keep_last=2)
        print(step, flush=True)
        i += 1
""")


@pytest.mark.slow
def test_killed_writer_always_leaves_latest_complete_checkpoint(tmp_path):
    chooser = random.Random(2026)
    first_step = 1
    for trial in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(first_step)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first_line = proc.stdout.readline()  # one checkpoint is complete
            assert first_line.strip(), proc.stderr.read()
            time.sleep(chooser.uniform(0.0, 0.25))
        finally:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == -9
        printed = [int(first_line)] + [int(line) for line in out.split()]
        last = printed[-1]
        ckpt = load_checkpoint(tmp_path)
        assert last <= ckpt.step <= last + 1, (trial, printed[-3:], ckpt.step)
        assert ckpt.trainer_state["step"] == ckpt.step and ckpt.config == {"step": ckpt.step}
        assert np.all(ckpt.model_state["w"] == ckpt.step) and np.all(ckpt.model_state["b"] == ckpt.step)
        assert np.all(ckpt.optimizer_state["state"]["0"]["exp_avg"] == ckpt.step)
        top_state, _ = load_model_files(tmp_path)  # replaced after the pointer: one save behind at most
        assert np.unique(top_state["w"]).size == 1 and ckpt.step - 1 <= top_state["w"][0, 0] <= ckpt.step
        first_step = ckpt.step + 1  # the next writer resumes after what was loaded
    save_checkpoint(tmp_path, {"w": np.zeros(1, np.float32)}, {}, step=first_step, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())  # leftovers of the kills are gone
    assert len(names) == 3 and names[2] == "latest" and all("." not in n for n in names)
    assert not list(tmp_path.glob(".*")), "temporary files left in the run folder"


# --- clear errors ---------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    params = [tl.Tensor(np.ones((4, 4), np.float32), requires_grad=True)]
    folder = save_checkpoint(tmp_path, make_model_state(), CONFIG, trained_optimizer(params).state_dict(), {"step": 3})
    return tmp_path, folder


def test_no_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(NoCheckpointError, match=f"no checkpoint to resume from in {tmp_path}"):
        load_checkpoint(tmp_path)
    with pytest.raises(NoCheckpointError, match="missing-run is not a folder"):
        load_checkpoint(tmp_path / "missing-run")


@pytest.mark.parametrize(
    "filename", ["model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.json", "checkpoint.json"]
)
def test_missing_file_is_named(saved, filename):
    _, folder = saved
    (folder / filename).unlink()
    with pytest.raises(CheckpointError, match=f"{folder / filename}: missing"):
        load_checkpoint(folder)


def test_truncated_file_is_named(saved):
    run, folder = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: \d+ bytes, the manifest says \d+ \(truncated"):
        load_checkpoint(run)
    top = run / "model.safetensors"  # no manifest there: safetensors' own check, restated with the name
    top.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=f"{top}: not a valid safetensors file"):
        load_model_files(run)


@pytest.mark.parametrize(
    "filename,expected",
    [
        ("model.safetensors", "not a valid safetensors file"),
        ("optimizer.safetensors", "not a valid safetensors file"),
        ("trainer_state.json", "not valid JSON"),
        ("config.json", "not valid JSON"),
    ],
)
def test_corrupt_file_is_named(saved, filename, expected):
    _, folder = saved
    size = (folder / filename).stat().st_size
    (folder / filename).write_bytes(b"\xff" * size)  # same size: only the content check can catch it
    with pytest.raises(CheckpointError, match=f"{folder / filename}: {expected}"):
        load_checkpoint(folder)


def test_other_model_shape_names_tensor_and_shapes(saved):
    run, folder = saved
    expected = make_model_state()
    expected["blocks.0.att.W_query.weight"] = np.zeros((8, 4), np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: tensor 'blocks\.0\.att\.W_query\.weight' "
        r"has shape \(4, 4\), the model expects \(8, 4\)",
    ):
        load_checkpoint(run, expected_state=expected)
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) 'extra'"):
        load_model_files(run, expected_state={**make_model_state(), "extra": (1,)})
    fewer = make_model_state()
    del fewer["mask"]
    with pytest.raises(CheckpointError, match=r"has tensor\(s\) 'mask' that the model does not have"):
        load_checkpoint(run, expected_state=fewer)


def test_bad_pointer_and_unsaveable_state(saved, tmp_path):
    run, _ = saved
    (run / "checkpoints" / "latest").write_text("../../etc\n")
    with pytest.raises(CheckpointError, match="latest: expected the name of a checkpoint folder"):
        load_checkpoint(run)
    with pytest.raises(TypeError, match=r"trainer_state\.data: a set cannot be saved"):
        save_checkpoint(tmp_path / "other", {}, {}, trainer_state={"step": 1, "data": {1, 2}})
    with pytest.raises(ValueError, match="two arrays would be saved under the key 'a.b'"):
        save_checkpoint(
            tmp_path / "other", {}, {}, trainer_state={"step": 1, "a.b": np.zeros(1), "a": {"b": np.ones(1)}}
        )
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        save_checkpoint(tmp_path / "other", {}, {}, step=1, keep_last=0)
    assert not (tmp_path / "other").exists()  # nothing is written when the state cannot be saved
    assert read_safetensors(run / "model.safetensors").keys() == make_model_state().keys()


def test_gpt_model_resume_is_bitwise(tmp_path):
    """The real model with dropout: 4 steps straight == 2 steps, checkpoint, fresh objects, 2 more."""
    from tinygrad_llm import backend
    from tinygrad_llm import functional as F
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.optim import param_groups_for_weight_decay

    config = GPTConfig.preset("tiny", drop_rate=0.1, n_layers=1, context_length=8)
    batches = np.random.default_rng(5).integers(0, config.vocab_size, size=(4, 2, 2, 8))  # (steps, x/y, B, T)

    def fresh():
        tl.manual_seed(0)
        model = GPTModel(config)
        return model, AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-2)

    def train(model, optimizer, steps):
        losses = []
        for inputs, targets in steps:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    model, optimizer = fresh()
    straight = train(model, optimizer, batches)

    model, optimizer = fresh()
    first = train(model, optimizer, batches[:2])
    save_checkpoint(
        tmp_path,
        model.state_dict(),
        config.to_dict(),
        optimizer.state_dict(),
        {"step": 2, "rng": backend.get_rng_state()},
    )
    model, optimizer = fresh()  # different random state until the checkpoint is loaded
    ckpt = load_checkpoint(tmp_path, expected_state=model.state_dict())
    model.load_state_dict(ckpt.model_state)
    optimizer.load_state_dict(ckpt.optimizer_state)
    backend.set_rng_state(ckpt.trainer_state["rng"])
    assert first + train(model, optimizer, batches[ckpt.step :]) == straight
