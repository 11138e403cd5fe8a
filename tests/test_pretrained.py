"""GPT-2 in the Hugging Face layout, in and out, held equal to transformers.GPT2LMHeadModel.

Float32 tolerance: logits agree within rtol = atol = 1e-5 (the two implementations sum in different
orders; logits are O(10), float32 epsilon is 1.2e-7).
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_folder

import tinygrad_llm as tl
from tinygrad_llm import GPTConfig, GPTModel, no_grad
from tinygrad_llm.cli import main
from tinygrad_llm.files import sha256_of
from tinygrad_llm.model import pretrained
from tinygrad_llm.model.pretrained import PretrainedError

RTOL = ATOL = 1e-5
SMALL = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=32)


def make_hf_model(transformers, torch, seed=0, **config):
    """A randomly initialised GPT2LMHeadModel; every parameter perturbed, so biases and LayerNorms are
    not their trivial zeros and ones and a wrong mapping shows."""
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=None, eos_token_id=None, **config))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def hf_small(transformers, torch, tmp_path_factory):
    """(folder saved by transformers, the model)."""
    model = make_hf_model(transformers, torch, **SMALL)
    folder = tmp_path_factory.mktemp("hf") / "small"
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


def hf_logits(torch, model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def our_logits(model, ids):
    with no_grad():
        return model(ids).numpy()


IDS = np.random.default_rng(0).integers(0, 100, size=(2, 20))


def rewrite_weights(folder: Path, dest: Path, edit) -> Path:
    """Copy ``folder`` to ``dest`` with model.safetensors rewritten as ``edit({name: array})``."""
    from safetensors.numpy import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text((folder / "config.json").read_text())
    save_file(edit(load_file(folder / "model.safetensors")), dest / "model.safetensors", metadata={"format": "pt"})
    return dest


# --- equality with transformers ------------------------------------------------------------------------


def test_transformers_checkpoint_gives_the_same_logits_and_greedy_text(hf_small, torch):
    folder, hf = hf_small
    model = GPTModel.from_pretrained(folder)
    assert model.config == GPTConfig(
        vocab_size=100,
        context_length=32,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.1,
        qkv_bias=True,
        tie_weights=True,
    )
    assert not model.training
    np.testing.assert_allclose(our_logits(model, IDS), hf_logits(torch, hf, IDS), rtol=RTOL, atol=ATOL)

    prompt = IDS[:1, :5]
    reference = torch.tensor(prompt)  # transformers' greedy decoding: argmax, append, repeat
    with torch.no_grad():
        for _ in range(12):
            reference = torch.cat([reference, hf(reference).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    for use_cache in (True, False):
        ours = tl.generate(model, prompt, max_new_tokens=12, temperature=0.0, use_cache=use_cache)
        np.testing.assert_array_equal(ours, reference.numpy())


def test_original_layout_without_prefix_with_mask_buffers_and_lm_head(hf_small, torch, tmp_path):
    """OpenAI's checkpoints on the hub: no "transformer." prefix, attn.bias/masked_bias buffers, and (in
    some) an lm_head.weight copy of wte; all read the same."""
    folder, hf = hf_small

    def to_original(state):
        out = {k.removeprefix("transformer."): v for k, v in state.items()}
        for i in range(SMALL["n_layer"]):
            out[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), dtype=np.float32))
            out[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
        out["lm_head.weight"] = out["wte.weight"].copy()
        return out

    model = GPTModel.from_pretrained(rewrite_weights(folder, tmp_path / "original", to_original))
    np.testing.assert_allclose(our_logits(model, IDS), hf_logits(torch, hf, IDS), rtol=RTOL, atol=ATOL)


def test_untied_transformers_checkpoint(transformers, torch, tmp_path):
    hf = make_hf_model(transformers, torch, seed=1, tie_word_embeddings=False, **SMALL)
    hf.save_pretrained(tmp_path / "untied")
    model = GPTModel.from_pretrained(tmp_path / "untied")
    assert not model.config.tie_weights and model.out_head.weight is not model.tok_emb.weight
    np.testing.assert_allclose(our_logits(model, IDS), hf_logits(torch, hf, IDS), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tie_weights", [False, True])
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_ours_saved_loads_in_transformers_and_back(transformers, torch, tmp_path, qkv_bias, tie_weights):
    tl.manual_seed(3)
    config = GPTConfig(
        vocab_size=100,
        context_length=32,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        qkv_bias=qkv_bias,
        tie_weights=tie_weights,
    )
    model = GPTModel(config).eval()
    for p in model.parameters():  # LayerNorms off their ones/zeros too
        p.data += np.random.default_rng(0).normal(0, 0.05, p.shape).astype(np.float32)
    model.save_pretrained(tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    np.testing.assert_allclose(hf_logits(torch, hf, IDS), our_logits(model, IDS), rtol=RTOL, atol=ATOL)
    if not qkv_bias:  # written as zeros: the same function
        assert not hf.transformer.h[0].attn.c_attn.bias.detach().numpy().any()

    back = GPTModel.from_pretrained(tmp_path / "ours")
    assert back.config == config  # exact: our GPTConfig rides along in config.json
    for (name, p), (name_back, q) in zip(model.named_parameters(), back.named_parameters()):
        assert name == name_back
        np.testing.assert_array_equal(p.data, q.data)


def test_our_run_folder_loads(tmp_path):
    """A training run's folder (config.json from GPTConfig.to_dict, our tensor names) loads too."""
    from safetensors.numpy import save_file

    tl.manual_seed(5)
    model = GPTModel(GPTConfig.preset("tiny", tie_weights=True)).eval()
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    back = GPTModel.from_pretrained(tmp_path)
    assert back.config == model.config
    ids = IDS % 256
    np.testing.assert_array_equal(our_logits(back, ids), our_logits(model, ids))


# --- dtypes, devices, memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_files_load_into_float32(hf_small, torch, tmp_path, half):
    from safetensors.torch import save_file

    folder, hf = hf_small
    dest = tmp_path / half
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    state = {
        k: v.detach().to(getattr(torch, half)).contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"
    }
    save_file(state, dest / "model.safetensors", metadata={"format": "pt"})

    model = GPTModel.from_pretrained(dest)
    assert {p.dtype for p in model.parameters()} == {np.dtype(np.float32)}
    expected = state["transformer.h.1.mlp.c_fc.weight"].float().numpy().T  # exact: widening loses nothing
    np.testing.assert_array_equal(model.trf_blocks[1].ff.layers[0].weight.data, expected)
    np.testing.assert_array_equal(model.tok_emb.weight.data, state["transformer.wte.weight"].float().numpy())
    if half == "float16":
        asked = GPTModel.from_pretrained(dest, dtype=np.float16)
        assert {p.dtype for p in asked.parameters()} == {np.dtype(np.float16)}
        np.testing.assert_array_equal(asked.tok_emb.weight.data, state["transformer.wte.weight"].numpy())


def test_loading_draws_no_random_numbers_and_honours_cpu(hf_small):
    """The model is built without random initialisation (every value is overwritten by the file)."""
    from tinygrad_llm import backend

    folder, _ = hf_small
    before = backend.get_generator("cpu").bit_generator.state
    model = GPTModel.from_pretrained(folder, device="cpu")
    assert backend.get_generator("cpu").bit_generator.state == before
    assert model.device == "cpu"


@pytest.mark.cuda
def test_device_cuda(hf_small, torch):
    if not tl.cuda_available():
        pytest.skip("no CUDA GPU with CuPy")
    folder, hf = hf_small
    model = GPTModel.from_pretrained(folder, device="cuda")
    assert model.device == "cuda"
    np.testing.assert_allclose(our_logits(model, IDS), hf_logits(torch, hf, IDS), rtol=1e-4, atol=1e-4)


# --- bad input: a clear error, nothing half-loaded -------------------------------------------------------


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PretrainedError, match=r"config\.json: missing") as info:
        GPTModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_truncated_safetensors(hf_small, tmp_path):
    folder, _ = hf_small
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PretrainedError, match="truncated") as info:
        GPTModel.from_pretrained(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(info.value)


def test_wrong_shape_names_tensor_and_both_shapes_before_copying_anything(hf_small, tmp_path, monkeypatch):
    folder, _ = hf_small

    def shrink(state):  # the last tensor the loader would copy: nothing may be read before the check
        state["transformer.ln_f.bias"] = state["transformer.ln_f.bias"][:31]
        return state

    bad = rewrite_weights(folder, tmp_path / "bad", shrink)
    reads = []
    original = pretrained.PretrainedSafetensors.array
    monkeypatch.setattr(
        pretrained.PretrainedSafetensors, "array", lambda self, key: reads.append(key) or original(self, key)
    )
    with pytest.raises(PretrainedError) as info:
        GPTModel.from_pretrained(bad)
    message = str(info.value)
    assert "'transformer.ln_f.bias'" in message and "(31,)" in message and "(32,)" in message
    assert str(bad / "model.safetensors") in message
    assert reads == []  # checked from the header alone: no tensor was copied into a model


def test_wrong_tensor_name(hf_small, tmp_path):
    folder, _ = hf_small

    def rename(state):
        state["transformer.h.1.mlp.c_fc.weights"] = state.pop("transformer.h.1.mlp.c_fc.weight")
        return state

    with pytest.raises(PretrainedError, match=r"missing tensor\(s\) 'h\.1\.mlp\.c_fc\.weight'"):
        GPTModel.from_pretrained(rewrite_weights(folder, tmp_path / "renamed", rename))

    def extra(state):
        state["transformer.h.0.attn.q_proj.weight"] = state["transformer.h.0.attn.c_proj.weight"]
        return state

    with pytest.raises(PretrainedError, match=r"unexpected tensor\(s\) 'h\.0\.attn\.q_proj\.weight'"):
        GPTModel.from_pretrained(rewrite_weights(folder, tmp_path / "extra", extra))


@pytest.mark.parametrize(
    "field, value",
    [
        ("activation_function", "relu"),
        ("layer_norm_epsilon", 1e-6),
        ("n_inner", 100),
        ("scale_attn_weights", False),
        ("scale_attn_by_inverse_layer_idx", True),
        ("model_type", "llama"),
    ],
)
def test_unrepresentable_config(hf_small, tmp_path, field, value):
    folder, _ = hf_small
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(PretrainedError, match=f"config.json: {field} = {value!r}"):
        GPTModel.from_pretrained(tmp_path)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(PretrainedError, match="gpt2, gpt2-medium, gpt2-large, gpt2-xl"):
        GPTModel.from_pretrained("gpt3-xxl")


def test_no_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(PretrainedError) as info:
        GPTModel.from_pretrained("gpt2")
    message = str(info.value)
    assert "no network in this test" in message and "TINYGRAD_LLM_CACHE" in message
    assert "https://huggingface.co/openai-community/gpt2" in message and "pass their folder" in message


def test_unreachable_server(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(PretrainedError, match=f"cannot download gpt2-xl .*127.0.0.1:{port}"):
        GPTModel.from_pretrained("gpt2-xl")
    assert not (tmp_path / "cache" / "models" / "gpt2-xl" / "model.safetensors").exists()


# --- downloads: once, checked ---------------------------------------------------------------------------


@pytest.fixture
def hub(hf_small, tmp_path, monkeypatch):
    """A local stand-in for the hub serving the small model as "gpt2" at a pinned revision; yields the
    list of requested paths."""
    folder, _ = hf_small
    root = tmp_path / "hub"
    served = root / "org" / "tiny" / "resolve" / "rev"
    served.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (served / name).write_bytes((folder / name).read_bytes())
    with serve_folder(root) as (url, requests):
        files = {
            name: ((served / name).stat().st_size, sha256_of(served / name))
            for name in ("config.json", "model.safetensors")
        }
        monkeypatch.setitem(pretrained.HF_MODELS, "gpt2", ("org/tiny", "rev", files))
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
        yield requests


def test_a_name_is_downloaded_once_and_checked(hub, hf_small, torch, tmp_path):
    _, hf = hf_small
    model = GPTModel.from_pretrained("gpt2")
    assert sorted(hub) == ["/org/tiny/resolve/rev/config.json", "/org/tiny/resolve/rev/model.safetensors"]
    np.testing.assert_allclose(our_logits(model, IDS), hf_logits(torch, hf, IDS), rtol=RTOL, atol=ATOL)
    assert (tmp_path / "cache" / "models" / "gpt2" / "model.safetensors").is_file()
    GPTModel.from_pretrained("gpt2")
    GPTModel.from_pretrained("gpt2-small")  # aliases of the same files
    GPTModel.from_pretrained("openai-community/gpt2")
    assert len(hub) == 2  # never downloaded again


def test_a_download_with_the_wrong_hash_is_refused(hub, tmp_path, monkeypatch):
    repo, revision, files = pretrained.HF_MODELS["gpt2"]
    size, _ = files["model.safetensors"]
    wrong = {**files, "model.safetensors": (size, "0" * 64)}
    monkeypatch.setitem(pretrained.HF_MODELS, "gpt2", (repo, revision, wrong))
    with pytest.raises(PretrainedError, match="expected 0000"):
        GPTModel.from_pretrained("gpt2")
    folder = tmp_path / "cache" / "models" / "gpt2"
    assert not (folder / "model.safetensors").exists() and not (folder / "model.safetensors.part").exists()


# --- the command line -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_gpt2_vocab(transformers, torch, tmp_path_factory):
    """A tiny model with GPT-2's 50,257-token vocabulary, saved by transformers."""
    model = make_hf_model(transformers, torch, seed=2, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    folder = tmp_path_factory.mktemp("hf") / "gpt2-vocab"
    model.save_pretrained(folder)
    return folder, model


def test_cli_generate_from_a_hugging_face_folder(hf_gpt2_vocab, shared_data, torch, capsys):
    folder, hf = hf_gpt2_vocab
    tokenizer = tl.get_tokenizer("gpt2")
    prompt = "Every effort moves you"
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, hf(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = prompt + tokenizer.decode(ids[0, -6:].tolist())
    assert (
        main(
            ["generate", "--checkpoint", str(folder), "--prompt", prompt, "--max-new-tokens", "6", "--temperature", "0"]
        )
        == 0
    )
    assert capsys.readouterr().out == expected + "\n"


def test_cli_train_init_from_a_hugging_face_folder(hf_gpt2_vocab, shared_data, tmp_path, capsys):
    from safetensors.numpy import load_file

    folder, hf = hf_gpt2_vocab
    (tmp_path / "story.txt").write_text("Every effort moves you closer to the end of the story. " * 40)
    args = [
        "train",
        "--data",
        str(tmp_path / "story.txt"),
        "--init-from",
        str(folder),
        "--max-steps",
        "1",
        "--context-length",
        "16",
        "--batch-size",
        "2",
        "--eval-iters",
        "1",
        "--eval-interval",
        "1",
        "--sample-tokens",
        "3",
        "--warmup-steps",
        "0",
        "--lr",
        "1e-4",
    ]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert (config["vocab_size"], config["emb_dim"], config["n_layers"], config["qkv_bias"]) == (50257, 16, 1, True)
    assert json.loads((run / "tokenizer.json").read_text())["type"] == "gpt2"
    # one AdamW step moves each weight by about lr: the run started from the file's weights, not a random init
    trained = load_file(run / "model.safetensors")["tok_emb.weight"]
    start = hf.transformer.wte.weight.detach().numpy()
    assert 0 < np.abs(trained - start).max() < 1e-3

    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "char"), "--tokenizer", "char"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tokenizer gpt2" in err[0]


# --- the book's chapter-5 params dict ----------------------------------------------------------------------


def test_load_weights_into_gpt_from_the_books_params(hf_small, torch):
    """params as the book's download_and_load_gpt2 gives them (here built from a Hugging Face folder: the
    same (in, out) arrays), loaded into the book's untied GPT: transformers' logits."""
    from tinygrad_llm.model import load_weights_into_gpt, params_from_hf

    folder, hf = hf_small
    params = params_from_hf(folder)
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (32, 96) and len(params["blocks"]) == 2
    gpt = GPTModel(
        {
            "vocab_size": 100,
            "context_length": 32,
            "emb_dim": 32,
            "n_heads": 4,
            "n_layers": 2,
            "drop_rate": 0.0,
            "qkv_bias": True,
        }
    )
    assert load_weights_into_gpt(gpt, params) is gpt
    q_w, k_w, v_w = np.split(params["blocks"][1]["attn"]["c_attn"]["w"], 3, axis=-1)  # the book's split
    np.testing.assert_array_equal(gpt.trf_blocks[1].att.W_qkv.weight.data, np.concatenate([q_w.T, k_w.T, v_w.T]))
    gpt.eval()
    np.testing.assert_allclose(our_logits(gpt, IDS), hf_logits(torch, hf, IDS), rtol=RTOL, atol=ATOL)
    no_bias = GPTModel({"vocab_size": 100, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2})
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_weights_into_gpt(no_bias, params)
    params["blocks"][0]["mlp"]["c_fc"]["w"] = params["blocks"][0]["mlp"]["c_fc"]["w"][:, :5]
    with pytest.raises(ValueError, match=r"blocks\[0\]\.mlp\.c_fc\.w"):
        load_weights_into_gpt(gpt, params)
