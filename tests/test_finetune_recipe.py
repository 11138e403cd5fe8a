"""The classifier recipes as library code (finetune/recipe.py): a classifier trains, scores and saves from Python,
without the command line, and the command line is that call."""

from __future__ import annotations

import json

import numpy as np

from tinygrad_llm.cli import main
from tinygrad_llm.finetune import spam_data
from tinygrad_llm.finetune.io import load_classifier
from tinygrad_llm.finetune.recipe import SCRATCH_RECIPE, ClassifierRecipe, finetune_classifier
from tinygrad_llm.model import NgramGPTModel


def _spam_file(tmp_path):
    data = tmp_path / "SMSSpamCollection"
    data.write_text("".join(f"ham\tsee you at {i} tonight\nspam\tWIN {i} cash now, call 0900{i}\n" for i in range(30)))
    return data


def test_a_classifier_trains_from_python_and_the_cli_is_the_same_call(tmp_path):
    data = _spam_file(tmp_path)
    lines = []
    recipe = ClassifierRecipe(
        data=str(data),
        preset="tiny",
        emb_dim=16,
        n_layers=1,
        max_length=24,
        epochs=2,
        ngram_buckets=64,
        seed=5,
    )
    metrics = finetune_classifier(recipe, tmp_path / "lib", log=lines.append)
    assert recipe.epochs == 2 and recipe.lr is None  # the caller's recipe is not filled in
    assert (metrics["seed"], metrics["split_seed"]) == (5, 5) and "ensemble_size" not in metrics
    assert metrics["average_from"] == 1 and metrics["lr"] == SCRATCH_RECIPE["lr"]  # the from-scratch defaults
    assert tuple(metrics["config"]["ngram_sizes"]) == SCRATCH_RECIPE["ngram_sizes"]
    assert any("2-class classifier" in line for line in lines)
    model, _, meta = load_classifier(tmp_path / "lib")
    assert isinstance(model, NgramGPTModel) and "ensemble_size" not in meta
    assert json.loads((tmp_path / "lib" / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]

    assert (
        main(
            [
                "finetune-classifier",
                "--data",
                str(data),
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
                "--seed",
                "5",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    cli, _, _ = load_classifier(tmp_path / "cli")
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(cli.state_dict()[name], array, err_msg=name)


def test_split_seed_draws_the_split_alone(tmp_path, monkeypatch):
    """--seed S + 1000 --split-seed S trains on exactly the split of --seed S, from its own initialisation and
    batch order (what benchmarks/spam_recipe.py relies on to train several models on one split)."""
    drawn = []

    def recording_split(*args, **kwargs):
        split = original(*args, **kwargs)
        drawn.append({name: list(texts) for name, (texts, _) in split.items()})
        return split

    original = spam_data.random_split
    monkeypatch.setattr(spam_data, "random_split", recording_split)
    data = _spam_file(tmp_path)
    common = ["--data", str(data), "--preset", "tiny", "--emb-dim", "16", "--n-layers", "1", "--max-length", "24"]
    common += ["--epochs", "2", "--ngram-embeddings", "none", "--batch-size", "8"]
    assert main(["finetune-classifier", *common, "--seed", "5", "--out", str(tmp_path / "s5")]) == 0
    other = ["--seed", "1005", "--split-seed", "5", "--out", str(tmp_path / "s1005")]
    assert main(["finetune-classifier", *common, *other]) == 0
    assert len(drawn) == 2 and drawn[0] == drawn[1]  # the same train, validation and test messages
    texts, labels = spam_data.create_balanced_dataset(*spam_data.read_sms_spam(data), seed=1005)
    assert original(texts, labels, 0.7, 0.1, seed=1005)["train"][0] != drawn[0]["train"]  # seed 1005's own differs
    first, _, _ = load_classifier(tmp_path / "s5")
    second, _, _ = load_classifier(tmp_path / "s1005")
    weights = second.state_dict()
    assert any(not np.array_equal(array, weights[name]) for name, array in first.state_dict().items())
    metrics = json.loads((tmp_path / "s1005" / "metrics.json").read_text())
    assert (metrics["seed"], metrics["split_seed"]) == (1005, 5)


def test_the_book_recipe_without_ngrams_builds_the_book_gpt(tmp_path):
    recipe = ClassifierRecipe(
        data=str(_spam_file(tmp_path)),
        preset="tiny",
        emb_dim=16,
        n_layers=1,
        max_length=24,
        epochs=1,
        ngram_sizes=(),
        average_from=0,
        batch_size=8,
    )
    metrics = finetune_classifier(recipe, tmp_path / "plain", log=lambda line: None)
    model, _, _ = load_classifier(tmp_path / "plain")
    assert type(model).__name__ == "GPTModel" and "ngram_sizes" not in metrics["config"]
    assert metrics["best_epoch"] == 1


def test_instruction_finetuning_runs_from_python(tmp_path):
    """finetune_instruct: a tiny from-scratch run on a few records trains, answers the test records, scores and
    saves, with no command line."""
    from tinygrad_llm.finetune.recipe import InstructRecipe, finetune_instruct

    records = [{"instruction": f"Repeat the number {i}.", "input": "", "output": f"{i}"} for i in range(40)]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    recipe = InstructRecipe(
        data=str(path),
        preset="small-cpu",  # a context of 256: the Alpaca prompt alone is over 100 bytes
        emb_dim=32,
        tokenizer="byte",
        n_layers=1,
        epochs=1,
        max_length=160,
        max_new_tokens=3,
        max_test=2,
        eval_freq=50,
        eval_iter=1,
    )
    lines = []
    metrics = finetune_instruct(recipe, tmp_path / "run", log=lines.append)
    assert np.isfinite(metrics["train_loss"]) and metrics["offline_scores"]["n"] == 2
    assert metrics["lr"] == 1e-3 and any("instruction fine-tuning" in line for line in lines)
    responses = json.loads((tmp_path / "run" / "instruction-data-with-response.json").read_text())
    assert [r["instruction"] for r in responses] == [records[34]["instruction"], records[35]["instruction"]]
