"""The encoder trained and fine-tuned from the command line: ``train --arch bert`` (masked-LM pretraining, the
GPT's run folder, checkpoints, exact resume; and that it learns what only the context tells) and the run folder
loading as a Hugging Face-layout BERT."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinygrad_llm import functional as F
from tinygrad_llm.cli import main
from tinygrad_llm.data.mlm import IGNORE_INDEX
from tinygrad_llm.model import BertForMaskedLM, BertForSequenceClassification
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.tokenizer import load_tokenizer

TINY_BERT = [
    "--arch",
    "bert",
    "--preset",
    "tiny",
    "--n-layers",
    "1",
    "--emb-dim",
    "32",
    "--context-length",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "2",
    "--warmup-steps",
    "0",
    "--lr",
    "3e-3",
    "--min-lr",
    "3e-3",
    "--dropout",
    "0.1",
    "--eval-interval",
    "2",
]


def losses(run):
    records = map(json.loads, (run / "log.jsonl").read_text().splitlines())
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in records]


@pytest.mark.slow
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
    np.testing.assert_array_equal(
        clf.bert.embeddings.word_embeddings.weight.data, mlm.bert.embeddings.word_embeddings.weight.data
    )


LETTERS = "abcdefghijklmnop"
RUN = 8  # each letter repeated 8 times: a window of 16 letters is two runs


def runs_of_letters(n_runs: int, rng: np.random.Generator) -> str:
    """Random letters, each written RUN times ("ccccccccffffffff..."): every letter is as common as any other,
    so a model of letter frequencies alone learns nothing, while each letter's neighbours give it away."""
    return "".join(letter * RUN for letter in rng.choice(list(LETTERS), size=n_runs))


def test_masked_lm_learns_from_the_context_what_letter_frequencies_cannot_tell(tmp_path):
    """``train --arch bert`` on runs of letters: the masked-token loss must fall far below the letters'
    entropy (what the best unigram model scores) and the masked letters come back right.

    A window is [CLS] + two runs of 8 + [SEP] (context 18; the training windows start every 8 letters, so
    on a run's first letter). The entropy is about ln 16 = 2.77 nats; a model that knew only which letters the
    window holds, not where, would score ln 2 = 0.69 (a quarter of it); one that reads its own run scores near
    0. Settings chosen on the training loss: 64 wide, 2 heads, lr 3e-3, 200 steps (loss about 0.04-0.07 over
    three seeds; at 32 wide it stayed above 1 at 200 steps). The check is on fresh runs the model never saw.
    """
    rng = np.random.default_rng(0)
    text = tmp_path / "runs.txt"
    text.write_text(runs_of_letters(1000, rng))
    run = tmp_path / "mlm"
    settings = ["--arch", "bert", "--preset", "tiny", "--n-layers", "1", "--emb-dim", "64", "--n-heads", "2"]
    settings += ["--context-length", str(2 * RUN + 2), "--batch-size", "16", "--max-steps", "200", "--lr", "3e-3"]
    settings += ["--warmup-steps", "20", "--eval-interval", "200", "--eval-iters", "2", "--dropout", "0"]
    assert main(["train", "--data", str(text), "--out", str(run), *settings]) == 0

    _, counts = np.unique(list(text.read_text()), return_counts=True)
    frequency = counts / counts.sum()
    unigram_entropy = float(-(frequency * np.log(frequency)).sum())  # nats, as the cross-entropy
    tokenizer = load_tokenizer(run)
    model = BertForMaskedLM.from_pretrained(run)  # the run's model, in eval mode
    windows = np.asarray(tokenizer.encode(runs_of_letters(400, np.random.default_rng(1)))).reshape(-1, 2 * RUN)
    ids = np.concatenate(
        [np.full((len(windows), 1), tokenizer.cls_id), windows, np.full((len(windows), 1), tokenizer.sep_id)], axis=1
    )
    chosen = np.random.default_rng(2).random(ids.shape) < 0.15  # 15% of the letters, each shown as [MASK]
    chosen[:, [0, -1]] = False
    inputs, labels = np.where(chosen, tokenizer.mask_id, ids), np.where(chosen, ids, IGNORE_INDEX)
    with no_grad():
        logits = model(inputs)  # (B, T, V)
    loss = F.cross_entropy(logits, labels).item()  # the mean over the masked positions only
    accuracy = float((logits.data.argmax(axis=-1)[chosen] == labels[chosen]).mean())
    most_frequent_rate = np.bincount(labels[chosen]).max() / chosen.sum()
    assert unigram_entropy > 2.7 and most_frequent_rate < 0.1  # the data: no letter to bet on
    assert loss < unigram_entropy / 4, (loss, unigram_entropy)
    assert accuracy > 0.9, (accuracy, most_frequent_rate)


def test_finetune_classifier_bert_from_scratch_and_from_a_pretrained_run(tmp_path):
    """--arch bert from scratch and from a 'train --arch bert' run; the saved classifier reloads and scores
    the test split exactly as metrics.json says."""
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.finetune.bert_classifier import BertSpamDataset
    from tinygrad_llm.finetune.io import load_classifier
    from tinygrad_llm.finetune.spam_data import create_balanced_dataset, random_split, read_sms_spam

    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "log"]
    lines = [
        ("spam" if i % 3 == 0 else "ham") + "\t" + " ".join(rng.choice(words, 5)) + (" dog" if i % 3 == 0 else "")
        for i in range(60)
    ]
    sms = tmp_path / "SMSSpamCollection"
    sms.write_text("\n".join(lines) + "\n")
    text = tmp_path / "t.txt"
    text.write_text(" ".join(rng.choice(words, 400)))
    assert main(["train", "--data", str(text), "--out", str(tmp_path / "mlm"), "--max-steps", "2", *TINY_BERT]) == 0
    common = [
        "finetune-classifier",
        "--arch",
        "bert",
        "--data",
        str(sms),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--eval-freq",
        "5",
        "--eval-iter",
        "1",
        "--seed",
        "1",
    ]
    assert main([*common, "--init-from", str(tmp_path / "mlm"), "--out", str(tmp_path / "clf")]) == 0
    assert (
        main(
            [
                *common,
                "--preset",
                "tiny",
                "--tokenizer",
                "byte",
                "--emb-dim",
                "16",
                "--n-layers",
                "1",
                "--out",
                str(tmp_path / "scratch"),
            ]
        )
        == 0
    )
    for run in ("clf", "scratch"):
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        model, tokenizer, meta = load_classifier(tmp_path / run)
        assert isinstance(model, BertForSequenceClassification) and meta["pad_token_id"] == tokenizer.pad_id
        texts, labels = create_balanced_dataset(*read_sms_spam(sms), seed=1)
        test = BertSpamDataset(
            *random_split(texts, labels, 0.7, 0.1, seed=1)["test"], tokenizer, max_length=meta["max_length"]
        )
        assert (
            C.calc_accuracy_loader(DataLoader(test, batch_size=4, drop_last=False), model) == metrics["test_accuracy"]
        )


def test_generate_on_a_bert_run_says_what_it_is(tmp_path, capsys):
    from tinygrad_llm.model import BertConfig

    folder = tmp_path / "bert"
    BertForMaskedLM(
        BertConfig(
            vocab_size=12,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=8,
            max_position_embeddings=8,
        )
    ).save_pretrained(folder)
    assert main(["generate", "--checkpoint", str(folder), "--prompt", "a"]) == 1
    assert "holds a BERT" in capsys.readouterr().err
