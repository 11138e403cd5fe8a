"""BERT, the encoder half: held equal to transformers' BERT (hidden states and every parameter's gradient)
on folders transformers writes, through save_pretrained both ways; exact GELU and masked softmax; a float64
whole-model gradcheck of a tiny encoder.

Float32 tolerances against transformers: hidden states, pooled outputs and logits atol 2e-5 (values of
order 1: two float32 implementations of the same sums in other orders); gradients rtol 1e-4 with atol
2e-5 times the largest element of that parameter's gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import serve_folder

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.functional.activation import normal_cdf
from tinygrad_llm.kernels import dispatch
from tinygrad_llm.model.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel
from tinygrad_llm.model.bert_pretrained import hf_names
from tinygrad_llm.model.pretrained import PretrainedError

SMALL = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=12,
    type_vocab_size=2,
)
HF_CLASSES = {
    BertModel: "BertModel",
    BertForMaskedLM: "BertForMaskedLM",
    BertForSequenceClassification: "BertForSequenceClassification",
}


# --- the operations: exact GELU, masked softmax ------------------------------------------------------------


def test_normal_cdf_matches_math_erf_to_float64_precision():
    x = np.concatenate([np.linspace(-40, 40, 20001), [0.0, -1e-300, 1e-8, 2 * math.sqrt(2)]])
    expected = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    got = normal_cdf(np, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    tail = (x < -5) & (x > -37)  # relative precision where Phi is tiny (down to 1e-298): gelu(-10) is not 0
    np.testing.assert_allclose(got[tail], expected[tail], rtol=1e-12)


def test_exact_gelu_is_x_phi_x_and_gradchecks():
    x = np.random.default_rng(0).normal(0, 3, size=(4, 50)).astype(np.float32)
    ours = F.gelu(tl.Tensor(x), approximate="none").data
    # against x * 0.5 erfc(-x / sqrt 2) from math, in float64: torch's 0.5 x (1 + erf(x / sqrt 2)) cancels at
    # negative x (relative error 1e-2 at gelu(-3.5) in float32, 1e-4 at gelu(-7) even in float64)
    exact = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64).ravel()]).reshape(x.shape)
    np.testing.assert_allclose(ours, exact, rtol=2.5e-7, atol=1e-38)  # float32 rounding of Phi and of the product
    x64 = tl.Tensor(np.random.default_rng(1).normal(0, 3, size=(3, 7)), requires_grad=True)
    assert tl.gradcheck(lambda t: F.gelu(t, approximate="none"), [x64])
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(tl.Tensor(x), approximate="erf")


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float32, 2.5e-7, 1e-38), (np.float64, 1e-14, 2e-15)])
def test_exact_gelu_kernel_equals_the_reference(dtype, rtol, atol):
    """Both compute in float64 and round; the derivative Phi(x) + x phi(x) partly cancels at negative x, so in
    float64 the two agree to 2e-15 absolute there rather than 1e-14 relative."""
    if not dispatch.available("numba"):
        pytest.skip("Numba kernels are not available")
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0, 3, 5000), [-40.0, -9.0, -0.0, 1e-30, 12.0]]).astype(dtype).reshape(5, -1)
    gy = rng.normal(size=x.shape).astype(dtype)
    results = {}
    for mode in ("numpy", "auto"):
        with dispatch.use(mode):
            t = tl.Tensor(x, requires_grad=True)
            y = F.gelu(t, approximate="none")
            (y * tl.Tensor(gy)).sum().backward()
            results[mode] = (y.data, t.grad)
    for ours, reference in zip(results["auto"], results["numpy"]):
        np.testing.assert_allclose(ours, reference, rtol=rtol, atol=atol)


@pytest.mark.parametrize("causal", [False, True])
def test_masked_softmax_is_masked_fill_then_softmax_and_gradchecks(causal):
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(2, 3, 5, 5))
    mask = np.ones((2, 5), bool)
    mask[1, 3:] = False
    keep = mask[:, None, None, :]
    if causal:
        keep = keep & np.tril(np.ones((5, 5), bool))
    z = np.where(keep, scores * 0.5, -np.inf)
    expected = np.exp(z - z.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = F.masked_softmax(tl.Tensor(scores), mask[:, None, None, :], scale=0.5, causal=causal).data
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    x = tl.Tensor(scores, requires_grad=True)
    assert tl.gradcheck(lambda t: F.masked_softmax(t, mask[:, None, None, :], scale=0.5, causal=causal), [x])


def test_fully_masked_row_gets_zero_weights_not_nan():
    y = F.masked_softmax(tl.Tensor(np.zeros((1, 2, 3))), np.array([False, False, False]), causal=False).data
    assert np.array_equal(y, np.zeros((1, 2, 3)))


# --- transformers as the oracle ---------------------------------------------------------------------------


def hf_model(transformers, torch, cls, seed=0):
    """A transformers BERT with weights of order 1 (its own init, std 0.02, would make every layer near-linear)."""
    torch.manual_seed(seed)
    model = getattr(transformers, HF_CLASSES[cls])(transformers.BertConfig(**SMALL))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if "LayerNorm" in name else 0.3))
    return model.eval()


def batch(padded: bool, token_types: bool):
    rng = np.random.default_rng(3)
    ids = rng.integers(1, SMALL["vocab_size"], size=(3, 9))
    mask = np.ones_like(ids)
    if padded:
        mask[1, 6:] = 0
        mask[2, 2:] = 0
        ids[mask == 0] = 0
    types = (np.arange(9)[None, :] >= 4).astype(np.int64).repeat(3, 0) if token_types else None
    return ids, (mask if padded else None), types


def torch_inputs(torch, ids, mask, types):
    kwargs = {"input_ids": torch.tensor(ids)}
    if mask is not None:
        kwargs["attention_mask"] = torch.tensor(mask)
    if types is not None:
        kwargs["token_type_ids"] = torch.tensor(types)
    return kwargs


def assert_grads_equal(ours, hf):
    grads = {name: p.grad.numpy() for name, p in hf.named_parameters()}
    for name, p in ours.named_parameters():
        names = hf_names(name)
        prefix = "bert." if hasattr(ours, "bert") and not names[0].startswith(("cls.", "classifier.")) else ""
        expected = np.concatenate([grads[prefix + n] for n in names])
        assert p.grad is not None, name
        np.testing.assert_allclose(
            p.grad, expected, rtol=1e-4, atol=2e-5 * max(np.abs(expected).max(), 1e-3), err_msg=name
        )


@pytest.mark.parametrize("padded,token_types", [(False, False), (True, False), (True, True)])
def test_bert_model_hidden_states_and_gradients_equal_transformers(transformers, torch, tmp_path, padded, token_types):
    hf = hf_model(transformers, torch, BertModel)
    hf.save_pretrained(tmp_path)
    ours = BertModel.from_pretrained(tmp_path)
    ids, mask, types = batch(padded, token_types)
    out = hf(**torch_inputs(torch, ids, mask, types))
    hidden, pooled = ours(ids, attention_mask=mask, token_type_ids=types)
    assert hidden.shape == (3, 9, SMALL["hidden_size"]) and pooled.shape == (3, SMALL["hidden_size"])
    np.testing.assert_allclose(hidden.data, out.last_hidden_state.detach().numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(pooled.data, out.pooler_output.detach().numpy(), atol=2e-5, rtol=0)
    r1 = np.random.default_rng(4).normal(size=hidden.shape).astype(np.float32)
    r2 = np.random.default_rng(5).normal(size=pooled.shape).astype(np.float32)
    ((hidden * tl.Tensor(r1)).sum() + (pooled * tl.Tensor(r2)).sum()).backward()
    ((out.last_hidden_state * torch.tensor(r1)).sum() + (out.pooler_output * torch.tensor(r2)).sum()).backward()
    assert_grads_equal(ours, hf)


@pytest.mark.parametrize("padded,token_types", [(False, False), (True, True)])
def test_masked_lm_logits_loss_and_gradients_equal_transformers(transformers, torch, tmp_path, padded, token_types):
    hf = hf_model(transformers, torch, BertForMaskedLM, seed=1)
    hf.save_pretrained(tmp_path)
    ours = BertForMaskedLM.from_pretrained(tmp_path)
    assert ours.bert.pooler is None
    ids, mask, types = batch(padded, token_types)
    labels = np.full_like(ids, -100)
    labels[:, 1::3] = ids[:, 1::3]  # the loss only where "masked", as MLM training
    out = hf(**torch_inputs(torch, ids, mask, types), labels=torch.tensor(labels))
    logits = ours(ids, attention_mask=mask, token_type_ids=types)
    np.testing.assert_allclose(logits.data, out.logits.detach().numpy(), atol=2e-5, rtol=0)
    loss = F.cross_entropy(logits, labels)
    assert abs(loss.item() - out.loss.item()) < 1e-5
    loss.backward()
    out.loss.backward()
    assert_grads_equal(ours, hf)
    assert ours.bert.embeddings.word_embeddings.weight.grad is not None  # the tied decoder's share included


def test_round_trips_both_ways(transformers, torch, tmp_path):
    """transformers -> ours -> save_pretrained -> transformers: the same tensors; and ours (fresh) -> transformers
    -> ours: the same parameters. A classifier loads from an MLM folder with its head newly initialised."""
    for cls in HF_CLASSES:
        hf = hf_model(transformers, torch, cls, seed=2)
        hf.save_pretrained(tmp_path / cls.__name__)
        cls.from_pretrained(tmp_path / cls.__name__).save_pretrained(tmp_path / f"{cls.__name__}-ours")
        back = getattr(transformers, HF_CLASSES[cls]).from_pretrained(tmp_path / f"{cls.__name__}-ours")
        for (name, a), (_, b) in zip(sorted(hf.state_dict().items()), sorted(back.state_dict().items())):
            assert torch.equal(a, b), (cls.__name__, name)

        tl.manual_seed(7)
        fresh = cls(BertConfig(**SMALL, num_labels=3))
        fresh.save_pretrained(tmp_path / f"{cls.__name__}-fresh")
        hf2 = getattr(transformers, HF_CLASSES[cls]).from_pretrained(tmp_path / f"{cls.__name__}-fresh")
        hf2.save_pretrained(tmp_path / f"{cls.__name__}-fresh-hf")
        again = cls.from_pretrained(tmp_path / f"{cls.__name__}-fresh-hf")
        for (name, p), (_, q) in zip(fresh.named_parameters(), again.named_parameters()):
            assert np.array_equal(p.data, q.data), (cls.__name__, name)
    with pytest.warns(UserWarning, match="classifier"):
        clf = BertForSequenceClassification.from_pretrained(tmp_path / "BertForMaskedLM")
    mlm = BertForMaskedLM.from_pretrained(tmp_path / "BertForMaskedLM")
    assert np.array_equal(clf.bert.encoder[1].att.W_qkv.weight.data, mlm.bert.encoder[1].att.W_qkv.weight.data)


def test_bad_folders_say_what_is_wrong(tmp_path):
    tl.manual_seed(0)
    BertModel(BertConfig(**SMALL)).save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(config.replace('"hidden_size": 16', '"hidden_size": 32'))
    with pytest.raises(PretrainedError, match="shape"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(config.replace('"gelu"', '"relu"'))
    with pytest.raises(PretrainedError, match="hidden_act"):
        BertModel.from_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="neither a folder nor a known model name; known names: bert-base"):
        BertModel.from_pretrained(tmp_path / "nowhere")


# --- float64 gradcheck of a whole tiny encoder --------------------------------------------------------------


def test_whole_encoder_gradcheck_float64():
    """Every parameter of a tiny BertForMaskedLM (post-norm blocks, exact GELU, padding mask, segments, tied
    decoder) against central differences, on the NumPy reference path."""
    tl.manual_seed(0)
    cfg = BertConfig(
        vocab_size=9,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=12,
        max_position_embeddings=6,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,
    )
    model = BertForMaskedLM(cfg).double()
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] += 0.3 * rng.standard_normal(p.shape)
    ids = rng.integers(1, 9, size=(2, 5))  # no [PAD] (id 0): its embedding row is kept out of the gradient on purpose
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    types = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    with dispatch.use("numpy"):
        assert tl.gradcheck(lambda *ps: model(ids, attention_mask=mask, token_type_ids=types), model.parameters())


# --- downloads by name, as GPT-2's -----------------------------------------------------------------------


def test_a_bert_name_is_downloaded_once_checked_and_loaded(transformers, torch, tmp_path, monkeypatch):
    """A local stand-in for the hub serves a transformers-written BERT as "bert-base-uncased": downloaded into the
    cache once, checked against the given sizes and hashes, then equal to the served model."""
    from tinygrad_llm.files import sha256_of
    from tinygrad_llm.model import bert_pretrained

    root = tmp_path / "hub"
    served = root / "org" / "bert" / "resolve" / "rev"
    hf = hf_model(transformers, torch, BertModel, seed=4)
    hf.save_pretrained(served)
    with serve_folder(root) as (url, requests):
        files = {
            name: ((served / name).stat().st_size, sha256_of(served / name))
            for name in ("config.json", "model.safetensors")
        }
        monkeypatch.setitem(bert_pretrained.BERT_MODELS, "bert-base-uncased", ("org/bert", "rev", files))
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
        ours = BertModel.from_pretrained("bert-base-uncased")
        BertModel.from_pretrained("google-bert/bert-base-uncased")  # the hub's name: the same cached files
        assert sorted(requests) == ["/org/bert/resolve/rev/config.json", "/org/bert/resolve/rev/model.safetensors"]
        ids, mask, types = batch(True, True)
        expected = hf(**torch_inputs(torch, ids, mask, types)).last_hidden_state.detach().numpy()
        np.testing.assert_allclose(ours(ids, mask, types)[0].data, expected, atol=2e-5, rtol=0)
        wrong = {**files, "model.safetensors": (files["model.safetensors"][0], "0" * 64)}
        monkeypatch.setitem(bert_pretrained.BERT_MODELS, "bert-base-cased", ("org/bert", "rev", wrong))
        with pytest.raises(PretrainedError, match="expected 0000"):
            BertModel.from_pretrained("bert-base-cased")
