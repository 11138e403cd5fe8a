"""What the GPU path needs that can be checked on a CPU: how often it waits for the GPU (on the stand-in GPU
arrays of tests/gpu_stand_in.py, which count every copy to the host), the CUDA random state in checkpoints,
and the kernels' fallback when a CUDA launch fails. Its matrix products: tests/test_gpu_products.py.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from gpu_stand_in import DeviceNamespace, HostCopies, on_device, use_stand_in

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.functional import _common
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import clip_grad_norm_


@pytest.fixture
def host_copies():
    HostCopies.count = 0
    HostCopies.products = []
    return HostCopies


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """The stand-in GPU (tests/gpu_stand_in.py); the NumPy reference of every kernel runs (no Numba on it), and
    operations take their array module from their inputs, as when CuPy is loaded."""
    use_stand_in(monkeypatch)
    monkeypatch.setattr(backend, "cupy_loaded", lambda: True)
    with dispatch.use("numpy"):
        yield HostCopies


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


def test_the_stand_in_counts_every_way_to_the_host():
    import operator

    x = np.arange(3.0).view(HostCopies)
    one = x[1]  # a 0-d array, as CuPy's (NumPy's would be a scalar, read without a count)
    ways = [
        lambda: float(one),
        lambda: int(one),
        lambda: bool(one),
        lambda: operator.index(x[1].astype(np.int64)),
        lambda: one.item(),
        lambda: x.tolist(),
        lambda: x.get(),
        lambda: DeviceNamespace().asnumpy(x),
        lambda: x.__array__(),
        lambda: backend.to_numpy(x),
        lambda: np.asarray(one),
        lambda: np.array(x),
        lambda: f"{one:.3f}",
        lambda: str(x),
        lambda: float(next(iter(x))),  # an element by iterating is a 0-d array too
        lambda: int(x.argmax()),
        lambda: x[x > 0],  # boolean-mask indexing, read
        lambda: x.__setitem__(x > 5, 0.0),  # and written
        lambda: np.asarray(x),  # NumPy's conversions (use_stand_in counts them: NumPy never asks the array)
        lambda: np.asarray(one, dtype=np.float64),
        lambda: np.ascontiguousarray(x),
        lambda: np.asfortranarray(x),
    ]
    with pytest.MonkeyPatch.context() as m:
        use_stand_in(m)
        m.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
        assert isinstance(one, HostCopies) and one.ndim == 0
        for i, way in enumerate(ways, 1):
            way()
            assert HostCopies.count == i, i
        np.array(x, subok=True), np.asarray(np.arange(2.0)), x[1:], x.sum(), list(x)  # not copies
        assert HostCopies.count == len(ways)
    np.asarray(x)  # the hook went with the monkeypatch
    assert HostCopies.count == len(ways)


def _device_trainer(tmp_path, precision, grad_clip, eval_interval=10):
    """A Trainer whose parameters (and so activations, gradients, optimizer moments) are stand-in GPU arrays."""
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.train.trainer import TrainConfig, Trainer

    tl.manual_seed(0)
    ids = np.arange(400) % 13
    model = GPTModel(GPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=2))
    for p in model.parameters():
        p.data = p.data.view(HostCopies)
    config = TrainConfig(
        max_steps=4, batch_size=2, grad_accum=3, eval_interval=eval_interval, grad_clip=grad_clip, precision=precision
    )
    return Trainer(model, GPTDataset(ids[:300], 8, stride=4), GPTDataset(ids[300:], 8), config, tmp_path, log=print)


@pytest.mark.parametrize("precision, grad_clip", [("fp32", 1.0), ("fp32", 1e-3), ("fp16", 1e-3), ("bf16", None)])
def test_a_training_step_copies_to_the_host_once(monkeypatch, tmp_path, precision, grad_clip):
    """The loss, fp16's inf/NaN verdict and the clip's norm stay on the GPU; one copy brings what the host needs,
    whatever the number of micro-batches (not a loss.item() each)."""
    if precision == "bf16":
        backend.low_precision_dtype("bf16")  # ml_dtypes (the bf16 extra)
    use_stand_in(monkeypatch)
    monkeypatch.setattr(backend, "cupy_loaded", lambda: True)  # operations take their array module from inputs
    with dispatch.use("numpy"):
        trainer = _device_trainer(tmp_path, precision, grad_clip)
        before = [p.data.copy() for p in trainer.model.parameters()]
        for step in range(1, 4):
            HostCopies.count = 0
            loss = trainer.train_step()
            assert HostCopies.count == 1, (step, HostCopies.count)
            assert isinstance(loss, float) and 1.0 < loss < 4.0
    for p in trainer.model.parameters():  # it did run on the stand-in, gradients and moments too
        assert isinstance(p.data, HostCopies) and isinstance(trainer.optimizer.state[p]["exp_avg"], HostCopies)
    assert not any(np.array_equal(b, p.data) for b, p in zip(before, trainer.model.parameters()))  # and stepped


def test_a_trainer_evaluation_copies_to_the_host_once(monkeypatch, tmp_path):
    """The train and validation losses, summed over their batches on the GPU, come back in one copy (before:
    one per batch)."""
    use_stand_in(monkeypatch)
    monkeypatch.setattr(backend, "cupy_loaded", lambda: True)
    with dispatch.use("numpy"):
        trainer = _device_trainer(tmp_path, "fp32", None)
        trainer.config.eval_iters = 3
        HostCopies.count = 0
        train_loss, val_loss = trainer.evaluate()
    assert HostCopies.count == 1
    assert isinstance(train_loss, float) and isinstance(val_loss, float) and 1.0 < val_loss < 4.0


def test_exact_gelu_never_copies_to_the_host(stand_in_gpu):
    """BERT's GELU (erf) picked the series or the continued fraction per element with boolean masks: a host
    copy per call on a GPU. Now both run and xp.where picks, with the same values as the CPU's."""
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(0, 3, 200), [-40.0, -9.0, -2.83, 2.83, 0.0, 12.0]]).astype(np.float32)
    gy = rng.normal(size=x.shape).astype(np.float32)
    t = on_device(x)
    y = F.gelu(t, approximate="none")
    (y * tl.Tensor(gy)).sum().backward()
    assert stand_in_gpu.count == 0 and isinstance(y.data, HostCopies) and isinstance(t.grad, HostCopies)
    plain = tl.Tensor(x, requires_grad=True)  # the same on NumPy arrays
    want = F.gelu(plain, approximate="none")
    (want * tl.Tensor(gy)).sum().backward()
    np.testing.assert_array_equal(y.data.view(np.ndarray), want.data)
    np.testing.assert_array_equal(t.grad.view(np.ndarray), plain.grad)


def test_gradient_norms_by_layer_copy_to_the_host_once(monkeypatch):
    from tinygrad_llm.optim import grad_norms_by_layer

    model = GPTModel(GPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=3))
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
    want = grad_norms_by_layer(model.named_parameters())  # on NumPy arrays
    for p in model.parameters():
        p.grad = p.grad.view(HostCopies)
    use_stand_in(monkeypatch)  # (every way to the host counted: np.asarray too)
    got = grad_norms_by_layer(model.named_parameters())
    assert HostCopies.count == 1 and len(model.parameters()) > 30
    assert (
        list(got)
        == list(want)
        == ["tok_emb", "pos_emb", "trf_blocks.0", "trf_blocks.1", "trf_blocks.2", "final_norm", "out_head"]
    )
    for layer, norm in want.items():
        params = [p.grad for name, p in model.named_parameters() if name.startswith(layer + ".")]
        exact = np.sqrt(sum(np.sum(g.view(np.ndarray).astype(np.float64) ** 2) for g in params))
        assert got[layer] == pytest.approx(exact, rel=1e-6) and norm == pytest.approx(exact, rel=1e-6)


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
