"""benchmarks/llmc.py's side that needs no llm.c: our weights written in llm.c's checkpoint layout (the order,
shapes and offsets its gpt2_build_from_checkpoint reads), and its gradient file read back into tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

import tinygrad_llm as tl
from tinygrad_llm.model import GPTConfig, GPTModel

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "llmc.py"


@pytest.fixture(scope="module")
def llmc():
    return load_script(PATH, "llmc_benchmark")


def tied_model(**overrides) -> GPTModel:
    tl.manual_seed(0)
    config = dict(vocab_size=65, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
    return GPTModel(GPTConfig(**{**config, "qkv_bias": True, "tie_weights": True, **overrides}))


def test_checkpoint_has_llmc_header_and_tensors_at_their_offsets(llmc, tmp_path):
    model = tied_model()
    llmc.write_checkpoint(model, tmp_path / "model.bin")
    raw = (tmp_path / "model.bin").read_bytes()
    header = np.frombuffer(raw[:1024], np.int32)
    # magic, version, maxT, V, L, NH, C, Vp: what gpt2_build_from_checkpoint reads
    assert header[:8].tolist() == [20240326, 3, 8, 65, 2, 2, 16, 128]
    assert not header[8:].any()
    floats = np.frombuffer(raw[1024:], np.float32)
    c, layers, vp, t = 16, 2, 128, 8
    sizes = [vp * c, t * c] + [layers * n for n in (c, c, 3 * c * c, 3 * c, c * c, c, c, c, 4 * c * c, 4 * c)]
    sizes += [layers * 4 * c * c, layers * c, c, c]  # fcprojw, fcprojb, lnfw, lnfb: llm.c's 16 tensors
    assert floats.size == sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    segments = [floats[offsets[i] : offsets[i + 1]] for i in range(16)]
    wte = segments[0].reshape(vp, c)
    np.testing.assert_array_equal(wte[:65], model.tok_emb.weight.data)
    assert not wte[65:].any()  # llm.c's padding rows are zero
    np.testing.assert_array_equal(segments[1], model.pos_emb.weight.data.ravel())
    blocks = list(model.trf_blocks)
    per_layer = [  # llm.c's tensors 2-13, each stacked over the layers: (L, ...)
        lambda b: b.norm1.scale,
        lambda b: b.norm1.shift,
        lambda b: b.att.W_qkv.weight,  # (3C, C): queries, keys, values
        lambda b: b.att.W_qkv.bias,
        lambda b: b.att.out_proj.weight,
        lambda b: b.att.out_proj.bias,
        lambda b: b.norm2.scale,
        lambda b: b.norm2.shift,
        lambda b: b.ff.layers[0].weight,  # (4C, C)
        lambda b: b.ff.layers[0].bias,
        lambda b: b.ff.layers[2].weight,  # (C, 4C)
        lambda b: b.ff.layers[2].bias,
    ]
    for i, pick in enumerate(per_layer, start=2):
        expected = np.concatenate([pick(block).data.ravel() for block in blocks])
        np.testing.assert_array_equal(segments[i], expected, err_msg=f"llm.c tensor {i}")
    np.testing.assert_array_equal(segments[14], model.final_norm.scale.data)
    np.testing.assert_array_equal(segments[15], model.final_norm.shift.data)


def test_gradient_file_splits_into_the_same_tensors(llmc, tmp_path):
    model = tied_model()
    like = llmc.llmc_arrays(model)
    flat = np.concatenate([a.ravel() for _, a in like])
    flat.tofile(tmp_path / "grads.bin")
    back = llmc.read_gradients(tmp_path / "grads.bin", like)
    assert [n for n, _ in back] == [n for n, _ in like]
    for (_, a), (_, b) in zip(like, back, strict=True):
        np.testing.assert_array_equal(a, b)
    flat[:-1].tofile(tmp_path / "short.bin")
    with pytest.raises(ValueError, match="short.bin"):
        llmc.read_gradients(tmp_path / "short.bin", like)


def test_untied_model_is_refused_with_the_reason(llmc):
    with pytest.raises(ValueError, match="tied output head"):
        llmc.llmc_arrays(tied_model(tie_weights=False))
