"""The from-scratch spam recipe's two averages: the weights of the late epochs (train_classifier's
average_from, stochastic weight averaging) and the probabilities of several members (ClassifierEnsemble,
finetune-classifier --ensemble), on disk and back, and through Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.cli import main
from tinygrad_llm.data import DataLoader
from tinygrad_llm.finetune import classifier
from tinygrad_llm.finetune.classifier import (
    add_classification_head,
    calc_accuracy_loader,
    calc_loss_batch,
    calc_loss_loader,
    classify_text,
    train_classifier,
    trainable_parameters,
)
from tinygrad_llm.finetune.ensemble import ClassifierEnsemble
from tinygrad_llm.finetune.io import load_classifier, save_finetuned
from tinygrad_llm.finetune.spam_data import SpamDataset
from tinygrad_llm.model import NgramGPTConfig, NgramGPTModel
from tinygrad_llm.optim import AdamW

TEXTS = [f"see you at {i} tonight" for i in range(24)] + [f"WIN {i} cash now, call 0900{i}" for i in range(24)]
LABELS = [0] * 24 + [1] * 24


def _tiny_classifier(seed: int, ngram_sizes=(2, 3)):
    tl.manual_seed(seed)
    config = NgramGPTConfig.preset(
        "tiny", vocab_size=257, context_length=24, emb_dim=16, n_layers=1, ngram_sizes=ngram_sizes, ngram_buckets=31
    )
    return add_classification_head(NgramGPTModel(config), 2)


def _loaders(batch_size=8):
    data = SpamDataset(TEXTS, LABELS, tl.get_tokenizer("byte"), max_length=24)
    return DataLoader(data, batch_size=batch_size, shuffle=True, seed=1), DataLoader(data, batch_size=16)


def test_ensemble_answers_the_log_of_its_members_mean_probability():
    members = [_tiny_classifier(seed).eval() for seed in (1, 2, 3)]
    ensemble = ClassifierEnsemble(members).eval()
    ids = SpamDataset(TEXTS[:5], LABELS[:5], tl.get_tokenizer("byte"), max_length=24).input_ids
    with tl.no_grad():
        got = ensemble(ids).data  # (5, 2)
        probs = []
        for member in members:
            logits = member(ids).data[:, -1, :].astype(np.float64)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs.append(e / e.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(np.exp(got), np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=1e-5)
    # the library's scoring takes it as one model: loss = -log of the mean probability of the label
    _, eval_loader = _loaders()
    loss = calc_loss_loader(eval_loader, ensemble)
    labels = np.array(LABELS)
    with tl.no_grad():
        all_probs = np.exp(ensemble(eval_loader.dataset.input_ids).data)
    assert loss == pytest.approx(float(np.mean(-np.log(all_probs[np.arange(48), labels]))), rel=1e-5)
    assert calc_accuracy_loader(eval_loader, ensemble) == np.mean(all_probs.argmax(axis=1) == labels)
    for chosen in (0, 1):  # members pushed to one class: the ensemble's text classification follows them
        for member in members:
            member.out_head.bias.data[...] = np.where(np.arange(2) == chosen, 20.0, 0.0)
        with tl.no_grad():
            assert (
                classify_text("WIN cash", ensemble, tl.get_tokenizer("byte"), max_length=24)
                == (("not spam", "spam")[chosen])
            )
    with pytest.raises(ValueError, match="at least 2 members"):
        ClassifierEnsemble(members[:1])


def test_ensemble_round_trips_through_its_folder(tmp_path):
    ensemble = ClassifierEnsemble([_tiny_classifier(seed) for seed in (4, 5)]).eval()
    save_finetuned(
        tmp_path / "e",
        ensemble,
        tl.get_tokenizer("byte"),
        {"task": "classification", "num_classes": 2, "ensemble_size": 2},
    )
    loaded, _, meta = load_classifier(tmp_path / "e")
    assert isinstance(loaded, ClassifierEnsemble) and len(loaded.members) == 2 and meta["ensemble_size"] == 2
    ids = np.array([[72, 105, 33, 256, 256]])
    with tl.no_grad():
        np.testing.assert_array_equal(loaded(ids).data, ensemble(ids).data)
    meta_file = tmp_path / "e" / "finetune.json"
    meta_file.write_text(json.dumps({**meta, "ensemble_size": 3}))  # claims a member the file does not hold
    with pytest.raises(Exception, match="members.2"):
        load_classifier(tmp_path / "e")
    meta_file.write_text(json.dumps({**meta, "ensemble_size": "2"}))
    with pytest.raises(ValueError, match="ensemble_size"):
        load_classifier(tmp_path / "e")


def test_average_from_keeps_the_mean_of_the_late_epochs_weights():
    """train_classifier(average_from=2) over 3 epochs ends with the mean of the weights after epochs 2 and 3:
    the same training by hand, with the two snapshots averaged, gives the same weights (to float32 rounding),
    which are neither epoch's own."""
    from tinygrad_llm.amp import MixedPrecision
    from tinygrad_llm.train.step import train_step

    model = _tiny_classifier(7)
    train_loader, val_loader = _loaders()
    history = train_classifier(
        model,
        train_loader,
        val_loader,
        AdamW(trainable_parameters(model), lr=1e-2),
        None,
        max_epochs=3,
        eval_freq=1000,
        log=None,
        average_from=2,
    )
    assert history["epochs_run"] == 3 and history["best_epoch"] is None and history["averaged_epochs"] == [2, 3]
    assert len(history["val_accuracy"]) == 3

    by_hand = _tiny_classifier(7)
    train_loader, _ = _loaders()
    optimizer = AdamW(trainable_parameters(by_hand), lr=1e-2)
    snapshots = []
    for _ in range(3):
        by_hand.train()
        for inputs, targets in train_loader:
            train_step(
                by_hand, optimizer, [(inputs, targets)], None, MixedPrecision("fp32", "cpu"), loss_batch=calc_loss_batch
            )
        snapshots.append({name: p.copy() for name, p in by_hand.state_dict().items()})
    got = model.state_dict()
    for name in got:
        mean = (snapshots[1][name].astype(np.float64) + snapshots[2][name]) / 2
        np.testing.assert_allclose(got[name], mean, rtol=1e-6, atol=1e-7, err_msg=name)
    moved = [name for name in got if not np.allclose(snapshots[2][name], snapshots[1][name])]
    assert moved and not all(np.allclose(got[n], snapshots[2][n]) for n in moved)  # not the last epoch's


def test_average_from_refuses_what_it_cannot_combine_with():
    model = _tiny_classifier(8)
    train_loader, val_loader = _loaders()
    optimizer = AdamW(trainable_parameters(model), lr=1e-2)
    for kwargs, message in (
        ({"average_from": 4}, r"\[1, 3\]"),
        ({"average_from": 2, "patience": 1}, "patience"),
        ({"average_from": 2, "ema_decay": 0.9}, "ema_decay"),
    ):
        with pytest.raises(ValueError, match=message):
            train_classifier(model, train_loader, val_loader, optimizer, None, max_epochs=3, log=None, **kwargs)


def _spam_file(tmp_path):
    data = tmp_path / "SMSSpamCollection"
    data.write_text("".join(f"ham\tsee you at {i} tonight\nspam\tWIN {i} cash now, call 0900{i}\n" for i in range(40)))
    return data


TINY_RUN = [
    "--preset",
    "tiny",
    "--emb-dim",
    "16",
    "--n-layers",
    "1",
    "--max-length",
    "24",
    "--epochs",
    "2",
    "--ngram-buckets",
    "64",
]


def test_cli_ensemble_member_one_is_the_single_model_bit_for_bit(tmp_path):
    """--ensemble 2: the first member is what --ensemble 1 trains (the same seed, draws and batches), the second
    differs; the folder loads as an ensemble and classify answers from it."""
    data = _spam_file(tmp_path)
    assert (
        main(["finetune-classifier", "--data", str(data), *TINY_RUN, "--ensemble", "1", "--out", str(tmp_path / "one")])
        == 0
    )
    assert (
        main(["finetune-classifier", "--data", str(data), *TINY_RUN, "--ensemble", "2", "--out", str(tmp_path / "two")])
        == 0
    )
    single, _, _ = load_classifier(tmp_path / "one")
    pair, _, meta = load_classifier(tmp_path / "two")
    assert meta["ensemble_size"] == 2 and isinstance(pair, ClassifierEnsemble)
    first, second = pair.members[0].state_dict(), pair.members[1].state_dict()
    for name, array in single.state_dict().items():
        np.testing.assert_array_equal(first[name], array, err_msg=name)
    assert not np.array_equal(second["out_head.weight"], first["out_head.weight"])
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["ensemble_size"] == 2 and len(metrics["member_test_accuracy"]) == 2
    assert [m["seed"] for m in metrics["members"]] == [123, 1123] and metrics["average_from"] == 1
    assert metrics["config"]["ngram_sizes"] == [2, 3, 4]  # the from-scratch default
    assert metrics["trainable_parameters"] == 2 * single.num_parameters()
    assert main(["classify", "--checkpoint", str(tmp_path / "two"), "--text", "WIN 7 cash now"]) == 0


def test_cli_ctrl_c_in_the_second_member_saves_the_members_so_far(tmp_path, capsys, monkeypatch):
    real = classifier.train_classifier
    calls = []

    def cut_short(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second member trains
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "train_classifier", cut_short)
    out = tmp_path / "spam"
    assert (
        main(
            [
                "finetune-classifier",
                "--data",
                str(_spam_file(tmp_path)),
                *TINY_RUN,
                "--ensemble",
                "3",
                "--out",
                str(out),
            ]
        )
        == 130
    )
    meta = json.loads((out / "finetune.json").read_text())
    assert meta["interrupted"] is True and meta["ensemble_size"] == 2
    model, _, _ = load_classifier(out)
    assert isinstance(model, ClassifierEnsemble) and len(model.members) == 2
    assert "interrupted: saved the model as it was" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ngram-embeddings", "1,2"], "distinct n-gram sizes >= 2"),
        (["--average-from", "3"], "--average-from 3 must be an epoch of the 2"),
        (["--average-from", "1", "--patience", "2"], "does not combine with --patience"),
        (["--arch", "bert", "--ngram-embeddings", "2,3"], "for a GPT trained from scratch"),
    ],
)
def test_cli_bad_recipe_flags_are_named(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    try:
        code = main(["finetune-classifier", "--data", str(_spam_file(tmp_path)), *TINY_RUN, "--out", str(out), *flags])
    except SystemExit as exc:  # argparse's own usage error
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())


def test_ensemble_sizes_are_one_range_for_the_writer_and_the_reader(tmp_path, capsys):
    """--ensemble is refused at parsing, before training, past what load_classifier (classify) reads back; the
    library recipe refuses it before reading the data; the reader names the same range."""
    from tinygrad_llm.finetune.io import ENSEMBLE_SIZES
    from tinygrad_llm.finetune.recipe import ClassifierRecipe, finetune_classifier

    out = tmp_path / "run"
    for size in (ENSEMBLE_SIZES[-1] + 1, 0):
        with pytest.raises(SystemExit) as stopped:
            main(["finetune-classifier", *TINY_RUN, "--ensemble", str(size), "--out", str(out)])
        assert stopped.value.code == 2 and "--ensemble" in capsys.readouterr().err
        assert not out.exists()
    parser = tl.cli.build_parser()
    largest = parser.parse_args(["finetune-classifier", "--ensemble", str(ENSEMBLE_SIZES[-1]), "--out", str(out)])
    assert largest.ensemble == ENSEMBLE_SIZES[-1]
    with pytest.raises(ValueError, match=f"--ensemble must be 1 to {ENSEMBLE_SIZES[-1]}"):
        finetune_classifier(ClassifierRecipe(data=str(tmp_path / "missing"), ensemble=ENSEMBLE_SIZES[-1] + 1), out)
    save_finetuned(
        tmp_path / "e",
        _tiny_classifier(4),
        tl.get_tokenizer("byte"),
        {"task": "classification", "num_classes": 2, "ensemble_size": ENSEMBLE_SIZES[-1] + 1},
    )
    with pytest.raises(ValueError, match=f"from 1 to {ENSEMBLE_SIZES[-1]}"):
        load_classifier(tmp_path / "e")
