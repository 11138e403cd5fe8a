"""Chapter 6: the SMS data (reading, errors, balance, split), SpamDataset, freezing recipes, the classifier
trained on the real data through the command line, and bad input leaving no output behind."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import GPTConfig, GPTModel
from tinygrad_llm.files import safe_extract_zip
from tinygrad_llm.finetune import (
    SpamDataset,
    add_classification_head,
    classify_text,
    create_balanced_dataset,
    random_split,
    read_sms_spam,
    set_trainable,
)
from tinygrad_llm.finetune.io import load_classifier
from tinygrad_llm.finetune.spam_data import SPAM_FILE_SHA256
from tinygrad_llm.optim import AdamW

TINY = GPTConfig(vocab_size=300, context_length=16, emb_dim=16, n_heads=2, n_layers=3, drop_rate=0.0)


def test_read_the_real_file_balance_and_split(shared_data):
    from tinygrad_llm.files import sha256_of

    path = shared_data / "sms_spam_collection" / "SMSSpamCollection"
    assert sha256_of(path) == SPAM_FILE_SHA256
    texts, labels = read_sms_spam(path)
    assert len(texts) == 5574 and labels.count(1) == 747 and labels.count(0) == 4827
    texts, labels = create_balanced_dataset(texts, labels, seed=123)
    assert labels.count(0) == labels.count(1) == 747
    splits = random_split(texts, labels, 0.7, 0.1, seed=123)
    sizes = {name: len(part[0]) for name, part in splits.items()}
    assert sizes == {"train": 1045, "validation": 149, "test": 300}  # the book's split sizes
    again = random_split(texts, labels, 0.7, 0.1, seed=123)
    assert again["test"] == splits["test"]
    from collections import Counter

    together = Counter(pair for part in splits.values() for pair in zip(*part))
    assert together == Counter(zip(texts, labels))  # a partition: every message once, with its label


def test_bad_spam_lines_name_file_and_line(tmp_path):
    no_tab = tmp_path / "notab.txt"
    no_tab.write_text("ham\tok then\nspam\tWIN now\nthis line has no tab\n")
    with pytest.raises(ValueError, match=r"notab.txt, line 3: .*no tab"):
        read_sms_spam(no_tab)
    bad_label = tmp_path / "label.txt"
    bad_label.write_text("ham\tok\nmaybe\twho knows\n")
    with pytest.raises(ValueError, match=r"label.txt, line 2: label 'maybe' is not 'ham' or 'spam'"):
        read_sms_spam(bad_label)


def test_spam_dataset_pads_and_truncates():
    tokenizer = tl.get_tokenizer("byte")
    dataset = SpamDataset(["abc", "a"], [1, 0], tokenizer)
    assert dataset.max_length == 3
    ids, label = dataset[1]
    np.testing.assert_array_equal(ids, [97, 256, 256])  # padded with end-of-text
    assert label == 0
    short = SpamDataset(["abcdef"], [1], tokenizer, max_length=2)
    np.testing.assert_array_equal(short.get_batch([0])[0], [[97, 98]])


@pytest.mark.parametrize(
    "recipe, trainable_blocks, head_only",
    [("last-block", [2], False), ("last-2", [1, 2], False), ("all", [0, 1, 2], False), ("head", [], True)],
)
def test_freezing_recipes(recipe, trainable_blocks, head_only):
    model = add_classification_head(GPTModel(TINY), 2)
    set_trainable(model, recipe)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    for name, _ in model.named_parameters():
        if name.startswith("trf_blocks."):
            expected = int(name.split(".")[1]) in trainable_blocks
        elif name.startswith("final_norm."):
            expected = not head_only
        elif name.startswith("out_head."):
            expected = True
        else:  # embeddings
            expected = recipe == "all"
        assert (name in trainable) == expected, name
    with pytest.raises(ValueError, match="trainable"):
        set_trainable(model, "last-0")


def test_frozen_parameters_receive_no_update_and_no_state():
    tl.manual_seed(0)
    model = add_classification_head(GPTModel(TINY), 2)
    set_trainable(model, "last-block")
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer = AdamW(model.parameters(), lr=1e-2)
    ids = np.random.default_rng(0).integers(0, 300, (4, 16))
    from tinygrad_llm.finetune.classifier import calc_loss_batch

    for _ in range(2):
        optimizer.zero_grad()
        calc_loss_batch(ids, np.array([0, 1, 1, 0]), model).backward()
        optimizer.step()
    for name, p in model.named_parameters():
        frozen = not p.requires_grad
        assert (p in optimizer.state) != frozen, name
        assert np.array_equal(p.data, before[name]) == frozen, name


def test_unsafe_zip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SMSSpamCollection", "ham\thi\n")
        zf.writestr("../escaped.txt", "gotcha")
    target = tmp_path / "extract"
    with pytest.raises(ValueError, match="outside"):
        safe_extract_zip(archive, target)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (target / "SMSSpamCollection").exists()  # refused before anything is written


def test_cli_bad_spam_file_writes_nothing(tmp_path, capsys):
    from tinygrad_llm.cli import main

    bad = tmp_path / "SMSSpamCollection"
    bad.write_text("ham\tfine\nspam\tWIN\nham fine but no tab\n")
    out = tmp_path / "run"
    assert main(["finetune-classifier", "--data", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "line 3" in err and "SMSSpamCollection" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ema-decay", "1"], "--ema-decay must be below 1"),
        (["--lr-schedule", "cosine", "--warmup-steps", "10000"], "--warmup-steps 10000 must be below"),
    ],
)
def test_cli_bad_schedule_or_average_writes_nothing(tmp_path, capsys, shared_data, flags, message):
    from tinygrad_llm.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "finetune-classifier",
            "--data",
            str(shared_data / "sms_spam_collection"),
            "--emb-dim",
            "16",
            "--n-layers",
            "1",
            "--max-length",
            "16",
            "--epochs",
            "1",
            "--out",
            str(out),
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_classifier_learns_spam_from_scratch(tmp_path, shared_data):
    """A 1-layer, 32-wide GPT trained from scratch for 2 epochs on the balanced data classifies the held-out
    test messages far above chance (50%), and the run folder has the model and the metrics."""
    from tinygrad_llm.cli import main

    out = tmp_path / "spam"
    code = main(
        [
            "finetune-classifier",
            "--data",
            str(shared_data / "sms_spam_collection"),
            "--preset",
            "tiny",
            "--tokenizer",
            "gpt2",
            "--dropout",
            "0",  # 32 GPT-2 tokens hold more of a message than 32 bytes
            "--emb-dim",
            "32",
            "--n-layers",
            "1",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--max-length",
            "32",
            "--eval-freq",
            "1000",
            "--eval-iter",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        assert 0.0 <= metrics[f"{split}_accuracy"] <= 1.0 and np.isfinite(metrics[f"{split}_loss"])
    assert metrics["test_accuracy"] >= 0.80, metrics
    assert metrics["trainable_parameters"] == metrics["total_parameters"]  # from scratch: everything trains

    model, tokenizer, meta = load_classifier(out)
    assert meta["class_names"] == ["ham", "spam"] and meta["max_length"] == 32
    spam = (
        "You are a winner! You have been specially selected to receive $1000 cash or a $2000 award. "
        "Call 09061701461 now to claim."
    )
    ham = "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"
    # the loaded model agrees with the test accuracy: check it labels the book's two examples
    labels = [
        classify_text(t, model, tokenizer, max_length=meta["max_length"], class_names=("ham", "spam"))
        for t in (spam, ham)
    ]
    assert labels == ["spam", "ham"]


def test_cli_with_lora_trains_only_adapters_and_exports_a_plain_model(tmp_path, shared_data):
    from tinygrad_llm.cli import main

    lines = (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    subset = tmp_path / "SMSSpamCollection"
    subset.write_text(
        "\n".join(
            [line for line in lines if line.startswith("spam")][:40]
            + [line for line in lines if line.startswith("ham")][:60]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "lora"
    code = main(
        [
            "finetune-classifier",
            "--data",
            str(subset),
            "--preset",
            "tiny",
            "--tokenizer",
            "byte",
            "--emb-dim",
            "16",
            "--n-layers",
            "1",
            "--epochs",
            "1",
            "--max-length",
            "16",
            "--lora-rank",
            "2",
            "--trainable",
            "all",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    c, r = 16, 2
    assert metrics["trainable_parameters"] == r * (3 * 2 * c + 2 * c + 5 * c + 5 * c) + r * (c + 2)
    assert metrics["lora"] == {"rank": 2, "alpha": 2.0, "scale": 1.0}
    model, _, _ = load_classifier(out)  # merged: loads into the plain architecture
    assert model.out_head.weight.shape == (2, 16)


def _zip_with(path, member: str, content: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, content)
    return path


def test_download_checks_the_extracted_file(tmp_path, shared_data):
    """The download path end to end through a file:// URL (no network): extracted and checked by sha256;
    a zip whose file differs is refused and its extracted file removed."""
    from tinygrad_llm.finetune.spam_data import download_and_unzip_spam_data

    real = (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    good = _zip_with(tmp_path / "good.zip", "SMSSpamCollection", real)
    path = download_and_unzip_spam_data(good.as_uri(), folder=tmp_path / "ok")
    assert path.read_bytes() == real
    bad = _zip_with(tmp_path / "bad.zip", "SMSSpamCollection", real[:-10])
    with pytest.raises(ValueError, match="sha256"):
        download_and_unzip_spam_data(bad.as_uri(), folder=tmp_path / "bad")
    assert not (tmp_path / "bad" / "SMSSpamCollection").exists()


def test_cli_init_from_a_run_folder_uses_the_books_recipe(tmp_path, shared_data, capsys):
    """--init-from a folder in the run layout (config.json + model.safetensors + tokenizer.json): the model's
    own tokenizer, the last-block recipe by default, and a classifier that loads back."""
    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune.io import save_finetuned

    tl.manual_seed(0)
    base = GPTModel(GPTConfig.preset("tiny", vocab_size=257, context_length=24, n_layers=2))
    save_finetuned(tmp_path / "base", base, tl.get_tokenizer("byte"), {"task": "pretraining"})
    lines = (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    subset = tmp_path / "SMSSpamCollection"
    subset.write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    out = tmp_path / "clf"
    assert (
        main(
            [
                "finetune-classifier",
                "--data",
                str(subset),
                "--init-from",
                str(tmp_path / "base"),
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable"] == "last-block" and metrics["max_length"] == 24  # capped at the context
    block = sum(p.size for p in base.trf_blocks[1].parameters())
    assert metrics["trainable_parameters"] == block + 2 * 64 + (64 * 2 + 2)  # last block, final norm, head
    model, tokenizer, _ = load_classifier(out)
    assert tokenizer.name == "byte" and model.config.context_length == 24
    # a --max-length past the starting model's context is refused before training, not cut in silence
    args = ["finetune-classifier", "--data", str(subset), "--init-from", str(tmp_path / "base")]
    assert main([*args, "--max-length", "25", "--out", str(tmp_path / "long")]) == 1
    assert "--max-length 25 is longer than the model's context of 24 tokens" in capsys.readouterr().err
    assert not (tmp_path / "long").exists()


def test_train_classifier_keeps_the_best_epoch_and_stops_early(shared_data):
    """Early stopping on validation accuracy: the returned model is the best epoch's, not the last one's."""
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune.classifier import calc_accuracy_loader, train_classifier, trainable_parameters

    texts, labels = read_sms_spam(shared_data / "sms_spam_collection" / "SMSSpamCollection")
    texts, labels = create_balanced_dataset(texts[:600], labels[:600], seed=1)
    splits = random_split(texts, labels, 0.7, 0.1, seed=1)
    tokenizer = tl.get_tokenizer("byte")
    sets = {k: SpamDataset(*v, tokenizer, max_length=32) for k, v in splits.items()}
    tl.manual_seed(3)
    model = GPTModel(GPTConfig.preset("tiny", vocab_size=257, context_length=32, emb_dim=16, n_layers=1))
    add_classification_head(model, 2)
    train_loader = DataLoader(sets["train"], batch_size=16, shuffle=True, seed=1)
    val_loader = DataLoader(sets["validation"], batch_size=16, drop_last=False)
    optimizer = AdamW(trainable_parameters(model), lr=3e-2)  # large: accuracy jumps around between epochs
    history = train_classifier(
        model, train_loader, val_loader, optimizer, None, max_epochs=6, patience=1, eval_freq=1000, log=None
    )
    accuracies = history["val_accuracy"]
    assert history["epochs_run"] == len(accuracies) < 6  # these seeds: epoch 2 is worse than epoch 1
    assert history["best_epoch"] == int(np.argmax(accuracies)) + 1 == len(accuracies) - 1  # stopped 1 after the best
    assert accuracies[-1] < max(accuracies)
    assert calc_accuracy_loader(val_loader, model) == max(accuracies)  # the best weights were put back


def test_train_classifier_with_ema_scores_and_keeps_the_averaged_weights(shared_data):
    """With ema_decay the epochs are scored and the best one kept with the moving average of the weights: the
    same training by hand, averaging alongside, gives the same validation accuracies and the same final weights,
    which are not the raw weights' (a cosine scheduler steps along)."""
    from tinygrad_llm.amp import MixedPrecision
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune.classifier import (
        calc_accuracy_loader,
        calc_loss_batch,
        train_classifier,
        trainable_parameters,
    )
    from tinygrad_llm.optim import ExponentialMovingAverage, WarmupCosineLR
    from tinygrad_llm.train.step import train_step

    texts, labels = read_sms_spam(shared_data / "sms_spam_collection" / "SMSSpamCollection")
    texts, labels = create_balanced_dataset(texts[:400], labels[:400], seed=1)
    splits = random_split(texts, labels, 0.7, 0.1, seed=1)
    sets = {k: SpamDataset(*v, tl.get_tokenizer("byte"), max_length=24) for k, v in splits.items()}
    val_loader = DataLoader(sets["validation"], batch_size=16, drop_last=False)

    def fresh():
        tl.manual_seed(3)
        model = add_classification_head(
            GPTModel(GPTConfig.preset("tiny", vocab_size=257, context_length=24, emb_dim=16, n_layers=1)), 2
        )
        optimizer = AdamW(trainable_parameters(model), lr=1e-2)
        loader = DataLoader(sets["train"], batch_size=16, shuffle=True, seed=1)
        return model, optimizer, loader, WarmupCosineLR(optimizer, warmup_steps=3, total_steps=3 * len(loader))

    model, optimizer, loader, scheduler = fresh()
    history = train_classifier(
        model,
        loader,
        val_loader,
        optimizer,
        None,
        max_epochs=3,
        eval_freq=1000,
        log=None,
        scheduler=scheduler,
        ema_decay=0.9,
    )

    by_hand, optimizer, loader, scheduler = fresh()
    ema, accuracies, states = ExponentialMovingAverage(by_hand, 0.9), [], []
    for _ in range(3):
        by_hand.train()
        for inputs, targets in loader:
            train_step(
                by_hand, optimizer, [(inputs, targets)], None, MixedPrecision("fp32", "cpu"), loss_batch=calc_loss_batch
            )
            scheduler.step()
            ema.update(by_hand)
        by_hand.eval()
        with ema.average_parameters(by_hand):
            accuracies.append(calc_accuracy_loader(val_loader, by_hand))
        states.append(ema.state_dict())
    assert history["val_accuracy"] == accuracies
    kept = states[history["best_epoch"] - 1]
    for name, array in model.state_dict().items():
        np.testing.assert_allclose(array, kept[name], rtol=1e-6, atol=1e-7, err_msg=name)
    raw = by_hand.state_dict()
    assert not all(np.allclose(raw[name], kept[name]) for name in kept)
