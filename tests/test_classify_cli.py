"""``tinygrad-llm classify`` on every classifier architecture finetune-classifier writes (the book's GPT, the
from-scratch GPT with hashed n-grams, BERT): the label it prints is the one the model predicts, computed here
from the saved weights by hand, with its probabilities; a tokenizer that does not belong to the model and an
empty --text are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.cli import main
from tinygrad_llm.finetune.bert_classifier import BertSpamDataset
from tinygrad_llm.finetune.io import load_classifier
from tinygrad_llm.finetune.spam_data import SpamDataset
from tinygrad_llm.model import BertForSequenceClassification, NgramGPTModel

TEXTS = ["WIN 7 cash now, call 09007", "see you at 3 tonight", "free prize!!", "ok"]
SIZES = ["--preset", "tiny", "--emb-dim", "16", "--n-layers", "1", "--max-length", "24", "--epochs", "2"]
ARCHS = {
    "gpt": ["--ngram-embeddings", "none"],
    "ngram-gpt": ["--ngram-buckets", "64"],
    "bert": ["--arch", "bert"],
}


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify")
    data = folder / "SMSSpamCollection"
    data.write_text("".join(f"ham\tsee you at {i} tonight\nspam\tWIN {i} cash now, call 0900{i}\n" for i in range(40)))
    runs = {}
    for arch, flags in ARCHS.items():
        runs[arch] = folder / arch
        assert main(["finetune-classifier", "--data", str(data), *SIZES, *flags, "--out", str(runs[arch])]) == 0
    return runs


def _predicted_by_hand(folder, text):
    """The class probabilities of ``text``, from the saved model, the input built as training built it."""
    model, tokenizer, meta = load_classifier(folder)
    if isinstance(model, BertForSequenceClassification):
        ids = BertSpamDataset([text], [0], tokenizer, max_length=meta["max_length"]).input_ids
        with tl.no_grad():
            logits = model(ids).data[0]  # (classes,): [CLS]'s
    else:
        ids = SpamDataset([text], [0], tokenizer, max_length=meta["max_length"]).input_ids
        with tl.no_grad():
            logits = model(ids).data[0, -1]  # the last position's
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum(), tuple(meta["class_names"]), model


@pytest.mark.parametrize("arch", list(ARCHS))
def test_classify_prints_the_label_the_model_predicts(classifiers, arch, capsys):
    folder = classifiers[arch]
    assert main(["classify", "--checkpoint", str(folder), *[a for t in TEXTS for a in ("--text", t)]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main(["classify", "--checkpoint", str(folder), "--probs", "--text", TEXTS[0]]) == 0
    with_probs = capsys.readouterr().out.split()
    expected = []
    for text in TEXTS:
        probs, names, model = _predicted_by_hand(folder, text)
        expected.append(f"{names[int(probs.argmax())]}\t{text}")
    assert lines == expected
    assert {"gpt": type(model).__name__ == "GPTModel", "ngram-gpt": isinstance(model, NgramGPTModel)}.get(
        arch, isinstance(model, BertForSequenceClassification)
    )
    probs, names, _ = _predicted_by_hand(folder, TEXTS[0])
    order = probs.argsort()[::-1]
    assert with_probs[0] == names[order[0]]  # the label, then every class with its probability, likeliest first
    assert with_probs[1::2] == [names[k] for k in order]
    np.testing.assert_allclose([float(p) for p in with_probs[2::2]], probs[order], atol=5e-4)


def test_classify_refuses_a_tokenizer_that_is_not_the_models(classifiers, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(classifiers["gpt"], folder)  # a byte classifier ...
    tl.get_tokenizer("gpt2").save(folder)  # ... given GPT-2's tokenizer.json
    assert main(["classify", "--checkpoint", str(folder), "--text", "WIN cash"]) == 1
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "50257" in err and "257" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_ensemble_of_an_older_version_is_refused_with_its_file_named(classifiers, tmp_path, capsys):
    """A run folder of the removed --ensemble (finetune.json: "ensemble_size": 3) is refused with a message that
    names the file and says ensembles are no longer written, from the library and from classify (no traceback)."""
    folder = tmp_path / "ensemble"
    shutil.copytree(classifiers["gpt"], folder)
    meta_file = folder / "finetune.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "ensemble_size": 3}))
    with pytest.raises(ValueError, match="ensemble_size is 3") as refused:
        load_classifier(folder)
    assert str(meta_file) in str(refused.value) and "no longer writes" in str(refused.value)
    assert main(["classify", "--checkpoint", str(folder), "--text", "WIN cash"]) == 1
    err = capsys.readouterr().err
    assert str(meta_file) in err and "no longer writes" in err and "Traceback" not in err


def test_classify_refuses_an_empty_text(classifiers, capsys):
    for text in ("", "   "):
        assert main(["classify", "--checkpoint", str(classifiers["gpt"]), "--text", "ok", "--text", text]) == 1
        captured = capsys.readouterr()
        assert "--text is empty" in captured.err and captured.out == ""


def test_a_max_length_past_a_berts_positions_is_refused(tmp_path, capsys):
    """finetune-classifier --arch bert --init-from a BERT of 32 positions: --max-length 33 is refused before
    training, not cut to 32 in silence."""
    from tinygrad_llm.model import BertConfig, BertForMaskedLM
    from tinygrad_llm.tokenizer import with_bert_tokens

    tokenizer = with_bert_tokens(tl.get_tokenizer("byte"))
    config = BertConfig(
        vocab_size=tokenizer.n_vocab,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        pad_token_id=tokenizer.pad_id,
    )
    BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    tokenizer.save(tmp_path / "bert")
    data = tmp_path / "SMSSpamCollection"
    data.write_text("".join(f"ham\tsee you at {i}\nspam\tWIN {i} cash\n" for i in range(20)))
    args = ["finetune-classifier", "--arch", "bert", "--init-from", str(tmp_path / "bert"), "--data", str(data)]
    assert main([*args, "--max-length", "33", "--out", str(tmp_path / "clf")]) == 1
    assert "--max-length 33 is longer than the BERT's positions of 32 tokens" in capsys.readouterr().err
    assert not (tmp_path / "clf").exists()
