"""Hashed n-gram embeddings (nn/ngram.py, NgramGPTModel in model/ngram_gpt.py): the buckets depend on the n-gram
alone, the model stays causal, a KV cache and left padding give what the whole sequence alone gives, the gradient is
each bucket's summed upstream rows, and the tables go through the model files and back."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.generate import generate, pad_prompts
from tinygrad_llm.model import GPTConfig, GPTModel, NgramGPTConfig, NgramGPTModel
from tinygrad_llm.model.pretrained import PretrainedError
from tinygrad_llm.nn.ngram import BOUNDARY, HashedNGramEmbedding, ngram_buckets

PROMPTS = [[5, 9, 2, 7, 1, 3, 8], [4], [6, 6, 1], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]


@pytest.fixture(scope="module")
def model():
    tl.manual_seed(5)
    config = NgramGPTConfig(
        vocab_size=13,
        context_length=12,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        ngram_sizes=(2, 3),
        ngram_buckets=17,
    )
    return NgramGPTModel(config).eval()


def test_a_bucket_depends_on_its_ngram_alone():
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6], [0, 3, 1, 4, 2, 7, 1, 8]])
    for n in (2, 3, 4):
        rows = ngram_buckets(ids, n, buckets=1000)
        assert rows.shape == ids.shape and rows.min() >= 0 and rows.max() < 1000
        # "3 1 4" ends at position 2 of row 0 and position 3 of row 1: one n-gram, one row, anywhere
        if n <= 3:
            assert rows[0, 2] == rows[1, 3]
        # a later token never changes an earlier bucket; a token n or more back never changes one either
        changed = ids.copy()
        changed[:, 5] = 12
        other = ngram_buckets(changed, n, buckets=1000)
        assert np.array_equal(other[:, :5], rows[:, :5]) and np.array_equal(other[:, 5 + n :], rows[:, 5 + n :])
        assert not np.array_equal(other[:, 5 : 5 + n], rows[:, 5 : 5 + n])


def test_positions_before_the_start_read_as_the_boundary_or_the_given_context():
    ids = np.array([[7, 8, 9]])
    whole = ngram_buckets(np.array([[5, 6, 7, 8, 9]]), 3, buckets=4099)
    assert np.array_equal(ngram_buckets(ids, 3, 4099, context=np.array([[5, 6]])), whole[:, 2:])
    assert np.array_equal(ngram_buckets(ids, 3, 4099, context=np.array([[1, 2, 5, 6]])), whole[:, 2:])  # the tail
    alone = ngram_buckets(ids, 3, 4099)
    assert np.array_equal(alone, ngram_buckets(ids, 3, 4099, context=np.full((1, 2), BOUNDARY)))
    assert not np.array_equal(alone[:, :2], whole[:, 2:4])


def test_hashing_spreads_ngrams_over_the_buckets():
    """Every byte bigram (65,536 of them) into 2,048 buckets: each bucket near its share of 32."""
    a, b = np.meshgrid(np.arange(256), np.arange(256))
    ids = np.stack([a.ravel(), b.ravel()], axis=1)  # (65536, 2): one bigram per row, at position 1
    counts = np.bincount(ngram_buckets(ids, 2, 2048)[:, 1], minlength=2048)
    assert counts.min() >= 10 and counts.max() <= 60, (counts.min(), counts.max())


def test_embedding_sums_one_row_per_size_and_its_gradient_sums_the_upstream_rows():
    tl.manual_seed(1)
    layer = HashedNGramEmbedding((2, 3), buckets=7, embedding_dim=5, dtype=np.float64)
    ids = np.array([[1, 2, 1, 2, 3], [2, 1, 2, 3, 3]])
    out = layer(ids)
    want = sum(table.weight.data[ngram_buckets(ids, n, 7)] for n, table in zip((2, 3), layer.tables))
    np.testing.assert_array_equal(out.data, want)
    upstream = np.random.default_rng(0).standard_normal(out.shape)
    (out * tl.Tensor(upstream)).sum().backward()
    for n, table in zip((2, 3), layer.tables):
        expected = np.zeros_like(table.weight.data)
        np.add.at(expected, ngram_buckets(ids, n, 7), upstream)  # dL/dtable[r] = sum of the rows hashed to r
        np.testing.assert_allclose(table.weight.grad, expected, rtol=1e-12, atol=1e-12)


def test_model_gradcheck_through_the_tables_in_float64():
    tl.manual_seed(2)
    config = NgramGPTConfig(
        vocab_size=11,
        context_length=6,
        emb_dim=8,
        n_heads=2,
        n_layers=1,
        drop_rate=0.0,
        ngram_sizes=(2,),
        ngram_buckets=5,
    )
    model = NgramGPTModel(config)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    ids = np.array([[1, 4, 1, 4, 2, 3]])
    tables = model.ngram_emb.tables

    def loss(weight):  # the model's loss as a function of its n-gram table alone
        saved = tables[0].weight
        tables[0].weight = weight
        try:
            return (model(ids) ** 2).mean()
        finally:
            tables[0].weight = saved

    assert tl.gradcheck(loss, [tl.Tensor(tables[0].weight.data.copy(), requires_grad=True)])


def test_model_is_causal_and_counts_its_tables(model):
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    later = ids.copy()
    later[0, 4] = 9
    with tl.no_grad():
        np.testing.assert_array_equal(model(ids).data[:, :4], model(later).data[:, :4])
    assert model.num_parameters() == model.config.num_parameters()
    assert sum(t.weight.size for t in model.ngram_emb.tables) == 2 * 17 * 32
    assert not hasattr(GPTModel(GPTConfig.preset("tiny")), "ngram_emb")  # GPT-2 has none


@pytest.mark.parametrize("use_cache", [True, False])
def test_cached_and_padded_generation_equal_each_prompt_alone(model, use_cache):
    ids, mask = pad_prompts(PROMPTS, pad_id=0)
    new = 8  # past the context of 12: the window slides, the cache refills
    out = generate(model, ids, new, attention_mask=mask, use_cache=use_cache, context_size=12)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(model, np.array([prompt]), new, use_cache=False, context_size=12)
        assert out[row, -new:].tolist() == alone[0, -new:].tolist(), row


def test_cache_carries_the_ngrams_across_calls(model):
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    with tl.no_grad():
        whole = model(ids).data
        cache = model.new_cache()
        parts = [model(ids[:, :3], cache=cache).data] + [
            model(ids[:, i : i + 1], cache=cache).data for i in range(3, 8)
        ]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-5, atol=1e-6)


def test_config_checks_and_round_trip():
    config = NgramGPTConfig(vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=1, ngram_sizes=[2, 4])
    assert config.ngram_sizes == (2, 4) and NgramGPTConfig.from_json(config.to_json()) == config
    for bad in ((1, 2), (2, 2), (2.0,), "23"):
        with pytest.raises(ValueError, match="ngram_sizes"):
            NgramGPTConfig(ngram_sizes=bad)
    with pytest.raises(ValueError, match="ngram_buckets"):
        NgramGPTConfig(ngram_sizes=(2,), ngram_buckets=0)


def test_model_files_round_trip_and_hugging_face_layout_is_refused(model, tmp_path):
    from tinygrad_llm.finetune.classifier import add_classification_head
    from tinygrad_llm.finetune.io import load_classifier, save_finetuned
    from tinygrad_llm.tokenizer import get_tokenizer

    tl.manual_seed(4)
    classifier = add_classification_head(NgramGPTModel(model.config), 2).eval()
    save_finetuned(tmp_path / "clf", classifier, get_tokenizer("byte"), {"task": "classification", "num_classes": 2})
    loaded, _, _ = load_classifier(tmp_path / "clf")
    ids = np.array([[1, 2, 3, 4, 5]])
    with tl.no_grad():
        np.testing.assert_array_equal(loaded(ids).data, classifier(ids).data)
    with pytest.raises(PretrainedError, match="n-gram embeddings"):
        model.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# config.json exactly as the code before NgramGPTModel wrote it (the n-gram fields in GPTConfig's own dict)
OLD_CONFIG = {
    "vocab_size": 257,
    "context_length": 24,
    "emb_dim": 16,
    "n_heads": 4,
    "n_layers": 1,
    "drop_rate": 0.0,
    "qkv_bias": False,
    "tie_weights": False,
    "ngram_sizes": [2, 3],
    "ngram_buckets": 31,
}


def test_a_classifier_folder_of_the_old_layout_loads_into_the_ngram_model(tmp_path, capsys):
    """A run folder written before the split (GPTConfig with ngram_sizes) loads as an NgramGPTModel with its
    tables, answers as the model that wrote it, and classify --checkpoint reads it; the new code writes the
    same config.json."""
    import json

    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune.classifier import add_classification_head
    from tinygrad_llm.finetune.io import load_classifier, save_finetuned
    from tinygrad_llm.tokenizer import get_tokenizer

    tl.manual_seed(9)
    classifier = add_classification_head(NgramGPTModel(NgramGPTConfig(**OLD_CONFIG)), 2).eval()
    save_finetuned(
        tmp_path / "old",
        classifier,
        get_tokenizer("byte"),
        {
            "task": "classification",
            "num_classes": 2,
            "class_names": ["not spam", "spam"],
            "max_length": 24,
            "pad_token_id": 256,
        },
    )
    assert json.loads((tmp_path / "old" / "config.json").read_text()) == OLD_CONFIG
    (tmp_path / "old" / "config.json").write_text(json.dumps(OLD_CONFIG, indent=2))
    loaded, _, _ = load_classifier(tmp_path / "old")
    assert isinstance(loaded, NgramGPTModel) and loaded.config.ngram_sizes == (2, 3)
    ids = np.array([[87, 73, 78, 32, 99, 97, 115, 104]])
    with tl.no_grad():
        np.testing.assert_array_equal(loaded(ids).data, classifier(ids).data)
    assert main(["classify", "--checkpoint", str(tmp_path / "old"), "--text", "WIN cash now"]) == 0
    assert "spam" in capsys.readouterr().out
    # a plain GPT's config with n-gram tables in the file (or the reverse) is named before anything is built
    plain = {k: v for k, v in OLD_CONFIG.items() if not k.startswith("ngram")}
    (tmp_path / "old" / "config.json").write_text(json.dumps(plain))
    with pytest.raises(ValueError, match="n-gram table"):
        load_classifier(tmp_path / "old")


def test_the_book_gpt_refuses_an_ngram_config_and_its_cache_keeps_no_ids():
    config = NgramGPTConfig(**OLD_CONFIG)
    with pytest.raises(TypeError, match="expected a GPTConfig"):
        GPTModel(config)  # it would silently drop the tables
    assert isinstance(GPTModel(GPTConfig.preset("tiny")).new_cache(), tl.model.KVCache)
    assert not hasattr(GPTModel(GPTConfig.preset("tiny")).new_cache(), "recent_ids")
    assert NgramGPTModel(OLD_CONFIG).new_cache().recent_ids is None
    assert NgramGPTModel(OLD_CONFIG).num_parameters() == config.num_parameters()


def test_a_seed_draws_the_model_the_recipe_always_drew():
    """NgramGPTModel draws token, position, n-gram tables, blocks, head in that order, as GPTModel did when it
    held the tables: the sums below were computed by that code (commit f891221) for seed 0. Another order (the
    tables drawn after the blocks, say) changes every spam run's weights."""
    tl.manual_seed(0)
    model = NgramGPTModel(
        NgramGPTConfig(
            vocab_size=13, context_length=8, emb_dim=8, n_heads=2, n_layers=1, ngram_sizes=(2, 3), ngram_buckets=5
        )
    )
    params = dict(model.named_parameters())
    assert list(params)[:4] == [
        "tok_emb.weight",
        "pos_emb.weight",
        "ngram_emb.tables.0.weight",
        "ngram_emb.tables.1.weight",
    ]
    sums = {
        name: float(params[name].data.astype(np.float64).sum())
        for name in ("ngram_emb.tables.1.weight", "trf_blocks.0.att.W_qkv.weight", "out_head.weight")
    }
    assert sums == {
        "ngram_emb.tables.1.weight": 7.400962712243199,
        "trf_blocks.0.att.W_qkv.weight": 5.829827996305539,
        "out_head.weight": -1.3976184998173267,
    }
