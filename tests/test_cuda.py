"""The same operations on device='cuda' (CuPy) agree with the CPU (NumPy): forward values and gradients.

Skipped with a reason when CuPy or a CUDA GPU is missing. On a GPU machine: ``pytest tests/test_cuda.py``
(or ``python benchmarks/gpu_check.py``, which runs it), then record the outcome (date, device) in
benchmarks/RESULTS.md. The CUDA kernels must be the ones that ran: a fallback to the reference (its warning)
fails a test, each test ends with the CUDA kernels still on, and the cases that reach a kernel call as many
CUDA kernels as the CPU run calls Numba ones.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not tl.cuda_available(), reason="needs CuPy and a CUDA GPU (pip install 'tinygrad-llm[cuda12]')"
    ),
    pytest.mark.filterwarnings("error:tinygrad_llm.kernels:RuntimeWarning"),  # a kernel fell back: fail
]


@pytest.fixture(autouse=True)
def cuda_kernels_stay_on():
    """Every test here starts with the kernels loaded and ends with the CUDA kernels still on."""
    dispatch._reset()
    dispatch.set_mode(None)
    yield
    assert dispatch.mode() == "auto" and dispatch.available("cuda"), "the CUDA kernels were switched off"


FLOAT64 = dict(rtol=1e-10, atol=1e-10)  # different kernels, same precision: rounding and summation order only
FLOAT32 = dict(rtol=1e-4, atol=1e-5)

IDS = np.array([[1, 3, 1], [0, 3, 3]])
TARGETS = np.array([[2, -100, 0], [4, 4, 1]])
MASK = np.array([[True, False, True, False], [False, False, True, True], [True, True, True, False]])
CAUSAL = np.triu(np.ones((3, 3), dtype=bool), k=1)


def normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def positive(*shape):
    return lambda rng: rng.uniform(0.5, 2.0, shape)


def distinct(*shape):
    return lambda rng: (rng.permutation(int(np.prod(shape))).reshape(shape) - 3.0) * 0.1


CASES = {
    "add_broadcast": (lambda a, b: a + b, [normal(3, 1, 4), normal(2, 4)]),
    "sub_mul_div": (lambda a, b: (a - b) * a / b, [normal(3, 4), positive(4)]),
    "scalars_pow": (lambda a: (2.0 - a) ** 2 / 3 + 2.0**a - a**0.5, [positive(3, 4)]),
    "exp_log_sqrt_tanh_relu": (lambda a: a.exp() + a.log() + a.sqrt() + a.tanh() + (a - 1).relu(), [positive(3, 4)]),
    "neg": (lambda a: -a, [normal(5)]),
    "matmul_vec_vec": (lambda a, b: a @ b, [normal(4), normal(4)]),
    "matmul_vec_batch": (lambda a, b: a @ b, [normal(4), normal(2, 4, 3)]),
    "matmul_broadcast": (lambda a, b: a @ b, [normal(2, 1, 3, 4), normal(5, 4, 2)]),
    "matmul_weight_shared": (lambda a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    "sum_mean_max": (
        lambda a: a.sum(axis=(0, 2), keepdims=True) + a.mean(axis=-1, keepdims=True) + a.max(axis=1, keepdims=True),
        [distinct(2, 3, 4)],
    ),
    "reshape_transpose": (lambda a: a.reshape(4, -1).T.swapaxes(0, 1).transpose(1, 0) * 2.0, [normal(2, 3, 4)]),
    "getitem": (
        lambda a: a[1:, ::-2, None, 2].sum() + a[np.array([2, 0, 2])].sum() + a[..., 0][MASK].sum(),
        [normal(3, 4, 5)],
    ),
    "concat_stack_split": (
        lambda a, b: (
            F.concatenate([a, F.stack([b, b], axis=1).reshape(2, -1)], axis=1) + F.split(a, 3, axis=1)[1].sum()
        ),
        [normal(2, 3), normal(2, 3)],
    ),
    "where_masked_fill": (lambda a, b: F.where(MASK, a, b) + a.masked_fill(MASK, 0.0), [normal(3, 4), normal(4)]),
    "causal_softmax": (lambda a: a.masked_fill(CAUSAL, -np.inf).softmax(-1), [normal(2, 3, 3)]),
    "log_softmax_extreme": (lambda a: F.log_softmax(a * 1e4, axis=0), [normal(3, 5)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b), [normal(2, 3, 6), normal(6), normal(6)]),
    "gelu": (F.gelu, [normal(3, 4)]),
    "gelu_erf": (lambda a: F.gelu(a * 4, approximate="none"), [normal(3, 4)]),  # BERT's: the tail at -x too
    "embedding": (lambda w: F.embedding(IDS, w), [normal(5, 3)]),
    "linear": (F.linear, [normal(2, 3, 4), normal(5, 4), normal(5)]),
    "cross_entropy": (
        lambda z: F.cross_entropy(z, TARGETS) + F.cross_entropy(z, TARGETS, reduction="sum"),
        [normal(2, 3, 5)],
    ),
    "cross_entropy_none": (lambda z: F.cross_entropy(z * 1e4, TARGETS, reduction="none"), [normal(2, 3, 5)]),
}
KERNEL_CASES = {
    "causal_softmax",
    "cross_entropy",
    "cross_entropy_none",
    "embedding",
    "gelu",
    "gelu_erf",
    "layer_norm",
}


def _kernel_calls(backend):
    return sum(n for (b, _name), n in dispatch.calls.items() if b == backend)


def _run(fn, arrays, device, cotangent):
    inputs = [Tensor(a, requires_grad=True, device=device) for a in arrays]
    out = fn(*inputs)
    assert out.device == device
    (out * Tensor(cotangent, device=device)).sum().backward()
    for x in inputs:
        assert x.grad is not None and tl.backend.device_of(x.grad) == device and x.grad.dtype == x.dtype
    return out.numpy(), [tl.backend.to_numpy(x.grad) for x in inputs]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_matches_cpu(name, dtype):
    fn, makers = CASES[name]
    rng = np.random.default_rng([7, sum(map(ord, name))])
    arrays = [make(rng).astype(dtype) for make in makers]
    with tl.no_grad():
        shape = fn(*[Tensor(a) for a in arrays]).shape
    cotangent = rng.standard_normal(shape).astype(dtype)
    numba_before, cuda_before = _kernel_calls("numba"), _kernel_calls("cuda")
    cpu_out, cpu_grads = _run(fn, arrays, "cpu", cotangent)
    gpu_out, gpu_grads = _run(fn, arrays, "cuda", cotangent)
    numba_ran, cuda_ran = _kernel_calls("numba") - numba_before, _kernel_calls("cuda") - cuda_before
    assert cuda_ran == numba_ran and (cuda_ran > 0) == (name in KERNEL_CASES), (numba_ran, cuda_ran)
    tol = FLOAT64 if dtype == "float64" else FLOAT32
    np.testing.assert_allclose(gpu_out, cpu_out, **tol, err_msg=f"{name} forward")
    for i, (g, c) in enumerate(zip(gpu_grads, cpu_grads)):
        np.testing.assert_allclose(
            g,
            c,
            rtol=tol["rtol"],
            atol=tol["atol"] * max(1.0, np.abs(c).max(initial=0)),
            err_msg=f"{name} gradient of input {i}",
        )


def test_gradcheck_on_cuda():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True, device="cuda")
    w = Tensor(np.random.default_rng(1).standard_normal((5, 4)), requires_grad=True, device="cuda")
    assert tl.gradcheck(lambda x, w: F.log_softmax(F.gelu(F.linear(x, w))), [x, w])


def test_to_device_round_trip_carries_the_gradient_back():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = (x.to("cuda") * 2.0).exp().sum().to("cpu")
    assert y.device == "cpu"
    y.backward()
    assert x.device == "cpu" and isinstance(x.grad, np.ndarray)
    np.testing.assert_allclose(x.grad, 2 * np.exp(2 * x.data), rtol=1e-12)


def test_mixing_devices_is_a_clear_error():
    a = Tensor(np.ones((2, 3)), device="cuda")
    b = Tensor(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"Add: inputs are on different devices.*\.to\(device\)"):
        a + b
    with pytest.raises(RuntimeError, match=r"MatMul: inputs are on different devices"):
        b @ a.T


def test_dropout_seeded_on_cuda():
    tl.manual_seed(3)
    x = Tensor(np.ones((100, 100), dtype=np.float32), requires_grad=True, device="cuda")
    y = F.dropout(x, 0.25)
    y.sum().backward()
    out, grad = y.numpy(), tl.backend.to_numpy(x.grad)
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    np.testing.assert_allclose(grad, kept / 0.75, rtol=1e-6)
    assert abs(1 - kept.mean() - 0.25) < 0.03
    tl.manual_seed(3)
    np.testing.assert_array_equal(
        F.dropout(Tensor(np.ones((100, 100), dtype=np.float32), device="cuda"), 0.25).numpy(), out
    )


# ---- what the GPU path must keep: exact resume, determinism, the same answers as the CPU -------------


def test_cuda_generator_state_round_trips():
    tl.manual_seed(11)
    x = Tensor(np.ones((64, 64), dtype=np.float32), device="cuda")
    F.dropout(x, 0.5)  # the CUDA generator exists and has drawn
    state = tl.backend.get_rng_state()
    assert "cuda" in state
    first = F.dropout(x, 0.5).numpy()
    tl.backend.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), first)


def test_training_on_cuda_resumes_bit_for_bit(tmp_path):
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.train.trainer import TrainConfig, Trainer, read_log

    def make(out, seed=0):
        tl.manual_seed(seed)
        ids = (np.arange(600) * 7 % 32 + (np.random.default_rng(1).random(600) < 0.1)) % 32
        model = GPTModel(
            GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.1)
        ).to("cuda")
        return Trainer(
            model,
            GPTDataset(ids[:500], 8, stride=3),
            GPTDataset(ids[500:], 8),
            TrainConfig(max_steps=8, batch_size=4, eval_interval=4, eval_iters=2, seed=seed),
            out,
            device="cuda",
            log=lambda message: None,
        )

    straight = make(tmp_path / "straight")
    straight.fit()
    make(tmp_path / "resumed").fit(stop_after=3)
    resumed = make(tmp_path / "resumed", seed=99)  # dropout's CUDA generator must come from the checkpoint
    assert resumed.load_state() == 3
    resumed.fit()
    losses = [(r["train_loss"], r["val_loss"]) for r in read_log(tmp_path / "straight")]
    assert losses == [(r["train_loss"], r["val_loss"]) for r in read_log(tmp_path / "resumed")]
    for name, value in straight.model.state_dict().items():
        np.testing.assert_array_equal(
            tl.backend.to_numpy(resumed.model.state_dict()[name]), tl.backend.to_numpy(value), err_msg=name
        )


def test_embedding_gradient_on_cuda_is_deterministic():
    ids = np.random.default_rng(0).integers(0, 5, (8, 64))  # few ids, many repeats: atomics would race
    gy = np.random.default_rng(1).standard_normal((8, 64, 48)).astype(np.float32)
    ids[:, 20:] = 0  # a padding id's long run: spread over several chunks of the kernel's first pass
    grads = []
    before = dispatch.calls["cuda", "embedding_backward"]
    for _ in range(3):
        w = Tensor(np.zeros((5, 48), np.float32), requires_grad=True, device="cuda")
        F.embedding(ids, w).backward(Tensor(gy, device="cuda").data)
        grads.append(tl.backend.to_numpy(w.grad))
    assert dispatch.calls["cuda", "embedding_backward"] == before + 3  # the kernel ran, not cupy.add.at
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])
    want = np.zeros((5, 48))
    np.add.at(want, ids.reshape(-1), gy.reshape(-1, 48).astype(np.float64))
    np.testing.assert_allclose(grads[0], want, rtol=1e-6, atol=1e-6)  # summed in double, rounded once


def test_clip_and_generate_on_cuda_match_the_cpu():
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.optim import clip_grad_norm_

    tl.manual_seed(2)
    model = GPTModel(GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2))
    gpu = GPTModel(model.config).to("cuda")
    gpu.load_state_dict(model.state_dict())
    ids = np.random.default_rng(0).integers(0, 97, (3, 16))
    norms = []
    for m in (model, gpu):
        F.cross_entropy(m(ids[:, :-1]), ids[:, 1:]).backward()
        norms.append(clip_grad_norm_(m.parameters(), 0.5))
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)
    for kwargs in (dict(), dict(temperature=0.9, top_k=20, seed=4), dict(temperature=1.0, top_p=0.9, seed=5)):
        want = tl.generate(model, ids[:, :4], max_new_tokens=8, **kwargs)
        np.testing.assert_array_equal(
            tl.generate(gpu, ids[:, :4], max_new_tokens=8, **kwargs), want, err_msg=str(kwargs)
        )


def test_indexing_backward_uses_no_deprecated_cupy_api():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        x = Tensor(np.ones((5, 3), np.float32), requires_grad=True, device="cuda")
        x[np.array([0, 2, 2, 4])].sum().backward()
        np.testing.assert_array_equal(tl.backend.to_numpy(x.grad)[:, 0], [1, 0, 2, 0, 1])
