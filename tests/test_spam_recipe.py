"""benchmarks/spam_recipe.py's logic that trains nothing: the recipes its steps compare (each a set of
``finetune-classifier`` fields) and its statistics (the paired bootstrap, the Wilson interval)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "spam_recipe.py"


@pytest.fixture(scope="module")
def recipe():
    return load_script(PATH, "spam_recipe")


def test_step_three_moves_one_setting_at_a_time_and_keeps_the_others(recipe):
    base = recipe.variant(ngrams=True, averaged=True)
    assert base.recipe_fields() == {
        "ngram_sizes": (2, 3, 4),
        "ngram_buckets": 2048,
        "average_from": 10,
        "epochs": 20,
        "tokenizer": "byte",  # where the search started, whatever SCRATCH_RECIPE holds now
        "batch_size": 32,
        "lr": 1e-3,
        "dropout": 0.1,
    }
    moved = base.move("batch_size", 16).move("lr", 2e-3).move("batch_size", 64)  # the last value of a field wins
    assert moved.recipe_fields() == {**base.recipe_fields(), "batch_size": 64, "lr": 2e-3}
    assert moved.name == "ngrams-swa-b16-lr0.002-b64"  # a folder per recipe: no two recipes share one
    longer = base.move("epochs", 30)
    assert (longer.epochs, longer.average_from) == (30, 15)  # still the second half averaged
    last = recipe.variant(ngrams=False, averaged=False).move("epochs", 10)
    assert (last.epochs, last.average_from) == (10, 10)  # still the last epoch alone
    table = base.move("ngram_table", ((2, 3, 4, 5, 6), 4096))
    assert table.recipe_fields()["ngram_sizes"] == (2, 3, 4, 5, 6)
    assert table.recipe_fields()["ngram_buckets"] == 4096
    names = [base.move(field, value).name for field, values in recipe.NEIGHBOURS for value in values]
    assert len(set(names)) == len(names) and base.name not in names


def test_paired_interval_of_a_known_difference(recipe):
    rng = np.random.default_rng(0)
    a = [np.zeros(100), np.ones(50)]
    b = [np.concatenate([np.ones(30), np.zeros(70)]), np.ones(50)]  # 30 more right out of 150
    diff, low, high = recipe.paired_interval(a, b, rng)
    assert diff == pytest.approx(30 / 150)
    assert low < diff < high
    assert low > 0.1 and high < 0.3  # a binomial spread of 30 changes: sd ~ sqrt(100 * 0.21) / 150 = 0.03
    same = recipe.paired_interval(a, a, rng)
    assert same == (0.0, 0.0, 0.0)  # nothing changed: no spread


def test_wilson_interval(recipe):
    low, high = recipe.wilson(1455, 1500)
    # the closed form: (k + z^2/2 -+ z sqrt(k(n-k)/n + z^2/4)) / (n + z^2)
    z, k, n = 1.959964, 1455, 1500
    half = z * math.sqrt(k * (n - k) / n + z * z / 4)
    assert (low, high) == pytest.approx(((k + z * z / 2 - half) / (n + z * z), (k + z * z / 2 + half) / (n + z * z)))
    assert recipe.wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert recipe.wilson(10, 10)[1] == pytest.approx(1.0)
