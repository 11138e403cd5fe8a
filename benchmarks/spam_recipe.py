"""Choose the from-scratch spam recipe on validation accuracy alone, then report its test accuracy once.

    python benchmarks/spam_recipe.py              # seeds 201-205, two runs at a time: 90 runs, ~2.5 h on 2 cores
    python benchmarks/spam_recipe.py --seeds 201 202 --out runs/spam-recipe --jobs 1

Every seed S draws its own balanced split of the SMS Spam Collection (1,045 / 149 / 300 messages, as
``finetune-classifier --seed S``). The choices are made in order, each on the validation messages of all the
seeds together (5 x 149 = 745), each against what was chosen before it:

1. readout: the last epoch's weights, or the weights of the second half of the epochs averaged (SWA);
   the one with more validation messages right is kept (a tie keeps the last epoch: nothing to average);
2. hashed byte n-gram embeddings (2-, 3- and 4-grams, 2,048 rows each, ``nn/ngram.py``): kept only if they beat
   the model without them by more than the 95% interval of the difference (a paired bootstrap over the
   validation messages, seed by seed), since they are code a reader has to learn;
3. the settings the earlier passes in RESULTS.md chose (partly on test accuracy), one at a time around the
   recipe chosen so far (a coordinate search): batch 16 / 32 / 64, lr 5e-4 / 1e-3 / 2e-3, dropout 0 / 0.1 / 0.2,
   10 / 20 / 30 epochs, the n-gram table (2-4-grams x 2,048 rows or 2-6-grams x 4,096), the byte tokenizer or
   GPT-2's BPE. These are numbers, not code, so the one with the most validation messages right is kept; a tie
   keeps the value the recipe has;
4. an ensemble of three members (runs of seeds S, S + 1000, S + 2000 on seed S's split, ``--split-seed S``,
   their probabilities averaged here), kept by step 2's rule against its member 0 (the one model of step 3).
   (It was not kept, and finetune-classifier's --ensemble was removed; the step stays as a measurement.)

What stays fixed: the tiny preset (a wider model costs 3.5x per run and the screened one was no better), AdamW's
weight decay 0.1, messages cut at 160 bytes (an SMS is at most 160 characters), the constant learning rate.
Steps 1 and 2 are not revisited after step 3 moves a setting.

Only after every choice is made does the script read the test split: the chosen recipe's test accuracy per seed
with its 95% (Wilson) interval, and over all seeds. It also says how far the seeds' test sets overlap the test
sets the earlier passes screened recipes on (seeds 2 and 5) and every earlier seed (1-10, 123).

Each run is saved in ``--out`` (one folder per seed and variant, as ``finetune-classifier`` saves it); a run
found finished there is reused, so an interrupted search continues where it stopped. The summary is written
to ``--out``/summary.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

SEEDS = (201, 202, 203, 204, 205)  # no earlier pass ran these
SCREENED_SEEDS = (2, 5)  # the splits whose test sets the earlier passes chose n-grams, averaging and ensembles on
EARLIER_SEEDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 123)
EPOCHS = 20
NGRAMS = (2, 3, 4)
BOOTSTRAP = 10_000
# Where the search starts: the settings the earlier passes left, written here and not read from SCRATCH_RECIPE
# (which holds what this search chose), so that a rerun from a clone trains the same runs.
START = {"tokenizer": "byte", "batch_size": 32, "lr": 1e-3, "dropout": 0.1}
# Step 3's neighbours: each setting the earlier passes chose (partly on test accuracy), one step either side of
# its START value, in the order they are tried.
NEIGHBOURS = (
    ("batch_size", (16, 64)),
    ("lr", (5e-4, 2e-3)),
    ("dropout", (0.0, 0.2)),
    ("epochs", (10, 30)),
    ("ngram_table", (((2, 3, 4, 5, 6), 4096),)),
    ("tokenizer", ("gpt2",)),
)
FIELD_LABELS = {"batch_size": "b", "lr": "lr", "dropout": "drop", "tokenizer": "tok-"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model's recipe: the fields of ``finetune-classifier`` the search varies."""

    name: str
    ngram_sizes: tuple
    epochs: int
    average_from: int  # == epochs: the last epoch's weights alone
    moved: tuple = ()  # ((field, value), ...): the settings step 3 moved from START's

    def recipe_fields(self) -> dict:
        return {
            "ngram_sizes": self.ngram_sizes,
            "ngram_buckets": 2048 if self.ngram_sizes else None,
            "average_from": self.average_from,
            "epochs": self.epochs,
            **START,
            **dict(self.moved),
        }

    def averaged(self) -> bool:
        return self.average_from < self.epochs

    def move(self, field: str, value) -> Variant:
        """This recipe with one setting moved (the others as they are); ``epochs`` keeps the readout's kind."""
        if field == "epochs":
            average_from = max(1, value // 2) if self.averaged() else value
            return dataclasses.replace(self, name=f"{self.name}-e{value}", epochs=value, average_from=average_from)
        if field == "ngram_table":  # (sizes, rows)
            sizes, rows = value
            name = f"{self.name}-ng{'-'.join(map(str, sizes))}x{rows}"
            return dataclasses.replace(self, name=name, ngram_sizes=sizes, moved=self._with("ngram_buckets", rows))
        name = f"{self.name}-{FIELD_LABELS[field]}{value}"
        return dataclasses.replace(self, name=name, moved=self._with(field, value))

    def _with(self, field: str, value) -> tuple:
        return tuple((f, v) for f, v in self.moved if f != field) + ((field, value),)


def variant(ngrams: bool, averaged: bool, epochs: int = EPOCHS) -> Variant:
    name = f"{'ngrams' if ngrams else 'plain'}-{'swa' if averaged else 'last'}"
    if epochs != EPOCHS:
        name += f"-e{epochs}"
    return Variant(name, NGRAMS if ngrams else (), epochs, max(1, epochs // 2) if averaged else epochs)


# ---- one run: train (or reuse), then its spam probabilities on one split -----------------------------------


def split_of(seed: int, data: str | None) -> dict:
    from tinygrad_llm.finetune.spam_data import create_balanced_dataset, find_spam_file, random_split, read_sms_spam

    texts, labels = read_sms_spam(find_spam_file(data))
    texts, labels = create_balanced_dataset(texts, labels, seed=seed)
    return random_split(texts, labels, 0.7, 0.1, seed=seed)


def train(seed: int, v: Variant, member: int, out: Path, data: str | None) -> Path:
    """Member ``member`` of the variant on seed ``seed``'s split: ``finetune-classifier --seed SEED + 1000 member
    --split-seed SEED`` with the variant's fields (seed SEED's split, its own initialisation and batch order;
    member 0 the one model of ``--seed SEED``), at one thread; reused when already finished."""
    folder = out / f"seed{seed}-{v.name}" if member == 0 else out / f"seed{seed}-{v.name}-m{member}"
    if (folder / "metrics.json").is_file():
        return folder
    import tinygrad_llm.runtime as runtime
    from tinygrad_llm.finetune.recipe import ClassifierRecipe, finetune_classifier

    runtime.configure(threads=1)  # two runs side by side, each on its core
    with open(folder.with_name(folder.name + ".log"), "w") as log_file:
        finetune_classifier(
            ClassifierRecipe(data=data, seed=seed + 1000 * member, split_seed=seed, **v.recipe_fields()),
            folder,
            log=lambda line: print(line, file=log_file, flush=True),
        )
    return folder


def member_probabilities(folder: Path, seed: int, split: str, data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(p, labels): p (1, messages) the spam probability the run in ``folder`` gives each message of ``split``
    (one row: the callers stack the rows of an ensemble's members)."""
    from tinygrad_llm import backend
    from tinygrad_llm.finetune.classifier import last_token_logits
    from tinygrad_llm.finetune.io import load_classifier
    from tinygrad_llm.finetune.spam_data import SpamDataset
    from tinygrad_llm.tensor import no_grad

    model, tokenizer, meta = load_classifier(folder)
    model.eval()
    texts, labels = split_of(seed, data)[split]
    ids = SpamDataset(texts, labels, tokenizer, meta["max_length"], meta["pad_token_id"]).input_ids  # (N, T)
    with no_grad():
        logits = backend.to_numpy(last_token_logits(model, ids).data).astype(np.float64)  # (N, 2)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
    return p[None, :], np.asarray(labels)


def run_validation(job: tuple) -> tuple:
    seed, v, member, out, data = job
    start = time.perf_counter()
    folder = train(seed, v, member, out, data)
    p, labels = member_probabilities(folder, seed, "validation", data)
    return seed, v.name, member, p, labels, time.perf_counter() - start


# ---- statistics ------------------------------------------------------------------------------------------


def correct(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where the probability (mean over members) picks the label (argmax of two classes: p > 1/2)."""
    return ((p.mean(axis=0) > 0.5).astype(int) == labels).astype(float)


def paired_interval(a: list[np.ndarray], b: list[np.ndarray], rng: np.random.Generator) -> tuple:
    """(difference, low, high): pooled accuracy of b minus a over every seed's messages, and the 95% interval of
    a paired bootstrap that resamples messages within each seed."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n = sum(len(d) for d in diffs)
    observed = sum(d.sum() for d in diffs) / n
    totals = np.zeros(BOOTSTRAP)
    for d in diffs:
        totals += d[rng.integers(0, len(d), size=(BOOTSTRAP, len(d)))].sum(axis=1)
    low, high = np.quantile(totals / n, [0.025, 0.975])
    return float(observed), float(low), float(high)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def test_overlap(seeds, data: str | None) -> dict:
    """Per seed: how many of its test messages (distinct texts) were in the screened and the earlier test sets."""

    def test_texts(seed: int) -> set:
        return set(split_of(seed, data)["test"][0])

    screened = set().union(*(test_texts(s) for s in SCREENED_SEEDS))
    earlier = set().union(*(test_texts(s) for s in EARLIER_SEEDS))
    return {
        seed: {"distinct": len(t := test_texts(seed)), "in_screened": len(t & screened), "in_earlier": len(t & earlier)}
        for seed in seeds
    }


# ---- the search ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="split and initialisation seeds")
    parser.add_argument("--out", default="runs/spam-recipe", help="folder for the runs and summary.json")
    parser.add_argument("--data", default=None, help="the SMSSpamCollection file or folder (default: found)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs of every run (a shorter trial run)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
    log = []

    def say(line: str) -> None:
        print(line, flush=True)
        log.append(line)

    def validate(variants, members=(0,)) -> dict:
        """{variant name: [per seed (p (members, messages), labels)]} on validation, training what --out lacks."""
        jobs = [(seed, v, k, out, args.data) for v in variants for seed in args.seeds for k in members]
        found = {}
        for seed, name, k, p, labels, seconds in pool.map(run_validation, jobs):
            say(
                f"  seed {seed} {name} member {k}: validation {int(correct(p, labels).sum())}/{len(labels)} "
                f"({seconds:.0f} s)"
            )
            found[(name, seed, k)] = p, labels
        return {
            v.name: [
                (np.concatenate([found[(v.name, seed, k)][0] for k in members]), found[(v.name, seed, members[0])][1])
                for seed in args.seeds
            ]
            for v in variants
        }

    def right(runs, members=None) -> list[np.ndarray]:
        """Per seed, 1 where the (mean of the first ``members``) probability picks the label."""
        return [correct(p if members is None else p[:members], labels) for p, labels in runs]

    def compare(what: str, base: list, candidate: list) -> tuple:
        diff, low, high = paired_interval(base, candidate, rng)
        n = sum(len(c) for c in base)
        say(
            f"{what}: {sum(c.sum() for c in base):.0f} vs {sum(c.sum() for c in candidate):.0f} of {n} validation "
            f"messages right; difference {diff * 100:+.2f} points, 95% interval [{low * 100:+.2f}, {high * 100:+.2f}]"
        )
        return diff, low, high

    start = time.perf_counter()
    say(f"seeds {args.seeds}: choosing on validation")
    # 1. readout: the last epoch or the second half's average
    last, swa = variant(False, False, args.epochs), variant(False, True, args.epochs)
    runs = validate([last, swa])
    diff, _, _ = compare(
        "1. readout: the last epoch vs the second half averaged", right(runs[last.name]), right(runs[swa.name])
    )
    averaged = diff > 0
    base = swa if averaged else last
    say(f"   -> {'the average of the second half of the epochs' if averaged else 'the last epoch'}")
    # 2. hashed n-gram embeddings
    with_ngrams = variant(True, averaged, args.epochs)
    runs.update(validate([with_ngrams]))
    diff, low, _ = compare(
        "2. hashed 2/3/4-gram embeddings: without vs with", right(runs[base.name]), right(runs[with_ngrams.name])
    )
    ngrams = low > 0
    say(f"   -> {'kept' if ngrams else 'left out'} (kept only when the interval lies above 0)")
    # 3. the settings the earlier passes chose, one at a time, each around the recipe chosen so far
    chosen = with_ngrams if ngrams else base
    for field, values in NEIGHBOURS:
        if field == "ngram_table" and not ngrams:
            continue
        candidates = [chosen.move(field, value) for value in values]
        runs.update(validate(candidates))
        for value, candidate in zip(values, candidates, strict=True):
            compare(f"3. {field} {value} instead", right(runs[chosen.name]), right(runs[candidate.name]))
        score = {v.name: sum(c.sum() for c in right(runs[v.name])) for v in [chosen, *candidates]}
        best = max([chosen, *candidates], key=lambda v: score[v.name])  # the first of equals: a tie keeps the recipe
        say(f"   -> {field}: {'kept' if best is chosen else 'moved'} ({best.name})")
        chosen = best
    # 4. an ensemble of three: members 1 and 2 beside the one model (member 0) already trained
    extra = validate([chosen], members=(1, 2))[chosen.name]
    three = [
        (np.concatenate([p0, p12]), labels) for (p0, labels), (p12, _) in zip(runs[chosen.name], extra, strict=True)
    ]
    diff, low, _ = compare("4. ensemble of three: member 0 vs the three", right(three, 1), right(three))
    ensemble = 3 if low > 0 else 1
    say(f"   -> {'an ensemble of three' if ensemble > 1 else 'one model'}")
    name = chosen.name + (f" x{ensemble}" if ensemble > 1 else "")
    say(f"chosen: {name} ({time.perf_counter() - start:.0f} s of training and scoring)")

    # the test split, read once, for the chosen recipe alone
    say(f"test accuracy of {name}, read once:")
    overlap = test_overlap(args.seeds, args.data)
    rows, right_all, total = [], 0, 0
    for seed in args.seeds:
        folders = [out / f"seed{seed}-{chosen.name}"] + [out / f"seed{seed}-{chosen.name}-m{k}" for k in (1, 2)]
        found = [member_probabilities(folder, seed, "test", args.data) for folder in folders[:ensemble]]
        labels = found[0][1]
        k = int(correct(np.concatenate([p for p, _ in found]), labels).sum())
        low, high = wilson(k, len(labels))
        right_all, total = right_all + k, total + len(labels)
        rows.append(
            {
                "seed": seed,
                "right": k,
                "messages": len(labels),
                "accuracy": k / len(labels),
                "interval": [low, high],
                **overlap[seed],
            }
        )
        say(
            f"  seed {seed}: {k}/{len(labels)} = {k / len(labels) * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]"
            f"  (test messages also in the screened test sets of seeds 2/5: {overlap[seed]['in_screened']}, in any "
            f"earlier seed's: {overlap[seed]['in_earlier']}, of {overlap[seed]['distinct']} distinct)"
        )
    low, high = wilson(right_all, total)
    per_seed = [r["accuracy"] for r in rows]
    say(
        f"  all seeds: {right_all}/{total} = {right_all / total * 100:.2f}% [{low * 100:.1f}, {high * 100:.1f}]; "
        f"per seed {min(per_seed) * 100:.2f}-{max(per_seed) * 100:.2f}%"
    )
    summary = {
        "seeds": args.seeds,
        "chosen": {**dataclasses.asdict(chosen), "ensemble": ensemble},
        "choices": {"averaged": averaged, "ngrams": ngrams, "ensemble": ensemble},
        "test": rows,
        "test_pooled": {"right": right_all, "messages": total, "interval": [low, high]},
        "log": log,
    }
    from tinygrad_llm.files import write_json

    write_json(out / "summary.json", summary)
    pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
