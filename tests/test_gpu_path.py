"""What the GPU path needs that can be checked on a CPU: how often it waits for the GPU, the CUDA random
state in checkpoints, and the kernels' fallback when a CUDA launch fails.

On a GPU every value copied back to the host (``float(x)``, ``int(x)``, ``.item()``, ``.tolist()``, ``if x``)
waits for all the work queued before it. ``HostCopies`` is a NumPy array that counts those conversions, and
``DeviceNamespace`` is NumPy returning such arrays: handed to code in place of CuPy, they count the copies it
would make on a GPU.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.functional import _common
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import clip_grad_norm_


class HostCopies(np.ndarray):
    """A NumPy array standing in for a GPU array: ``HostCopies.count`` counts conversions to Python values."""

    count = 0

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = [_plain(x) for x in inputs]
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return out[0] if out is not None and len(out) == 1 else _device(result)

    def _copy(self):
        HostCopies.count += 1
        return self.view(np.ndarray)

    def __float__(self):
        return float(self._copy())

    def __int__(self):
        return int(self._copy())

    def __bool__(self):
        return bool(self._copy())

    def item(self, *args):
        return self._copy().item(*args)

    def tolist(self):
        return self._copy().tolist()


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, HostCopies) else x


def _device(x):
    return np.asarray(x).view(HostCopies) if isinstance(x, (np.ndarray, np.generic)) else x


class DeviceNamespace:
    """numpy (or one of its submodules), with every function returning HostCopies arrays."""

    def __init__(self, module=np):
        self._module = module

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return DeviceNamespace(attr)
        if callable(attr) and not isinstance(attr, type):
            return lambda *args, **kwargs: _device(attr(*[_plain(a) for a in args], **kwargs))
        return attr


@pytest.fixture
def host_copies():
    HostCopies.count = 0
    return HostCopies


# ---- waits for the GPU ---------------------------------------------------------------------------------


def test_clip_grad_norm_copies_one_number_to_the_host(monkeypatch, host_copies):
    """gpt2-small has ~150 parameter arrays: one copy per step, not one per parameter."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(shape).astype(np.float32) for shape in [(7, 5), (5,), (3, 4, 2)] * 50]
    want = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    params = [types.SimpleNamespace(data=g, grad=g.copy().view(HostCopies)) for g in grads]
    monkeypatch.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
    norm = clip_grad_norm_(params, max_norm=1.0)
    assert host_copies.count == 1
    assert norm == pytest.approx(want, rel=1e-6)
    for p, g in zip(params, grads):  # clipped to norm 1 together
        np.testing.assert_allclose(p.grad.view(np.ndarray), g / (want + 1e-6), rtol=1e-6)


@pytest.mark.parametrize("ignore", [None, -100])
def test_an_id_range_check_copies_once(monkeypatch, host_copies, ignore):
    monkeypatch.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
    ids = np.array([[3, 0, 5], [-100, 2, 2]]).view(HostCopies)
    assert _common.first_out_of_range(ids, 6, ignore=ignore) == ((-100, 6) if ignore is None else (None, 5))
    assert host_copies.count == 1
    assert _common.first_out_of_range(ids, 5, ignore=ignore)[0] == 5 and host_copies.count == 2


def test_a_forward_and_its_loss_check_their_ids_once_each(monkeypatch):
    """Token ids were range-checked by the model and again by the embedding (and the positions too)."""
    calls = []
    real = _common.first_out_of_range

    def counting(ids, upper, ignore=None):
        calls.append((type(ids), upper))
        return real(ids, upper, ignore)

    from tinygrad_llm.functional import layers, loss
    from tinygrad_llm.model import gpt

    for module in (gpt, layers, loss):
        monkeypatch.setattr(module, "first_out_of_range", counting)
    model = GPTModel(GPTConfig(vocab_size=11, context_length=6, emb_dim=8, n_heads=2, n_layers=1))
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 10]])
    logits = model(ids)
    assert calls == [(np.ndarray, 11)]  # once, on the host array, before it moves to the model's device
    F.cross_entropy(logits, ids)
    assert calls[1:] == [(np.ndarray, 11)]
    with pytest.raises(IndexError, match="token id 11 is outside the vocabulary"):
        model(ids + 1)


def test_generation_copies_ids_not_logits(monkeypatch):
    """Only the chosen (B,) ids come back from the model's device per step, not (B, vocab) logits."""
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    shapes = []
    real = backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda array: shapes.append(np.shape(array)) or real(array))
    for kwargs in (dict(), dict(temperature=0.9, top_k=5, top_p=0.8, seed=1)):
        shapes.clear()
        out = tl.generate(model, np.array([[1, 2], [3, 4]]), max_new_tokens=4, **kwargs)
        assert out.shape == (2, 6)
        assert shapes and all(shape == (2,) for shape in shapes), shapes


def test_sampling_on_the_model_device_matches_the_host_reference():
    """The xp version of sample_next_token picks what the NumPy-only version picked (the same uniforms)."""
    from tinygrad_llm.generate import sample_next_token

    logits = np.random.default_rng(3).standard_normal((4, 97)) * 3
    for kwargs in (
        dict(temperature=0.7),
        dict(temperature=1.3, top_k=10),
        dict(temperature=1.0, top_p=0.6),
        dict(temperature=0.0),
    ):
        got = sample_next_token(logits.view(HostCopies), rng=np.random.default_rng(5), **kwargs)
        want = sample_next_token(logits, rng=np.random.default_rng(5), **kwargs)
        np.testing.assert_array_equal(got, want)
        assert type(got) is np.ndarray and got.dtype == np.int64


def test_a_training_step_waits_once_for_its_loss_not_per_micro_batch(monkeypatch, tmp_path):
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.tensor import Tensor
    from tinygrad_llm.train.trainer import TrainConfig, Trainer

    tl.manual_seed(0)
    ids = np.arange(400) % 13
    model = GPTModel(GPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    trainer = Trainer(
        model,
        GPTDataset(ids[:300], 8, stride=4),
        GPTDataset(ids[300:], 8),
        TrainConfig(max_steps=2, batch_size=2, grad_accum=4, eval_interval=10),
        tmp_path,
        log=lambda message: None,
    )

    def no_item(self):
        raise AssertionError("loss.item() inside the micro-batch loop")

    monkeypatch.setattr(Tensor, "item", no_item)
    loss = trainer.train_step()
    assert isinstance(loss, float) and 1.0 < loss < 4.0


# ---- the CUDA generator's state in checkpoints --------------------------------------------------------


class FakeCurandGenerator:
    """What backend reads of cupy.random.Generator: bit_generator._state, an int8 array of cuRAND states."""

    def __init__(self, size=4096):
        self.bit_generator = types.SimpleNamespace(_state=np.zeros(size, np.int8))


def test_cuda_generator_state_survives_a_checkpoint(monkeypatch, tmp_path):
    tl.manual_seed(5)
    fake = FakeCurandGenerator()
    fake.bit_generator._state[:] = np.random.default_rng(0).integers(-128, 128, fake.bit_generator._state.size)
    monkeypatch.setitem(backend._generators, "cuda", fake)
    monkeypatch.setattr(backend, "_import_cupy", lambda: np)  # the fake's arrays are NumPy's
    saved_bytes = fake.bit_generator._state.copy()
    backend.get_generator("cpu").random(3)
    state = backend.get_rng_state()
    assert set(state) == {"cpu", "cuda"}
    save_checkpoint(tmp_path, {"w": np.zeros(2, np.float32)}, {}, trainer_state={"step": 1, "rng": state})
    cpu_next = backend.get_generator("cpu").random(4)
    fake.bit_generator._state[:] = 7  # the GPU drew on: its states moved
    backend.set_rng_state(load_checkpoint(tmp_path).trainer_state["rng"])
    np.testing.assert_array_equal(fake.bit_generator._state, saved_bytes)
    np.testing.assert_array_equal(backend.get_generator("cpu").random(4), cpu_next)
    other_gpu = {"cpu": state["cpu"], "cuda": np.zeros(1024, np.uint8)}  # another number of multiprocessors
    with pytest.raises(ValueError, match="1024 bytes.*4096.*multiprocessors"):
        backend.set_rng_state(other_gpu)


def test_a_saved_cuda_state_is_ignored_where_there_is_no_gpu(monkeypatch):
    monkeypatch.setattr(backend, "cuda_available", lambda: False)
    monkeypatch.delitem(backend._generators, "cuda", raising=False)
    state = {"cpu": backend.get_generator("cpu").bit_generator.state, "cuda": np.zeros(64, np.uint8)}
    backend.set_rng_state(state)  # a GPU run resumed on the CPU: its dropout never used the GPU's generator
    assert "cuda" not in backend._generators and set(backend.get_rng_state()) == {"cpu"}


# ---- the examples: every one takes --device, as the README says ---------------------------------------


def test_every_example_takes_device():
    import subprocess
    import sys
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
    assert examples
    for path in examples:  # example_parser (tinygrad_llm.cli.common) adds --device to each
        source = path.read_text(encoding="utf-8")
        assert '"--device"' in source or "example_parser(" in source, f"{path.name} has no --device option"
    for name in ("appendix_e_lora.py", "ch07_instruction_finetune.py"):  # the two that lacked it
        out = subprocess.run(
            [sys.executable, str(path.parent / name), "--help"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0 and "--device {cpu,cuda}" in out.stdout, (name, out.stderr[-500:])
