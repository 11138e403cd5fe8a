"""Mixed precision: the loss scaler against torch.amp.GradScaler, autocast's matrix products, and fp16/bf16
training that tracks float32 (on the CPU here; benchmarks/gpu_check.py runs the same on a GPU)."""

from __future__ import annotations

import types

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.amp import GradScaler, MixedPrecision
from tinygrad_llm.data import GPTDataset
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import SGD
from tinygrad_llm.train.trainer import TrainConfig, Trainer

# a gradient per step: finite, inf or NaN, in runs long enough to see the scale grow, back off, and grow again
PATTERN = ["ok", "ok", "ok", "inf", "ok", "nan", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "-inf", "inf", "ok", "ok"]


def _gradient(kind: str, step: int) -> np.ndarray:
    g = np.array([0.5, -1.5, 2.0], np.float32) * (step + 1)
    if kind != "ok":
        g[1] = {"inf": np.inf, "-inf": -np.inf, "nan": np.nan}[kind]
    return g


def _our_run(growth_interval):
    p = tl.Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1)
    scaler = GradScaler(init_scale=2.0**10, growth_interval=growth_interval)
    scales, params = [], []
    for step, kind in enumerate(PATTERN):
        p.grad = _gradient(kind, step) * np.float32(scaler.get_scale())  # as (loss * scale).backward() leaves it
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(p.data.copy())
    return scales, params


def test_grad_scaler_matches_torch_on_the_same_inf_nan_pattern(torch):
    for growth_interval in (3, 2000):
        p = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([p], lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=growth_interval)
        want_scales, want_params = [], []
        for step, kind in enumerate(PATTERN):
            opt.zero_grad()
            scaler.scale((p * torch.from_numpy(_gradient(kind, step))).sum()).backward()  # p.grad = g * scale
            scaler.step(opt)
            scaler.update()
            want_scales.append(scaler.get_scale())
            want_params.append(p.detach().numpy().copy())
        scales, params = _our_run(growth_interval)
        assert scales == want_scales, growth_interval
        # the same steps taken and skipped; the SGD updates themselves round differently by an ulp
        np.testing.assert_allclose(np.array(params), np.array(want_params), rtol=1e-6, atol=1e-6)


def test_grad_scaler_defaults_and_sequence_are_pytorchs():
    scaler = GradScaler()
    assert (scaler.get_scale(), scaler.growth_factor, scaler.backoff_factor, scaler.growth_interval) == (
        65536.0,
        2.0,
        0.5,
        2000,
    )
    scales, params = _our_run(growth_interval=3)
    # grow x2 after 3 clean steps; halve (and restart the count) on each inf/NaN step, which leaves p alone
    assert scales == [1024, 1024, 2048, 1024, 1024, 512, 512, 512, 1024, 1024, 1024, 2048, 2048, 1024, 512, 512, 512]
    for step, kind in enumerate(PATTERN):
        before = params[step - 1] if step else np.ones(3, np.float32)
        assert np.array_equal(params[step], before) == (kind != "ok"), step


def test_grad_scaler_state_round_trips_and_rejects_bad_settings():
    scaler = GradScaler(init_scale=8.0, growth_interval=5)
    opt = types.SimpleNamespace(
        param_groups=[{"params": [types.SimpleNamespace(grad=np.ones(2, np.float32))]}], step=lambda: None
    )
    for _ in range(3):
        scaler.step(opt)
        scaler.update()
    other = GradScaler()
    other.load_state_dict(scaler.state_dict())
    assert (
        other.state_dict()
        == scaler.state_dict()
        == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 5, "_growth_tracker": 3}
    )
    with pytest.raises(RuntimeError, match="call step"):
        GradScaler().update()
    for bad in (dict(init_scale=0.0), dict(growth_factor=1.0), dict(backoff_factor=1.0), dict(growth_interval=0)):
        with pytest.raises(ValueError, match="GradScaler"):
            GradScaler(**bad)


# ---- autocast: the matrix products in low precision, everything else float32 -------------------------


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_products_stay_float32_outside_and_close_to_float32(precision):
    low = _low_or_skip(precision)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 5, 16)), rng.standard_normal((8, 16)), rng.standard_normal(8)
    q, k = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 5, 4))
    gy = rng.standard_normal((2, 5, 8))

    def run(dtype):
        ts = [tl.Tensor(a, requires_grad=True, dtype=np.float32) for a in (x, w, b, q, k)]
        with backend.autocast(dtype):
            y = F.linear(ts[0], ts[1], ts[2])
            s = ts[3] @ ts[4].swapaxes(-1, -2)
        assert y.dtype == np.float32 and s.dtype == np.float32
        (y * tl.Tensor(gy, dtype=np.float32)).sum().backward()
        (s * s).sum().backward()
        return [y.data, s.data] + [t.grad for t in ts]

    eps = float(np.finfo(low).eps) if low == np.float16 else 2.0**-8
    for i, (got, want) in enumerate(zip(run(low), run(None))):
        assert got.dtype == np.float32
        # the inputs rounded to low precision (relative eps/2 each), sums of 16 products: a few eps of the scale
        np.testing.assert_allclose(got, want, rtol=0, atol=8 * eps * np.abs(want).max())
        if i != 4:  # (the bias gradient is a float32 sum of the float32 gradient: no product)
            assert not np.array_equal(got, want)  # it really computed in low precision


def _attention_run(dtype, seen, dropout=0.0):
    """Fused causal attention's output and q, k, v gradients under autocast(dtype); ``seen`` collects the dtypes
    of the softmax's input and gradient and of the products' operands."""
    from tinygrad_llm import runtime
    from tinygrad_llm.functional import attention

    rng = np.random.default_rng(4)
    qkv = [tl.Tensor(rng.standard_normal((2, 3, 6, 8)), requires_grad=True, dtype=np.float32) for _ in range(3)]
    gy = tl.Tensor(rng.standard_normal((2, 3, 6, 8)), dtype=np.float32)
    real = attention.causal_softmax_forward, attention.causal_softmax_backward, runtime.matmul

    def forward(xp, scores, scale):
        seen.append(("softmax", scores.dtype))
        return real[0](xp, scores, scale)

    def backward(xp, w, gw, scale):
        seen.append(("softmax backward", w.dtype, gw.dtype))
        return real[1](xp, w, gw, scale)

    def matmul(a, b):
        seen.append(("product", a.dtype, b.dtype))
        return real[2](a, b)

    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setattr(attention, "causal_softmax_forward", forward)
        m.setattr(attention, "causal_softmax_backward", backward)
        m.setattr(runtime, "matmul", matmul)
        tl.manual_seed(3)
        with backend.autocast(dtype):
            out = F.causal_attention(*qkv, dropout=dropout, training=dropout > 0)
        (out * gy).sum().backward()
    return [out.data] + [t.grad for t in qkv]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_attention_products_run_in_the_autocast_dtype_and_its_softmax_in_float32(precision):
    low = _low_or_skip(precision)
    seen, seen32 = [], []
    got, want = _attention_run(low, seen), _attention_run(None, seen32)
    products = [s for s in seen if s[0] == "product"]
    assert len(products) == 6 and all(s[1:] == (low, low) for s in products), seen  # 2 forward, 4 backward
    assert ("softmax", np.float32) in seen and ("softmax backward", np.float32, np.float32) in seen, seen
    eps = float(np.finfo(low).eps) if low == np.float16 else 2.0**-8
    for g, w in zip(got, want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=0, atol=8 * eps * np.abs(w).max())
        assert not np.array_equal(g, w)  # it really computed in low precision


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_in_fp32_is_the_float32_products_and_softmax_bit_for_bit(dropout):
    """fp32 (no autocast) attention: every product and the softmax in float32, the same bits as composing them."""
    from tinygrad_llm import runtime
    from tinygrad_llm.functional.activation import causal_softmax_forward

    seen = []
    out, gq, gk, gv = _attention_run(None, seen, dropout)
    assert all(s[1:] == (np.float32,) * (len(s) - 1) for s in seen), seen
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 3, 6, 8)).astype(np.float32) for _ in range(3))
    w = causal_softmax_forward(np, runtime.matmul(q, k.swapaxes(-1, -2)), 1.0 / np.sqrt(8))
    if dropout:
        tl.manual_seed(3)
        w = w * (backend.get_generator("cpu").random(w.shape, dtype=w.dtype) >= dropout)
        w *= np.float32(1.0 / (1.0 - dropout))  # inverted dropout, as F.dropout scales
    np.testing.assert_array_equal(out, runtime.matmul(w, v))


def test_the_scalers_verdict_stays_on_the_device_until_read():
    p = tl.Tensor(np.ones(3, np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1)
    scaler = GradScaler(init_scale=4.0)
    p.grad = np.array([4.0, np.inf, 8.0], np.float32)
    scaler.unscale_(opt)
    flag = scaler.unread_found_inf()
    assert not isinstance(flag, bool) and flag.shape == () and bool(flag)  # a 0-d array (NumPy: np.bool_)
    scaler.read_found_inf(bool(flag))  # as a loop copies it with its loss
    assert scaler.unread_found_inf() is None and scaler.found_inf is True
    assert not scaler.step(opt) and np.array_equal(p.data, np.ones(3, np.float32))
    scaler.update()
    assert scaler.get_scale() == 2.0
    # a step abandoned after its unscale_ (the trainer rewinds it): the next unscale_ divides again
    p.grad = np.array([2.0, 4.0, 6.0], np.float32)
    scaler.unscale_(opt)
    scaler.discard_step()
    p.grad = np.array([2.0, 4.0, 6.0], np.float32)
    scaler.unscale_(opt)
    np.testing.assert_array_equal(p.grad, [1.0, 2.0, 3.0])
    assert scaler.found_inf is False and scaler.unread_found_inf() is None


def test_autocast_leaves_float64_alone():
    x = tl.Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    w = tl.Tensor(np.random.default_rng(2).standard_normal((5, 4)), requires_grad=True)
    with backend.autocast(np.float16):
        assert tl.gradcheck(lambda a, b: F.linear(a, b), [x, w])  # float64 gradient checks still exact


def test_loss_scaling_keeps_small_float16_gradients_from_flushing_to_zero():
    """A gradient of 1e-8 through a float16 product is 0 unless the loss is scaled (float16's smallest
    subnormal is 6e-8); scaled by 2^16 and unscaled in float32 it survives."""
    x = np.full((1, 4), 1e-4, np.float32)

    def weight_grad(scale):
        w = tl.Tensor(np.ones((2, 4), np.float32), requires_grad=True)
        with backend.autocast(np.float16):
            loss = F.linear(tl.Tensor(x), w).sum() * 1e-4  # dL/dy = 1e-4, dL/dw = 1e-8
        (loss * scale).backward()
        return w.grad / np.float32(scale)

    assert not weight_grad(1.0).any()
    np.testing.assert_allclose(weight_grad(2.0**16), 1e-8, rtol=2e-3)


# ---- training: fp16 and bf16 track fp32 ----------------------------------------------------------------


def _trainer(out, precision, steps=30):
    tl.manual_seed(0)
    rng = np.random.default_rng(1)
    ids = (np.arange(800) * 7 % 32 + (rng.random(800) < 0.1)) % 32
    model = GPTModel(GPTConfig(vocab_size=32, context_length=16, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0))
    config = TrainConfig(
        max_steps=steps,
        batch_size=4,
        lr=3e-3,
        warmup_steps=3,
        eval_interval=steps,
        eval_iters=4,
        seed=0,
        precision=precision,
    )
    return Trainer(
        model, GPTDataset(ids[:700], 16, stride=5), GPTDataset(ids[700:], 16), config, out, log=lambda message: None
    )


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_training_tracks_float32(tmp_path, precision):
    _low_or_skip(precision)
    runs = {}
    for name in ("fp32", precision):
        trainer = _trainer(tmp_path / name, name)
        losses = [trainer.train_step() for _ in range(30)]
        runs[name] = (np.array(losses), trainer)
    ref, low = runs["fp32"][0], runs[precision][0]
    assert ref[-1] < ref[0] - 0.5  # it learned
    # bf16 keeps 8 bits of mantissa, fp16 11: losses stay within a few per cent of float32's all along
    np.testing.assert_allclose(low, ref, rtol=0.03 if precision == "bf16" else 0.01)
    scaler = runs[precision][1].precision.scaler
    assert scaler.enabled == (precision == "fp16")
    if precision == "fp16":
        assert scaler.get_scale() == 65536.0  # no overflow in 30 steps of a small model: nothing skipped
    for p in runs[precision][1].model.parameters():
        assert p.data.dtype == np.float32  # the master weights stay float32


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_saved(tmp_path):
    trainer = _trainer(tmp_path, "fp16", steps=4)
    trainer.precision.scaler._scale = 2.0**40  # so large that the scaled gradients overflow float16
    before = {n: p.data.copy() for n, p in trainer.model.named_parameters()}
    trainer.train_step()
    assert trainer.precision.scaler.get_scale() == 2.0**39 and trainer.step == 1
    for n, p in trainer.model.named_parameters():
        np.testing.assert_array_equal(p.data, before[n], err_msg=n)  # skipped: nothing moved
    trainer.fit()
    resumed = _trainer(tmp_path, "fp16", steps=4)
    resumed.load_state()
    assert resumed.precision.scaler.state_dict() == trainer.precision.scaler.state_dict()


def test_precision_settings_are_checked():
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, fp16, bf16"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="precision 'int8'"):
        MixedPrecision("int8")
    assert MixedPrecision("tf32", "cpu").compute_dtype is None  # TF32 is a GPU setting: float32 on the CPU


def test_bf16_without_ml_dtypes_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(RuntimeError, match="bf16 needs the ml_dtypes package.*pip install ml-dtypes"):
        MixedPrecision("bf16", "cpu")


def _low_or_skip(precision):
    if precision == "bf16":
        pytest.importorskip("ml_dtypes", reason="bf16 needs ml_dtypes (pip install ml-dtypes)")
    return backend.low_precision_dtype(precision)


def test_train_command_takes_precision_and_saves_the_scale(tmp_path):
    from tinygrad_llm.checkpoint import load_checkpoint
    from tinygrad_llm.cli import main

    story = tmp_path / "story.txt"
    story.write_text("the cat sat on the mat and looked at the hat. " * 40)
    args = [
        "train",
        "--data",
        str(story),
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--eval-interval",
        "3",
        "--preset",
        "tiny",
        "--context-length",
        "16",
        "--batch-size",
        "4",
        "--eval-iters",
        "2",
        "--sample-tokens",
        "4",
        "--warmup-steps",
        "0",
        "--precision",
        "fp16",
    ]
    assert main(args) == 0
    state = load_checkpoint(tmp_path / "run").trainer_state
    assert state["train_config"]["precision"] == "fp16"
    assert state["precision"] == {
        "precision": "fp16",
        "grad_scaler": {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
            "_growth_tracker": 3,
        },
    }
