"""The spam classifier of chapter 6 as recipes: the book's (fine-tune a pretrained GPT, --init-from) and the
measured from-scratch one (bytes, hashed n-grams, the late epochs' weights averaged), with
the loop that trains one classifier, scores and saves it.

    from tinygrad_llm.finetune.recipe import ClassifierRecipe, finetune_classifier

    metrics = finetune_classifier(ClassifierRecipe(epochs=2), "runs/spam")  # trains, scores, saves
    model, tokenizer, meta = finetune.io.load_classifier("runs/spam")    # the model with its class head

``tinygrad-llm finetune-classifier`` parses its flags into a ``ClassifierRecipe`` and calls
``finetune_classifier``; each field is the flag of the same name (None: the recipe's default). The training
loop is ``classifier.train_classifier``, as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.dist.launch import describe_processes
from tinygrad_llm.train.progress import Progress

if TYPE_CHECKING:
    import argparse
    import os

    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.tokenizer.base import Tokenizer

    Args = argparse.Namespace | types.SimpleNamespace
    Log = Callable[[str], object]

# The classifier trained from scratch (no pretrained weights): bytes, not GPT-2's 50,257 ids; hashed 2-, 3- and
# 4-gram embeddings (nn/ngram.py) hand the model the byte n-grams it otherwise has to learn at every position;
# batches of 16 at lr 2e-3, dropout 0.1; the weights of epochs 10-20 averaged (stochastic weight averaging)
# rather than the epoch that happened to score best on 149 validation messages; one model. Every one of these is
# chosen on validation accuracy alone by benchmarks/spam_recipe.py: the averaging and the n-grams beat the model
# without them by more than their 95% interval; an ensemble of three did not, so it was removed (RESULTS.md);
# batch, lr, dropout, epochs, the n-gram table and the tokenizer are each the best of the values tried around
# the recipe (RESULTS.md, with the test accuracy read once, and what did not help in the earlier passes: a
# cosine schedule, an exponential moving average, other readouts, augmentation).
SCRATCH_RECIPE = {
    "tokenizer": "byte",
    "max_length": 160,
    "dropout": 0.1,
    "batch_size": 16,
    "epochs": 20,
    "patience": 0,
    "lr": 2e-3,
    "lr_schedule": "constant",
    "warmup_steps": 50,
    "ema_decay": 0.0,
    "ngram_sizes": (2, 3, 4),
    "ngram_buckets": 2048,
    "average_from": None,
}  # average_from None: the second half of --epochs
# BERT from scratch keeps the recipe it was measured with: one model, the best validation epoch, patience 5.
# (batch 32 at lr 1e-3: the GPT's settings before spam_recipe.py's step 3 moved them, which it did not try on BERT)
BERT_SCRATCH = {"ngram_sizes": (), "average_from": 0, "patience": 5, "batch_size": 32, "lr": 1e-3}
# Fine-tuning a pretrained GPT (--init-from): the book's chapter 6, one model, the best validation epoch.
BOOK_RECIPE = {
    "epochs": 5,
    "batch_size": 8,
    "patience": 0,
    "lr": 5e-5,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "ema_decay": 0.0,
    "average_from": 0,
}


@dataclasses.dataclass
class ClassifierRecipe:
    """What ``finetune_classifier`` trains: the fields of ``tinygrad-llm finetune-classifier``'s flags (see its
    --help for each). None takes the recipe's default: BOOK_RECIPE with ``init_from``, SCRATCH_RECIPE without
    (BERT_SCRATCH on top for ``arch="bert"``), the model's own for the model fields."""

    data: str | None = None  # the SMSSpamCollection file or its folder (default: $TINYGRAD_LLM_DATA's)
    init_from: str | None = None  # a run folder or GPT-2 folder/name; None: from scratch with ``preset``
    preset: str | None = None
    tokenizer: str | None = None
    emb_dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    dropout: float | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    ngram_sizes: tuple | None = None  # () for none
    ngram_buckets: int | None = None
    arch: str = "gpt"
    trainable: str | None = None
    epochs: int | None = None
    patience: int | None = None
    lr: float | None = None
    lr_schedule: str | None = None
    warmup_steps: int | None = None
    ema_decay: float | None = None
    average_from: int | None = None
    weight_decay: float = 0.1
    batch_size: int | None = None
    max_length: int | None = None
    eval_freq: int = 50
    eval_iter: int = 5
    seed: int = 123
    split_seed: int | None = None  # the split's draw alone (None: seed)
    device: str | None = None
    precision: str = "fp32"


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finetune_classifier(
    recipe: ClassifierRecipe, out: str | os.PathLike, comm: Communicator | None = None, log: Log = log_stderr
) -> dict | None:
    """Train the spam classifier ``recipe`` describes (``seed`` draws the split, the initialisation and the
    batch order; ``split_seed``, when given, the split alone), score it on the train/validation/test splits and
    save it into the folder ``out`` (model, tokenizer.json, finetune.json, metrics.json;
    finetune.io.load_classifier reads it back).

    ``comm``: the data-parallel communicator (default one process); ``log``: where progress lines go. Returns
    metrics.json's contents (None on a process other than 0, which neither scores nor writes). Ctrl-C saves the
    model as it is, marked "interrupted", and raises KeyboardInterrupt.
    """
    from tinygrad_llm.dist import SingleProcess

    args = types.SimpleNamespace(**dataclasses.asdict(recipe), comm=comm or SingleProcess(), log=log)
    return run_classifier_recipe(args, Path(out))


# ---- shared with the instruction and DPO commands ---------------------------------------------------------


def size_overrides(args: Args) -> dict:
    """The model-size flags given (--emb-dim, --n-layers, --n-heads, --dropout) as GPTConfig/BertConfig fields."""
    given = (
        ("emb_dim", args.emb_dim),
        ("n_layers", args.n_layers),
        ("n_heads", args.n_heads),
        ("drop_rate", args.dropout),
    )
    return {field: value for field, value in given if value is not None}


def load_start_model(args: Args, context_length: int | None = None) -> tuple[Module, Tokenizer, str]:
    """(model, tokenizer, description): from ``args.init_from``, or a fresh ``args.preset`` model (else
    ``args.default_preset``) for ``args.tokenizer``: an NgramGPTModel when ``args.ngram_sizes`` (the classifier's)."""
    from tinygrad_llm.model import GPTConfig, GPTModel, NgramGPTConfig, NgramGPTModel
    from tinygrad_llm.tokenizer import get_tokenizer

    overrides = size_overrides(args)
    if args.init_from is None:
        tokenizer = get_tokenizer(args.tokenizer)
        preset = args.preset or args.default_preset
        overrides = {"vocab_size": tokenizer.n_vocab, **overrides}
        if context_length is not None:
            overrides["context_length"] = context_length
        if getattr(args, "ngram_sizes", None):  # finetune-classifier's hashed n-gram embeddings: their own GPT
            config = NgramGPTConfig.preset(
                preset, **overrides, ngram_sizes=args.ngram_sizes, ngram_buckets=args.ngram_buckets
            )
            ngrams = "/".join(map(str, config.ngram_sizes))
            return NgramGPTModel(config), tokenizer, f"a fresh {preset} model (from scratch, hashed {ngrams}-grams)"
        config = GPTConfig.preset(preset, **overrides)
        return GPTModel(config), tokenizer, f"a fresh {preset} model (from scratch)"
    if Path(args.init_from).is_dir():  # a run folder or a Hugging Face folder: config, weights and tokenizer
        from tinygrad_llm.cli.common import load_model_and_tokenizer  # checked together

        model, tokenizer = load_model_and_tokenizer(Path(args.init_from), None)
        apply_dropout(model, overrides.get("drop_rate"))
        return model, tokenizer, f"{args.init_from}"
    model = GPTModel.from_pretrained(args.init_from, drop_rate=overrides.get("drop_rate"))
    return model, get_tokenizer("gpt2"), f"{args.init_from}"


def apply_dropout(model: Module, rate: float | None) -> None:
    if rate is None:
        return
    from tinygrad_llm.nn import Dropout

    model.config.drop_rate = rate
    for module in model.modules():
        if isinstance(module, Dropout):
            module.p = rate


def apply_lora(args: Args, model: Module) -> dict | None:
    if args.lora_alpha is not None and args.lora_rank is None:
        raise ValueError("--lora-alpha needs --lora-rank")
    if args.lora_rank is None:
        return None
    from tinygrad_llm.finetune.lora import freeze, replace_linear_with_lora

    alpha = args.lora_alpha if args.lora_alpha is not None else float(args.lora_rank)
    freeze(model)
    replace_linear_with_lora(model, rank=args.lora_rank, alpha=alpha)
    return {"rank": args.lora_rank, "alpha": alpha, "scale": alpha / args.lora_rank}


@contextlib.contextmanager
def saved_if_interrupted(
    out: Path,
    snapshot: Callable[[], tuple[Module, dict]],
    tokenizer: Tokenizer,
    lora: dict | None,
    write: bool = True,
    log: Log | None = None,
) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) during training saves the model as it is, usable, before the command ends.
    ``snapshot()`` gives (model, finetune.json's metadata) at that moment, ``lora()`` whether its LoRA
    adapters are still to merge (``write``: this process writes; with several, process 0 alone)."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if not write:
            raise
        from tinygrad_llm.finetune.io import save_finetuned
        from tinygrad_llm.finetune.lora import merge_lora

        model, meta = snapshot()
        model.eval()
        if lora():
            merge_lora(model)
        save_finetuned(out, model, tokenizer, {**meta, "interrupted": True})
        (log or log_stderr)(
            f"interrupted: saved the model as it was, part-way through training, to {out} "
            f'(finetune.json says "interrupted"); it is usable as it is, or run the command '
            "again with --overwrite to train fully"
        )
        interrupt.reported = True  # the one line a user sees: the command line adds none
        raise


def check_max_length(max_length: int | None, context: int, model: str = "the model's context") -> int:
    """--max-length within what the model can read (``context``: its context length or positions): the
    tokens per training sequence, ``context`` when not given. Longer is refused, never clamped in silence."""
    if max_length is not None and max_length > context:
        raise ValueError(
            f"--max-length {max_length} is longer than {model} of {context} tokens: give at most {context} "
            "(or start from a model with a longer context)"
        )
    return context if max_length is None else max_length


def require_end_of_text(tokenizer: Tokenizer, init_from: str | None, command: str) -> None:
    """Instructions and preferences are padded with, and end at, <|endoftext|>: a tokenizer without it (a
    run's char or byte tokenizer) cannot be used; say which starting model has one."""
    if tokenizer.eot_id is None:
        raise ValueError(
            f"--init-from {init_from}: its {tokenizer.name} tokenizer has no <|endoftext|>, which {command} pads "
            "with and stops at; start from a model with GPT-2's tokenizer: one of finetune-instruct "
            "(tinygrad-llm finetune-instruct --out runs/instruct), of train --tokenizer gpt2, or gpt2 by name"
        )


def check_usable_records(unusable: int, total: int, why: str, fix: str, log: Log) -> None:
    """Before training: refuse when none of the ``total`` training records can teach anything (``why``:
    what is wrong with them), warn with the count when ``unusable`` of them cannot."""
    if unusable == total:
        raise ValueError(f"nothing to train on: all {total} training records {why}; {fix}")
    if unusable:
        log(f"warning: {unusable} of {total} training records {why}: they teach nothing ({fix})")


def parameter_counts(model: Module) -> dict:
    return {
        "trainable_parameters": model.num_parameters(trainable_only=True),
        "total_parameters": model.num_parameters(),
    }


# ---- the classifier ---------------------------------------------------------------------------------------


def resolve_classifier_defaults(args: Args) -> None:
    """The book's settings with --init-from; the measured from-scratch recipe otherwise (SCRATCH_RECIPE)."""
    if (args.init_from is not None or args.arch == "bert") and (args.ngram_sizes or args.ngram_buckets):
        raise ValueError(
            "--ngram-embeddings and --ngram-buckets are for a GPT trained from scratch (without "
            "--init-from or --arch bert): they add tables a pretrained model or BERT does not have"
        )
    if args.init_from is not None:
        defaults = BOOK_RECIPE
    else:
        defaults = dict(SCRATCH_RECIPE, **(BERT_SCRATCH if args.arch == "bert" else {}))
    if args.average_from is None and (args.patience is not None or args.ema_decay):
        args.average_from = 0  # choosing an epoch (or averaging every step) was asked for: no epoch average
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.average_from is None:  # the second half of the epochs: 10-20 of 20
        args.average_from = max(1, args.epochs // 2)


def run_classifier_recipe(args: Args, out: Path) -> dict | None:
    """finetune_classifier on a namespace of the recipe's fields plus ``comm`` and ``log`` (the CLI's args)."""
    import tinygrad_llm as tl
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.finetune.spam_data import (
        CLASS_NAMES,
        SpamDataset,
        create_balanced_dataset,
        find_spam_file,
        random_split,
        read_sms_spam,
    )

    args.default_preset = "tiny"
    resolve_classifier_defaults(args)
    split_seed = args.seed if args.split_seed is None else args.split_seed
    texts, labels = read_sms_spam(find_spam_file(args.data))
    texts, labels = create_balanced_dataset(texts, labels, seed=split_seed)
    splits = random_split(texts, labels, 0.7, 0.1, seed=split_seed)
    tl.manual_seed(args.seed)
    if args.arch == "bert":
        return _finetune_bert_classifier(args, out, splits)

    if args.init_from is None:  # the context of a fresh model is the message length
        from tinygrad_llm.tokenizer import get_tokenizer

        probe = SpamDataset(*splits["train"], get_tokenizer(args.tokenizer), max_length=args.max_length)
        model, tokenizer, described = load_start_model(args, context_length=probe.max_length)
    else:
        model, tokenizer, described = load_start_model(args)
    check_max_length(args.max_length, model.config.context_length)
    train_set = SpamDataset(*splits["train"], tokenizer, max_length=args.max_length)
    max_length = min(train_set.max_length, model.config.context_length)  # never past the context
    if max_length != train_set.max_length:
        train_set = SpamDataset(*splits["train"], tokenizer, max_length=max_length)
    val_set = SpamDataset(*splits["validation"], tokenizer, max_length=max_length)
    test_set = SpamDataset(*splits["test"], tokenizer, max_length=max_length)

    trainable = args.trainable or ("last-block" if args.init_from else "all")

    C.add_classification_head(model, num_classes=len(CLASS_NAMES))
    C.set_trainable(model, trainable)
    return _train_classifier(
        args, out, model, tokenizer, described, trainable, (train_set, val_set, test_set), max_length
    )


def _finetune_bert_classifier(args, out: Path, splits) -> dict | None:
    """finetune-classifier --arch bert: BertForSequenceClassification from scratch or a 'train --arch bert' run."""
    import warnings

    from tinygrad_llm.finetune.bert_classifier import BertSpamDataset, set_trainable_bert
    from tinygrad_llm.finetune.spam_data import CLASS_NAMES
    from tinygrad_llm.model import BertConfig, BertForSequenceClassification, GPTConfig
    from tinygrad_llm.tokenizer import get_tokenizer, load_tokenizer, with_bert_tokens

    trainable = args.trainable or "all"
    if args.init_from is None:
        tokenizer = with_bert_tokens(get_tokenizer(args.tokenizer))
        max_length = BertSpamDataset(*splits["train"], tokenizer, max_length=args.max_length).max_length
        overrides = size_overrides(args)
        preset = args.preset or args.default_preset
        shape = GPTConfig.preset(preset, vocab_size=tokenizer.n_vocab, context_length=max_length, **overrides)
        config = BertConfig.from_gpt_config(shape, pad_token_id=tokenizer.pad_id, num_labels=len(CLASS_NAMES))
        described = f"a fresh BERT of the {preset} size (from scratch)"
        model = BertForSequenceClassification(config)
    else:
        source = Path(args.init_from)
        if not (source / "tokenizer.json").is_file():
            raise ValueError(
                f"--init-from {source}: no tokenizer.json beside the weights (this library reads BERTs "
                "trained with 'tinygrad-llm train --arch bert'; BERT's WordPiece vocabulary is not "
                "supported)"
            )
        tokenizer = with_bert_tokens(load_tokenizer(source))
        described = f"{source}"
        with warnings.catch_warnings():  # the fresh pooler/classifier is expected here
            warnings.simplefilter("ignore")
            model = BertForSequenceClassification.from_pretrained(source).train()
        apply_dropout(model, args.dropout)
    set_trainable_bert(model, trainable)
    if args.init_from is not None:
        check_max_length(args.max_length, model.config.max_position_embeddings, "the BERT's positions")
        longest = BertSpamDataset(*splits["train"], tokenizer, max_length=args.max_length).max_length
        max_length = min(longest, model.config.max_position_embeddings)  # never past the positions it has
    datasets = tuple(
        BertSpamDataset(*splits[name], tokenizer, max_length=max_length) for name in ("train", "validation", "test")
    )
    return _train_classifier(args, out, model, tokenizer, described, trainable, datasets, max_length)


def _train_classifier(args, out: Path, model, tokenizer, described, trainable, datasets, max_length) -> dict | None:
    """Train, evaluate and save a classifier of either half (``model``, its head on): the rest of
    finetune-classifier."""
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.files import write_json
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.finetune.io import save_finetuned
    from tinygrad_llm.finetune.lora import merge_lora
    from tinygrad_llm.finetune.spam_data import CLASS_NAMES

    train_set, val_set, test_set = datasets
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if not args.ema_decay < 1:
        raise ValueError(f"--ema-decay must be below 1 (0 turns the average off), got {args.ema_decay}")
    if args.average_from and (args.average_from > args.epochs or args.patience or args.ema_decay):
        raise ValueError(
            f"--average-from {args.average_from} must be an epoch of the {args.epochs} (--epochs) and "
            "does not combine with --patience or --ema-decay (it averages the last epochs instead of "
            "choosing one)"
        )
    batch = args.batch_size * args.comm.world_size  # --batch-size is per process: each takes its rows
    val_loader = DataLoader(val_set, batch_size=batch, drop_last=False)
    test_loader = DataLoader(test_set, batch_size=batch, drop_last=False)
    meta = {
        "task": "classification",
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "max_length": max_length,
        "pad_token_id": train_set.pad_token_id,
    }
    lora = apply_lora(args, model)
    counts = parameter_counts(model)  # before any merge

    start = time.perf_counter()
    # one bar for every epoch, its ETA the job's; its lines go above the bar
    bar = Progress(args.epochs * (len(train_set) // batch), args.log, enabled=args.comm.is_root)
    log = bar.write if args.comm.is_root else args.log
    with (
        contextlib.closing(bar),
        saved_if_interrupted(
            out, lambda: (model, meta), tokenizer, lambda: lora, write=args.comm.is_root, log=args.log
        ),
    ):
        log(
            f"fine-tuning {described} as a {len(CLASS_NAMES)}-class classifier ({trainable}"
            f"{', LoRA rank %d' % lora['rank'] if lora else ''}): {counts['trainable_parameters']:,} "
            f"of {counts['total_parameters']:,} parameters trainable; {len(train_set)} / "
            f"{len(val_set)} / {len(test_set)} messages of {max_length} tokens"
            f"{describe_processes(args.comm, args.batch_size)} -> {out}"
        )
        selection = _train_one(args, model, train_set, val_loader, batch, bar, log)
        if lora:
            merge_lora(model)  # a plain model: W + scale * (A B)^T
    train_s = time.perf_counter() - start
    if not args.comm.is_root:
        return None  # process 0 scores the model and writes it
    model.eval()
    metrics = {}
    train_loader = DataLoader(train_set, batch_size=batch, drop_last=False)
    for name, loader in (("train", train_loader), ("val", val_loader), ("test", test_loader)):
        metrics[f"{name}_accuracy"], metrics[f"{name}_loss"] = C.calc_accuracy_and_loss_loader(
            loader, model, args.device
        )
    metrics.update(
        counts,
        epochs=args.epochs,
        patience=args.patience,
        epochs_run=selection["epochs_run"],
        best_epoch=selection["best_epoch"],
        val_accuracy_per_epoch=selection["val_accuracy"],
        average_from=args.average_from or None,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        ema_decay=args.ema_decay,
        batch_size=args.batch_size,
        max_length=max_length,
        trainable=trainable,
        lora=lora,
        seed=args.seed,
        split_seed=args.seed if args.split_seed is None else args.split_seed,
        train_seconds=round(train_s, 1),
        init_from=args.init_from,
        config=model.config.to_dict(),
    )
    save_finetuned(out, model, tokenizer, meta)
    write_json(out / "metrics.json", metrics)
    return metrics


def _train_one(args, model, train_set, val_loader, batch: int, bar: Progress, log) -> dict:
    """Train the classifier (its batches shuffled from --seed); returns its selection."""
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.optim import AdamW, WarmupCosineLR
    from tinygrad_llm.train.parallel import DataParallel

    if args.device:
        model.to(args.device)
    optimizer = AdamW(C.trainable_parameters(model), lr=args.lr, weight_decay=args.weight_decay)
    parallel = DataParallel(args.comm, model, optimizer)
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    scheduler = None
    if args.lr_schedule == "cosine":
        total_steps = args.epochs * len(train_loader)
        if args.warmup_steps >= total_steps:
            raise ValueError(f"--warmup-steps {args.warmup_steps} must be below the run's {total_steps} steps")
        scheduler = WarmupCosineLR(optimizer, warmup_steps=args.warmup_steps, total_steps=total_steps)
    return C.train_classifier(
        model,
        train_loader,
        val_loader,
        optimizer,
        args.device,
        max_epochs=args.epochs,
        patience=args.patience or None,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        log=log,
        parallel=parallel,
        precision=args.precision,
        scheduler=scheduler,
        ema_decay=args.ema_decay or None,
        average_from=args.average_from or None,
        bar=bar,
    )


# ---- instruction fine-tuning (chapter 7) --------------------------------------------------------------------


@dataclasses.dataclass
class InstructRecipe:
    """What ``finetune_instruct`` trains: the fields of ``tinygrad-llm finetune-instruct``'s flags (see its --help
    for each). None takes the default: the model's own, lr 5e-5 with ``init_from`` and 1e-3 from scratch."""

    data: str | None = None  # the instruction JSON (default: $TINYGRAD_LLM_DATA/instruction-data.json)
    init_from: str | None = None
    preset: str | None = None
    tokenizer: str | None = None
    emb_dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    dropout: float | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps (within epochs)
    lr: float | None = None
    weight_decay: float = 0.1
    batch_size: int = 8
    max_length: int | None = None
    mask_inputs: bool = False
    eval_freq: int = 5
    eval_iter: int = 5
    max_new_tokens: int = 256
    max_test: int | None = None
    judge_url: str | None = None
    judge_model: str = "llama3"
    judge_timeout: int = 60
    seed: int = 123
    device: str | None = None
    precision: str = "fp32"


def finetune_instruct(
    recipe: InstructRecipe, out: str | os.PathLike, comm: Communicator | None = None, log: Log = log_stderr
) -> dict | None:
    """Fine-tune a GPT on Alpaca-style records (split 85/5/10 in file order), answer the test instructions and
    score them (offline metrics; an Ollama-compatible judge with ``judge_url``), and save the model, its tokenizer,
    the responses and metrics.json into the folder ``out``. Returns the metrics (None on a process other than 0).
    """
    from tinygrad_llm.dist import SingleProcess

    args = types.SimpleNamespace(**dataclasses.asdict(recipe), comm=comm or SingleProcess(), log=log)
    return run_instruct_recipe(args, Path(out))


def run_instruct_recipe(args: Args, out: Path) -> dict | None:
    """finetune_instruct on a namespace of the recipe's fields plus ``comm`` and ``log`` (the CLI's args)."""
    import tinygrad_llm as tl
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.files import require_data_file, write_json
    from tinygrad_llm.finetune import instruction as I
    from tinygrad_llm.finetune.io import save_finetuned
    from tinygrad_llm.finetune.judge import OllamaJudge, score_responses
    from tinygrad_llm.finetune.lora import merge_lora
    from tinygrad_llm.optim import AdamW, param_groups_for_weight_decay
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.simple import evaluate_model

    args.default_preset = "small-cpu"
    args.tokenizer = args.tokenizer or "gpt2"
    data_path = args.data or require_data_file("instruction-data.json")
    data = I.load_instruction_data(data_path)
    train_data, test_data, val_data = I.split_instruction_data(data)
    if args.max_test is not None:
        test_data = test_data[: args.max_test]
    judge = None
    if args.judge_url:
        judge = OllamaJudge(model=args.judge_model, url=args.judge_url, timeout=args.judge_timeout)
        judge.check()  # fail now, not after training
    tl.manual_seed(args.seed)
    model, tokenizer, described = load_start_model(args)
    require_end_of_text(tokenizer, args.init_from, "finetune-instruct")
    lora = apply_lora(args, model)
    if args.device:
        model.to(args.device)
    allowed = check_max_length(args.max_length, model.config.context_length)
    datasets = [
        I.InstructionDataset(d, tokenizer, allowed_max_length=allowed, mask_inputs=args.mask_inputs)
        for d in (train_data, val_data)
    ]
    check_usable_records(
        len(datasets[0].records_without_response()),
        len(datasets[0]),
        f"keep no response token within the {allowed} tokens of --max-length (the prompt fills them"
        f"{'; --mask-inputs masks the prompt' if args.mask_inputs else ''})",
        f"raise --max-length (the model's context is {model.config.context_length}) or shorten the records",
        args.log,
    )
    batch = args.batch_size * args.comm.world_size  # --batch-size is per process: each takes its rows
    train_loader = DataLoader(datasets[0], batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    val_loader = DataLoader(datasets[1], batch_size=batch, drop_last=False)
    lr = args.lr if args.lr is not None else (5e-5 if args.init_from else 1e-3)
    if lr <= 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    optimizer = AdamW(param_groups_for_weight_decay(model, args.weight_decay), lr=lr)
    parallel = DataParallel(args.comm, model, optimizer)
    counts = parameter_counts(model)
    args.log(
        f"instruction fine-tuning {described}{' with LoRA rank %d' % lora['rank'] if lora else ''}: "
        f"{counts['trainable_parameters']:,} of {counts['total_parameters']:,} parameters trainable; "
        f"{len(train_data)} / {len(val_data)} / {len(test_data)} train/val/test records"
        f"{describe_processes(args.comm, args.batch_size)} -> {out}"
    )

    start = time.perf_counter()
    steps = (
        args.epochs * len(train_loader)
        if args.max_steps is None
        else min(args.max_steps, args.epochs * len(train_loader))
    )
    bar = Progress(steps, args.log, enabled=args.comm.is_root)
    with (
        contextlib.closing(bar),
        saved_if_interrupted(
            out,
            lambda: (model, {"task": "instruction", "prompt_format": "alpaca"}),
            tokenizer,
            lambda: lora,
            write=args.comm.is_root,
            log=args.log,
        ),
    ):
        train_losses, val_losses, _ = I.train_instruction_model(
            model,
            train_loader,
            val_loader,
            optimizer,
            args.device,
            num_epochs=args.epochs,
            eval_freq=args.eval_freq,
            eval_iter=args.eval_iter,
            start_context=I.format_input(val_data[0]),
            tokenizer=tokenizer,
            parallel=parallel,
            precision=args.precision,
            bar=bar,
            max_steps=args.max_steps,
        )
    train_s = time.perf_counter() - start
    train_loss, val_loss = evaluate_model(
        model, train_loader, val_loader, args.device, args.eval_iter, parallel=parallel
    )
    if not args.comm.is_root:
        return None  # process 0 answers the test instructions and writes the model
    if lora:
        merge_lora(model)
    args.log(f"answering {len(test_data)} test instructions ...")
    responses = I.generate_test_responses(
        model, tokenizer, test_data, args.max_new_tokens, args.device, progress=sys.stderr.isatty()
    )
    metrics = {"train_loss": train_loss, "val_loss": val_loss, "offline_scores": score_responses(responses)}
    if judge is not None:
        metrics["judge"] = judge.score_entries(responses)
    metrics.update(
        counts,
        epochs=args.epochs,
        lr=lr,
        batch_size=args.batch_size,
        allowed_max_length=allowed,
        mask_inputs=args.mask_inputs,
        lora=lora,
        seed=args.seed,
        train_seconds=round(train_s, 1),
        init_from=args.init_from,
        config=model.config.to_dict(),
        loss_history={"train": train_losses, "val": val_losses},
    )
    save_finetuned(out, model, tokenizer, {"task": "instruction", "prompt_format": "alpaca"})
    I.save_responses(out / "instruction-data-with-response.json", responses)
    write_json(out / "metrics.json", metrics)
    return metrics
