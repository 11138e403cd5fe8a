"""What the GPU path needs that can be checked on a CPU: how often it waits for the GPU, the CUDA random
state in checkpoints, and the kernels' fallback when a CUDA launch fails.

On a GPU every value copied back to the host (``float(x)``, ``int(x)``, ``.item()``, ``.tolist()``, ``if x``)
waits for all the work queued before it. ``HostCopies`` is a NumPy array that counts those conversions, and
``DeviceNamespace`` is NumPy returning such arrays: handed to code in place of CuPy, they count the copies it
would make on a GPU.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.functional import _common
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import clip_grad_norm_


class HostCopies(np.ndarray):
    """A NumPy array standing in for a GPU array: ``HostCopies.count`` counts conversions to Python values.

    Its matrix products follow CuPy 14's ``matmul``: one of more than 2 dimensions in a dtype whose char is not
    in 'efdFD' (bfloat16 is 'E') raises as CuPy's integer path does; the others are listed in
    ``HostCopies.products`` by their operands' dimensions and dtype."""

    count = 0
    products: list = []

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if ufunc is np.matmul:
            ndim, dtype = max(np.ndim(x) for x in inputs), np.result_type(*inputs)
            if ndim > 2 and dtype.char not in "efdFD":
                raise TypeError(f"data type '{dtype.char}' not understood")  # numpy.dtype('E'), in CuPy
            HostCopies.products.append((ndim, dtype))
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

    def __getitem__(self, key):  # x[mask]: CuPy copies the mask's count to the host to size the result
        if _has_boolean_mask(key):
            HostCopies.count += 1
        return super().__getitem__(key)

    def __setitem__(self, key, value):
        if _has_boolean_mask(key):
            HostCopies.count += 1
        super().__setitem__(key, value)

    def get(self):  # cupy.ndarray.get(): the array on the host
        return self._copy()

    def __array__(self, dtype=None, copy=None):  # (NumPy itself views an ndarray subclass without calling it)
        return self._copy() if dtype is None else self._copy().astype(dtype)


def _has_boolean_mask(key) -> bool:
    return any(isinstance(k, np.ndarray) and k.dtype == bool for k in (key if isinstance(key, tuple) else (key,)))


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, HostCopies) else x


def _device(x):
    return np.asarray(x).view(HostCopies) if isinstance(x, (np.ndarray, np.generic)) else x


class DeviceNamespace:
    """numpy (or one of its submodules), with every function returning HostCopies arrays."""

    def __init__(self, module=np):
        self._module = module

    def asnumpy(self, array):  # CuPy's copy to the host
        return array._copy() if isinstance(array, HostCopies) else np.asarray(array)

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            return DeviceNamespace(attr)
        if isinstance(attr, np.ufunc):  # (its methods, such as add.at, kept): HostCopies.__array_ufunc__ runs it
            return attr
        if callable(attr) and not isinstance(attr, type):
            return lambda *args, **kwargs: _device(attr(*[_plain(a) for a in args], **kwargs))
        return attr


@pytest.fixture
def host_copies():
    HostCopies.count = 0
    HostCopies.products = []
    return HostCopies


def on_device(array):
    """A Tensor whose array is the stand-in for a GPU array (Tensor() itself would make a NumPy array)."""
    t = tl.Tensor._from_op(np.asarray(array, np.float32).view(HostCopies), None)
    t.requires_grad = True
    return t


@pytest.fixture
def stand_in_gpu(monkeypatch, host_copies):
    """Array functions return stand-in arrays; the NumPy reference of every kernel runs (no Numba on them)."""
    monkeypatch.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
    monkeypatch.setattr(backend, "device_of", lambda array: "cpu")  # as the stand-in's data lives
    with dispatch.use("numpy"):
        yield host_copies


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


def test_the_stand_in_counts_every_way_to_the_host(host_copies):
    x = np.arange(3.0).view(HostCopies)
    one = x[1, ...]  # a 0-d array (x[1] would be a NumPy scalar)
    ways = [
        lambda: float(one),
        lambda: int(one),
        lambda: bool(one),
        lambda: one.item(),
        lambda: x.tolist(),
        lambda: x.get(),
        lambda: DeviceNamespace().asnumpy(x),
        lambda: x.__array__(),
        lambda: backend.to_numpy(x),
        lambda: x[x > 0],  # boolean-mask indexing, read
        lambda: x.__setitem__(x > 5, 0.0),  # and written
    ]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
        for i, way in enumerate(ways, 1):
            way()
            assert host_copies.count == i


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
    monkeypatch.setattr(backend, "get_array_module", lambda a: DeviceNamespace() if isinstance(a, HostCopies) else np)
    monkeypatch.setattr(backend, "device_of", lambda array: "cpu")  # as the stand-in's data lives
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


def test_gradient_norms_by_layer_copy_to_the_host_once(monkeypatch, host_copies):
    from tinygrad_llm.optim import grad_norms_by_layer

    model = GPTModel(GPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=3))
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
    want = grad_norms_by_layer(model.named_parameters())  # on NumPy arrays
    for p in model.parameters():
        p.grad = p.grad.view(HostCopies)
    monkeypatch.setattr(backend, "get_array_module", lambda array: DeviceNamespace())
    got = grad_norms_by_layer(model.named_parameters())
    assert host_copies.count == 1 and len(model.parameters()) > 30
    assert (
        list(got)
        == list(want)
        == ["tok_emb", "pos_emb", "trf_blocks.0", "trf_blocks.1", "trf_blocks.2", "final_norm", "out_head"]
    )
    for layer, norm in want.items():
        params = [p.grad for name, p in model.named_parameters() if name.startswith(layer + ".")]
        exact = np.sqrt(sum(np.sum(g.view(np.ndarray).astype(np.float64) ** 2) for g in params))
        assert got[layer] == pytest.approx(exact, rel=1e-6) and norm == pytest.approx(exact, rel=1e-6)


# ---- matrix products as CuPy makes them: 2-D GEMMs in every dtype ---------------------------------------

LOW = {"float32": None, "float16": np.dtype(np.float16), "bfloat16": "bfloat16"}
RTOL = {"float32": 1e-6, "float16": 2e-3, "bfloat16": 2e-2}  # against NumPy's own products in that dtype


def _low(name):
    if LOW[name] == "bfloat16":
        return backend.low_precision_dtype("bf16")  # ml_dtypes, installed with the bf16 extra
    return LOW[name]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((2, 3, 4), (4, 5)),
        ((2, 3, 4, 5), (2, 3, 5, 6)),
        ((3, 4), (2, 4, 5)),
        ((2, 1, 4, 5), (3, 5, 2)),
        ((4,), (2, 4, 5)),
        ((2, 3, 4), (4,)),
        ((0, 3, 4), (0, 4, 2)),
    ],
)
def test_products_of_more_than_2_dimensions_are_2d_gemms_on_the_gpu(stand_in_gpu, dtype, a_shape, b_shape):
    from tinygrad_llm import runtime

    rng = np.random.default_rng(0)
    low = _low(dtype) or np.dtype(np.float32)
    a, b = (rng.standard_normal(shape).astype(np.float32).astype(low) for shape in (a_shape, b_shape))
    got = runtime.matmul(a.view(HostCopies), b.view(HostCopies))
    want = a @ b  # NumPy's, in the same dtype
    assert isinstance(got, HostCopies) and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=RTOL[dtype], atol=RTOL[dtype])
    assert all(ndim <= 2 for ndim, _ in stand_in_gpu.products), stand_in_gpu.products
    assert 0 not in a_shape or not stand_in_gpu.products


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_precision_check_at_start_multiplies_as_the_models_do(stand_in_gpu, monkeypatch, precision):
    """--precision bf16 --device cuda checks at start that CuPy can multiply in bfloat16: through runtime.matmul,
    with > 2-D operands, where a 2x2 @ 2x2 probe passed and the first linear layer failed."""
    from tinygrad_llm.amp import MixedPrecision

    low = backend.low_precision_dtype(precision)
    monkeypatch.setattr(backend, "xp_for", lambda device: DeviceNamespace())
    assert MixedPrecision(precision, "cuda").compute_dtype == low
    assert len(stand_in_gpu.products) >= 3 and all(ndim <= 2 for ndim, _ in stand_in_gpu.products)
    assert {dtype for _, dtype in stand_in_gpu.products} == {low}


def _model_products(dtype, device):
    """The products the models make, forward and backward, under autocast(dtype): their outputs and gradients."""
    from tinygrad_llm.model.attention import MultiHeadAttention

    rng = np.random.default_rng(1)
    make = on_device if device else (lambda x: tl.Tensor(x, requires_grad=True))
    x = make(rng.standard_normal((2, 5, 8)).astype(np.float32))
    w, bias = (make(rng.standard_normal(shape).astype(np.float32) * 0.3) for shape in ((8, 8), (8,)))
    q, k, v = (make(rng.standard_normal((2, 2, 5, 4)).astype(np.float32)) for _ in range(3))
    tl.manual_seed(0)
    bert = MultiHeadAttention(8, 8, context_length=5, dropout=0.0, num_heads=2, causal=False)
    padded = MultiHeadAttention(8, 8, context_length=5, dropout=0.0, num_heads=2)
    padded.load_state_dict(bert.state_dict())
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with backend.autocast(_low(dtype)):
        outputs = [
            F.linear(x, w, bias),  # (B, T, in) @ W^T
            F.causal_attention(q, k, v),  # (B, H, T, hd) @ (B, H, hd, S), (B, H, T, S) @ (B, H, S, hd)
            q @ k.swapaxes(-1, -2),  # 4-D by 4-D
            bert(x),  # BERT's attention: products written out
            padded(x, attention_mask=mask),  # padded causal attention
        ]
        loss = sum((out * out).sum() for out in outputs)
    loss.backward()
    tensors = [x, w, bias, q, k, v] + [p for m in (bert, padded) for p in m.parameters()]
    return [np.asarray(out.data.view(np.ndarray)) for out in outputs] + [
        np.asarray(t.grad.view(np.ndarray)) for t in tensors
    ]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_models_products_run_as_2d_gemms_forward_and_backward(stand_in_gpu, dtype):
    got = _model_products(dtype, device=True)
    products = stand_in_gpu.products
    assert len(products) > 30 and all(ndim <= 2 for ndim, _ in products), products
    if dtype != "float32":  # the products themselves in the autocast dtype
        assert {d for _, d in products} >= {_low(dtype)}
    with backend.autocast(None):
        want = _model_products(dtype, device=False)  # NumPy's products (batched), the same dtype
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(w).max())


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


# ---- the kernels' fallback on a failed CUDA launch ---------------------------------------------------


def _launch_errors():
    pytest.importorskip("cupy_backends", reason="needs CuPy (its CUDA error classes)")
    from cupy_backends.cuda.api.driver import CUDADriverError
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    driver_error = CUDADriverError.__new__(CUDADriverError)  # its __init__ asks libcuda for the error's name
    driver_error.args = ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: too many resources requested for launch",)
    return {"driver": driver_error, "runtime": CUDARuntimeError(719)}  # 719: unspecified launch failure


@pytest.mark.parametrize("kind", ["driver", "runtime"])
def test_a_cuda_launch_error_falls_back_with_one_warning(monkeypatch, kind):
    error = _launch_errors()[kind]

    def launch_fails(*args, **kwargs):
        raise error

    fake_cuda_kernels = types.SimpleNamespace(softmax_forward=launch_fails, gelu_forward=launch_fails)
    monkeypatch.setattr(dispatch, "backend_for", lambda array: "cuda")  # NumPy arrays play the GPU's
    monkeypatch.setitem(dispatch._modules, "cuda", [fake_cuda_kernels])
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with dispatch.use("numpy"):
        want = F.softmax(tl.Tensor(x)).data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = F.softmax(tl.Tensor(x)).data  # the launch fails: warn, switch CUDA kernels off, run the reference
        F.gelu(tl.Tensor(x))  # no second warning
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "failed to compile or launch" in messages[0] and type(error).__name__ in messages[0]
    np.testing.assert_array_equal(got, want)
    assert not dispatch.available("cuda")
    dispatch._reset()


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
