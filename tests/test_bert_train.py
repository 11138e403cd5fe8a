"""The encoder trained and fine-tuned from the command line: ``train --arch bert`` (masked-LM pretraining, the
GPT's run folder, checkpoints, exact resume) and the run folder loading as a Hugging Face-layout BERT."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tinygrad_llm.cli import main
from tinygrad_llm.model import BertForMaskedLM, BertForSequenceClassification
from tinygrad_llm.tokenizer import load_tokenizer

TINY_BERT = ["--arch", "bert", "--preset", "tiny", "--n-layers", "1", "--emb-dim", "32", "--context-length", "16",
             "--batch-size", "4", "--eval-iters", "2", "--warmup-steps", "0", "--lr", "3e-3", "--min-lr", "3e-3",
             "--dropout", "0.1", "--eval-interval", "2"]


def losses(run):
    records = map(json.loads, (run / "log.jsonl").read_text().splitlines())
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in records]


def test_masked_lm_trains_resumes_exactly_and_loads_as_bert(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 40)
    common = ["--data", str(text), *TINY_BERT]
    assert main(["train", "--out", str(tmp_path / "straight"), "--max-steps", "4", *common]) == 0
    err = capsys.readouterr()
    assert "filling in masked tokens" in err.out and "masked tokens right" in err.out
    assert main(["train", "--out", str(tmp_path / "split"), "--max-steps", "2", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--max-steps", "4", "--resume"]) == 0
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")  # the masks too: the same batches
    first = losses(tmp_path / "straight")
    assert [step for step, _, _ in first] == [2, 4] and all(np.isfinite([t for _, t, _ in first]))

    run = tmp_path / "straight"
    tokenizer = load_tokenizer(run)
    assert tokenizer.mask_id == tokenizer.n_vocab - 1  # [PAD] [CLS] [SEP] [MASK] after the characters
    config = json.loads((run / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == tokenizer.n_vocab
    mlm = BertForMaskedLM.from_pretrained(run)  # our run folder, read by the Hugging Face-layout loader
    ids = np.asarray([[tokenizer.cls_id, *tokenizer.encode("the cat"), tokenizer.sep_id]])
    assert mlm(ids).shape == (1, ids.shape[1], tokenizer.n_vocab)
    with pytest.warns(UserWarning, match="pooler.* classifier"):
        clf = BertForSequenceClassification.from_pretrained(run)  # the encoder, a new pooler and classifier
    np.testing.assert_array_equal(clf.bert.embeddings.word_embeddings.weight.data,
                                  mlm.bert.embeddings.word_embeddings.weight.data)
