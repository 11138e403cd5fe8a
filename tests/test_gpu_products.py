"""Matrix products on a GPU, checked on a CPU: every product the models make is a 2-D GEMM or one cuBLAS
strided-batched GEMM in its operands' dtype, never CuPy's > 2-D matmul (which raises on bfloat16, runs float16
in float32 and ignores TF32). The stand-in GPU arrays (tests/gpu_stand_in.py) multiply as CuPy 14 does, and a
model of cuBLAS's GemmStridedBatchedEx on host memory computes the batched products, so the layouts, strides
and transposes handed to cuBLAS are checked against NumPy's results, in float32, float16 and bfloat16.
"""

from __future__ import annotations

import numpy as np
import pytest
from gpu_stand_in import DeviceNamespace, HostCopies, address, on_device, use_stand_in

import tinygrad_llm as tl
from tinygrad_llm import backend, runtime
from tinygrad_llm import functional as F
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.runtime import batched_gemm


@pytest.fixture
def stand_in_gpu(monkeypatch):
    """Stand-in GPU arrays, the model of cuBLAS (TF32 off), the NumPy reference of every kernel."""
    cublas = use_stand_in(monkeypatch)
    with dispatch.use("numpy"):
        yield cublas


LOW = {"float32": None, "float16": np.dtype(np.float16), "bfloat16": "bfloat16"}
RTOL = {"float32": 1e-6, "float16": 2e-3, "bfloat16": 2e-2}  # against NumPy's own products in that dtype


def _low(name):
    if LOW[name] == "bfloat16":
        return backend.low_precision_dtype("bf16")  # ml_dtypes, installed with the bf16 extra
    return LOW[name]


def _operands(a_shape, b_shape, dtype, layout):
    """a and b of these shapes in ``dtype``; ``layout``: "c" (C-contiguous), "t" (b a transposed view, as
    k.swapaxes(-1, -2)), "slice" (views with gaps between rows and between matrices), "broadcast" (a's batch
    axes broadcast by stride-0 views)."""
    rng = np.random.default_rng(0)
    low = _low(dtype) or np.dtype(np.float32)

    def draw(shape):
        return rng.standard_normal(shape).astype(np.float32).astype(low)

    if layout == "t":
        return draw(a_shape), np.swapaxes(draw(b_shape[:-2] + b_shape[-2:][::-1]), -1, -2)
    if layout == "slice":
        a = draw(a_shape[:-2] + (a_shape[-2] + 2, a_shape[-1] + 3))[..., 1:-1, 2:-1]
        return a, draw(b_shape)
    if layout == "broadcast":
        return np.broadcast_to(draw(a_shape[-2:]), a_shape), draw(b_shape)
    return draw(a_shape), draw(b_shape)


SHAPES = [
    ((2, 3, 4), (4, 5), "c"),  # a linear layer: folded into one 2-D product
    ((2, 3, 4, 5), (2, 3, 5, 6), "c"),  # attention's weights @ values
    ((2, 3, 4, 5), (2, 3, 5, 6), "t"),  # attention's q @ k^T
    ((2, 3, 4, 5), (2, 3, 5, 6), "slice"),
    ((2, 3, 4, 5), (2, 3, 5, 6), "broadcast"),
    ((3, 4), (2, 4, 5), "c"),  # a broadcast over b's batch
    ((2, 1, 4, 5), (3, 5, 2), "c"),  # batch axes broadcasting both ways
    ((4,), (2, 4, 5), "c"),
    ((2, 3, 4), (4,), "c"),
    ((0, 3, 4), (0, 4, 2), "c"),
    ((2, 3, 0), (2, 0, 2), "c"),  # sums of nothing: 0
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("a_shape, b_shape, layout", SHAPES)
def test_batched_products_are_one_cublas_gemm_in_their_dtype(stand_in_gpu, dtype, a_shape, b_shape, layout):
    a, b = _operands(a_shape, b_shape, dtype, layout)
    got = runtime.matmul(a.view(HostCopies), b.view(HostCopies))
    want = a @ b  # NumPy's, in the same dtype
    assert isinstance(got, HostCopies) and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=RTOL[dtype], atol=RTOL[dtype])
    assert all(ndim <= 2 for ndim, _ in HostCopies.products), HostCopies.products  # never CuPy's > 2-D matmul
    batched = not (len(a_shape) > 2 and len(b_shape) == 2)  # all but a linear layer's (folded: one 2-D GEMM)
    batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    empty = got.size == 0 or 0 in a_shape[-1:]
    assert len(stand_in_gpu.calls) == (1 if batched and not empty else 0), stand_in_gpu.calls
    assert not batched or got.dtype == a.dtype  # cuBLAS writes the operands' dtype (NumPy's bf16: float32)
    for call in stand_in_gpu.calls:
        code = {"float32": 0, "float16": 2, "bfloat16": 14}[dtype]
        assert call["types"] == (code,) * 3 and call["compute"] == 68  # float32 sums, TF32 off
        assert call["count"] == int(np.prod(batch))  # the batch's matrices, in one call
    if layout == "t":
        assert stand_in_gpu.calls[0]["ops"] == (1, 0)  # k^T passed as it is, with cuBLAS's transpose flag


def test_float32_batched_products_use_tf32_when_it_is_set(monkeypatch, stand_in_gpu):
    monkeypatch.setattr(batched_gemm, "cuda_libraries", lambda: (stand_in_gpu, 0, True, address))
    for dtype, compute in ((np.float32, 77), (np.float16, 68), (np.float64, 70)):  # TF32 for float32 only
        a = np.ones((2, 3, 4), dtype).view(HostCopies)
        np.testing.assert_array_equal(runtime.matmul(a, a.swapaxes(-1, -2)), np.full((2, 3, 3), 4, dtype))
        assert stand_in_gpu.calls[-1]["compute"] == compute


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_precision_check_at_start_multiplies_as_the_models_do(stand_in_gpu, monkeypatch, precision):
    """--precision bf16 --device cuda checks at start that CuPy can multiply in bfloat16: through runtime.matmul,
    with > 2-D operands, where a 2x2 @ 2x2 probe passed and the first linear layer failed."""
    from tinygrad_llm.amp import MixedPrecision

    low = backend.low_precision_dtype(precision)
    monkeypatch.setattr(backend, "xp_for", lambda device: DeviceNamespace())
    assert MixedPrecision(precision, "cuda").compute_dtype == low
    assert len(HostCopies.products) == 1 and HostCopies.products[0] == (2, low)  # the folded one
    assert len(stand_in_gpu.calls) == 1 and stand_in_gpu.calls[0]["types"][0] == (2 if precision == "fp16" else 14)


def test_a_gpu_whose_cublas_refuses_bf16_is_a_clear_error_at_start(stand_in_gpu, monkeypatch):
    from tinygrad_llm.amp import MixedPrecision

    def not_supported(*args):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")  # cupy_backends' CUBLASError is a RuntimeError

    monkeypatch.setattr(backend, "xp_for", lambda device: DeviceNamespace())
    monkeypatch.setattr(stand_in_gpu, "gemmStridedBatchedEx", not_supported)
    with pytest.raises(RuntimeError, match=r"precision bfloat16: .* in bfloat16 \(CUBLAS_STATUS_NOT_SUPPORTED\)"):
        MixedPrecision("bf16", "cuda")


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
def test_the_models_products_are_gemms_in_the_autocast_dtype_forward_and_backward(stand_in_gpu, dtype):
    got = _model_products(dtype, device=True)
    products, batched = HostCopies.products, stand_in_gpu.calls
    assert len(products) >= 10 and all(ndim <= 2 for ndim, _ in products), products
    assert len(batched) > 15  # attention's: causal, BERT's and padded, forward and backward
    if dtype != "float32":  # the products themselves in the autocast dtype
        assert {d for _, d in products} == {_low(dtype)}
        assert {call["types"][0] for call in batched} == {2 if dtype == "float16" else 14}
    with backend.autocast(None):
        want = _model_products(dtype, device=False)  # NumPy's products (batched), the same dtype
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=RTOL[dtype], atol=RTOL[dtype] * np.abs(w).max())
