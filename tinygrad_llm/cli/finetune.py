"""``tinygrad-llm finetune-classifier`` and ``finetune-instruct``: chapters 6 and 7 (and appendix E's LoRA).

The starting model is ``--init-from`` (a run folder of ``tinygrad-llm train``, a Hugging Face GPT-2 folder
or name when ``GPTModel.from_pretrained`` can load it) or, with ``--preset``, a fresh model trained from
scratch. Everything the user gave is checked before training starts, and the outputs are written only at
the end, each atomically: an error leaves no partial output.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from tinygrad_llm.cli.common import (add_device_argument, add_precision_argument, describe_processes, finite_float,
                                     nonnegative_float, nonnegative_int, positive_int)

TOKENIZERS = ("gpt2", "byte")
# The classifier trained from scratch (no pretrained weights): bytes generalise better than GPT-2's 50,257
# ids on 1,045 messages; hashed 2-, 3- and 4-gram embeddings (nn/ngram.py) hand the model the byte n-grams
# it otherwise has to learn at every position; batches of 32 give steadier steps; dropout 0.1; the weights
# of epochs 10-20 averaged (stochastic weight averaging) rather than the epoch that happened to score best on
# 149 validation messages; three such models from three seeds, their probabilities averaged (an ensemble).
# Each choice was measured across the seeds 1-5 (RESULTS.md, with what did not help: a cosine schedule, an
# exponential moving average, other readouts, augmentation, a larger model).
SCRATCH_RECIPE = {"tokenizer": "byte", "max_length": 160, "dropout": 0.1, "batch_size": 32, "epochs": 20,
                  "patience": 0, "lr": 1e-3, "lr_schedule": "constant", "warmup_steps": 50, "ema_decay": 0.0,
                  "ngram_sizes": (2, 3, 4), "ngram_buckets": 2048,
                  "average_from": None, "ensemble": 3}  # average_from None: the second half of --epochs
# BERT from scratch keeps the recipe it was measured with: one model, the best validation epoch, patience 5.
BERT_SCRATCH = {"ngram_sizes": (), "average_from": 0, "ensemble": 1, "patience": 5}


def ngram_sizes(text: str) -> tuple:
    """--ngram-embeddings: "2,3,4" -> (2, 3, 4); "none" -> () (argparse type)."""
    if text.strip().lower() in ("none", "0", ""):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = None
    if not sizes or min(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"expected distinct n-gram sizes >= 2 separated by commas (e.g. 2,3,4) or "
                                         f"'none', got {text!r}")
    return sizes


def _add_model_arguments(p, default_preset: str) -> None:
    model = p.add_argument_group("starting model")
    start = model.add_mutually_exclusive_group()
    start.add_argument("--init-from", metavar="DIR|NAME", default=None,
                       help="a run folder of 'tinygrad-llm train' (config.json + model.safetensors), or a GPT-2 "
                            "folder/name in the Hugging Face layout")
    start.add_argument("--preset", default=None,
                       help=f"train from scratch with this model size (default {default_preset} when no --init-from)")
    model.add_argument("--tokenizer", choices=TOKENIZERS, default=None,
                       help="tokenizer of a from-scratch model (default: byte for the classifier, gpt2 for "
                            "instructions; an --init-from model brings its own)")
    model.add_argument("--emb-dim", type=positive_int, default=None, help="override the preset's width")
    model.add_argument("--n-layers", type=positive_int, default=None, help="override the preset's blocks")
    model.add_argument("--n-heads", type=positive_int, default=None, help="override the preset's heads")
    model.add_argument("--dropout", type=nonnegative_float, default=None, help="dropout rate (default: the model's)")
    lora = p.add_argument_group("LoRA (appendix E)")
    lora.add_argument("--lora-rank", type=positive_int, default=None,
                      help="freeze the model and train rank-r adapters on every Linear instead")
    lora.add_argument("--lora-alpha", type=finite_float, default=None,
                      help="adapter scale is alpha / rank (default alpha = rank: scale 1)")


def _add_run_arguments(p) -> None:
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=nonnegative_int, default=123,
                     help="seed of the split, initialisation and shuffling (default 123)")
    add_device_argument(run)
    add_precision_argument(run)
    add_out_arguments(run)


def add_out_arguments(group) -> None:
    """--out and --overwrite of the fine-tuning commands (checked and claimed by ``_claimed``)."""
    group.add_argument("--out", required=True, metavar="DIR", help="folder for the fine-tuned model and results "
                                                                   "(new or empty, unless --overwrite)")
    group.add_argument("--overwrite", action="store_true",
                       help="write into an --out that is not empty, replacing its files of the same names")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "finetune-classifier", help="fine-tune a GPT into a spam classifier (chapter 6)",
        description="Train a GPT to classify SMS messages as ham or spam (the SMS Spam Collection, balanced, "
                    "split 70/10/20), reading the class off the last token. Writes the model, tokenizer.json, "
                    "finetune.json and metrics.json (train/val/test accuracy and loss) into --out.")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="the SMSSpamCollection file (label<TAB>text) or its folder (default: $TINYGRAD_LLM_DATA/"
                        "sms_spam_collection, else download from UCI)")
    _add_model_arguments(p, "tiny")
    p.add_argument("--ngram-embeddings", dest="ngram_sizes", type=ngram_sizes, default=None, metavar="SIZES",
                   help="a from-scratch GPT's hashed n-gram embeddings, added to each byte's: the sizes, e.g. 2,3,4, "
                        "or none (default 2,3,4 from scratch; a pretrained model keeps its architecture)")
    p.add_argument("--ngram-buckets", type=positive_int, default=None,
                   help=f"rows of each n-gram table (default {SCRATCH_RECIPE['ngram_buckets']})")
    p.add_argument("--arch", choices=("gpt", "bert"), default="gpt",
                   help="gpt: the decoder, reading the class off the last token (the book); bert: the encoder, "
                        "reading it off [CLS] with the padding masked (from scratch: --preset's size, the tokenizer "
                        "plus [PAD]/[CLS]/[SEP]/[MASK]; or --init-from a 'train --arch bert' run)")
    train = p.add_argument_group("training")
    train.add_argument("--trainable", default=None,
                       help="last-block (the book's: last block + final norm + head), last-N, head or all "
                            "(default: last-block with --init-from, all from scratch)")
    train.add_argument("--epochs", type=positive_int, default=None,
                       help="passes over the training split (default 5 with --init-from, as the book; "
                            f"{SCRATCH_RECIPE['epochs']} from scratch)")
    train.add_argument("--patience", type=nonnegative_int, default=None,
                       help="stop after this many epochs without a better validation accuracy; 0 never stops "
                            f"early (default 0; {BERT_SCRATCH['patience']} for --arch bert from scratch). Without "
                            "--average-from the weights of the epoch with the best validation accuracy are kept")
    train.add_argument("--lr", type=finite_float, default=None, help="AdamW learning rate (default 5e-5 with "
                                                                     f"--init-from, {SCRATCH_RECIPE['lr']:g} from scratch)")
    train.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                       help="constant (the book's; the default), or linear warmup for --warmup-steps then cosine decay "
                            "to 0 over --epochs")
    train.add_argument("--warmup-steps", type=nonnegative_int, default=None,
                       help=f"warmup of the cosine schedule (default {SCRATCH_RECIPE['warmup_steps']} from scratch, 0 "
                            "with --init-from)")
    train.add_argument("--ema-decay", type=nonnegative_float, default=None,
                       help="score, choose and save an exponential moving average of the weights, updated after "
                            "every step with this decay, e.g. 0.995 (default 0: the raw weights)")
    train.add_argument("--average-from", type=nonnegative_int, default=None, metavar="EPOCH",
                       help="stochastic weight averaging: keep the mean of the weights at the end of every epoch from "
                            "this one on, instead of choosing an epoch (default from scratch: half of --epochs, "
                            "epochs 10-20 of 20; 0: off, the default with --init-from, --patience or --ema-decay)")
    train.add_argument("--ensemble", type=positive_int, default=None, metavar="K",
                       help="train K classifiers with the seeds --seed, --seed + 1000, ... and save them together; "
                            "they answer with their mean class probability (default "
                            f"{SCRATCH_RECIPE['ensemble']} from scratch, 1 with --init-from)")
    train.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay (default 0.1)")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help=f"messages per batch (default 8 with --init-from, as the book; "
                            f"{SCRATCH_RECIPE['batch_size']} from scratch)")
    train.add_argument("--max-length", type=positive_int, default=None,
                       help="tokens per message (truncate/pad; default: the longest training message, capped at "
                            f"the context length; {SCRATCH_RECIPE['max_length']} from scratch)")
    train.add_argument("--eval-freq", type=positive_int, default=50, help="steps between loss evaluations (default 50)")
    train.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation (default 5)")
    _add_run_arguments(p)
    p.set_defaults(run=_claimed(run_finetune_classifier))

    p = sub.add_parser(
        "finetune-instruct", help="fine-tune a GPT to follow instructions (chapter 7)",
        description="Train a GPT on Alpaca-style {instruction, input, output} records (split 85/5/10 in file "
                    "order), then answer the test instructions into instruction-data-with-response.json and "
                    "score them offline (exact match, token F1, ROUGE-L) and, with --judge-url, by an "
                    "Ollama-compatible judge model. Writes the model, its tokenizer and metrics.json into --out.")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="a JSON list of {instruction, input, output} "
                        "(default: $TINYGRAD_LLM_DATA/instruction-data.json)")
    _add_model_arguments(p, "small-cpu")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=2, help="passes over the training split (default 2)")
    train.add_argument("--lr", type=finite_float, default=None, help="AdamW learning rate (default 5e-5 with "
                                                                     "--init-from, 1e-3 from scratch)")
    train.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay (default 0.1)")
    train.add_argument("--batch-size", type=positive_int, default=8, help="records per batch (default 8)")
    train.add_argument("--max-length", type=positive_int, default=None,
                       help="allowed_max_length: tokens per training sequence (default: the context length)")
    train.add_argument("--mask-inputs", action="store_true", help="no loss on the instruction and input tokens")
    train.add_argument("--eval-freq", type=positive_int, default=5, help="steps between loss evaluations (default 5)")
    train.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation (default 5)")
    score = p.add_argument_group("responses and scoring")
    score.add_argument("--max-new-tokens", type=positive_int, default=256,
                       help="tokens per test response (default 256)")
    score.add_argument("--max-test", type=positive_int, default=None, help="answer only the first N test records")
    score.add_argument("--judge-url", default=None, metavar="URL",
                       help="an Ollama-compatible /api/chat endpoint (e.g. http://localhost:11434/api/chat) to "
                            "score responses 0-100, the book's method; checked before training starts")
    score.add_argument("--judge-model", default="llama3", help="the judge's model name (default llama3)")
    score.add_argument("--judge-timeout", type=positive_int, default=60, help="seconds per judge request (default 60)")
    _add_run_arguments(p)
    p.set_defaults(run=_claimed(run_finetune_instruct))


# ---- shared steps ---------------------------------------------------------------------------------------

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_start_model(args, context_length: int | None = None):
    """(model, tokenizer, description): from --init-from, or a fresh --preset model for --tokenizer."""
    from tinygrad_llm.model import GPTConfig, GPTModel, NgramGPTConfig, NgramGPTModel
    from tinygrad_llm.tokenizer import get_tokenizer

    overrides = {k: v for k, v in (("emb_dim", args.emb_dim), ("n_layers", args.n_layers), ("n_heads", args.n_heads),
                                   ("drop_rate", args.dropout)) if v is not None}
    if args.init_from is None:
        tokenizer = get_tokenizer(args.tokenizer)
        preset = args.preset or args.default_preset
        overrides = {"vocab_size": tokenizer.n_vocab, **overrides}
        if context_length is not None:
            overrides["context_length"] = context_length
        if getattr(args, "ngram_sizes", None):  # finetune-classifier's hashed n-gram embeddings: their own GPT
            config = NgramGPTConfig.preset(preset, **overrides, ngram_sizes=args.ngram_sizes,
                                           ngram_buckets=args.ngram_buckets)
            ngrams = "/".join(map(str, config.ngram_sizes))
            return NgramGPTModel(config), tokenizer, f"a fresh {preset} model (from scratch, hashed {ngrams}-grams)"
        config = GPTConfig.preset(preset, **overrides)
        return GPTModel(config), tokenizer, f"a fresh {preset} model (from scratch)"
    if Path(args.init_from).is_dir():  # a run folder or a Hugging Face folder: config, weights and tokenizer
        from tinygrad_llm.cli.common import load_model_and_tokenizer  # checked together

        model, tokenizer = load_model_and_tokenizer(Path(args.init_from), None)
        _apply_dropout(model, overrides.get("drop_rate"))
        return model, tokenizer, f"{args.init_from}"
    model = GPTModel.from_pretrained(args.init_from, drop_rate=overrides.get("drop_rate"))
    return model, get_tokenizer("gpt2"), f"{args.init_from}"


def _apply_dropout(model, rate) -> None:
    if rate is None:
        return
    from tinygrad_llm.nn import Dropout

    model.config.drop_rate = rate
    for module in model.modules():
        if isinstance(module, Dropout):
            module.p = rate


def _apply_lora(args, model) -> dict | None:
    if args.lora_alpha is not None and args.lora_rank is None:
        raise ValueError("--lora-alpha needs --lora-rank")
    if args.lora_rank is None:
        return None
    from tinygrad_llm.finetune.lora import freeze, replace_linear_with_lora

    alpha = args.lora_alpha if args.lora_alpha is not None else float(args.lora_rank)
    freeze(model)
    replace_linear_with_lora(model, rank=args.lora_rank, alpha=alpha)
    return {"rank": args.lora_rank, "alpha": alpha, "scale": alpha / args.lora_rank}


def _claimed(run):
    """``run(args, out)`` with --out checked, locked and marked first (before any data or model is read).
    Under ``mpiexec -n N`` (data-parallel) process 0 alone claims the folder, prints and writes."""
    def command(args) -> int:
        from tinygrad_llm.cli.common import start_data_parallel
        from tinygrad_llm.run_folder import check_output_path, claim

        args.comm = start_data_parallel(args.device, args.threads)
        if args.comm is None:
            return 0
        if not args.comm.is_root:
            return run(args, check_output_path(args.out))
        with claim(args.out, args.command, overwrite=args.overwrite) as out:
            return run(args, out)

    return command


@contextlib.contextmanager
def _saved_if_interrupted(out: Path, snapshot, tokenizer, lora, write: bool = True):
    """Ctrl-C (or SIGTERM) during training saves the model as it is, usable, before the command ends.
    ``snapshot()`` gives (model, finetune.json's metadata) at that moment, ``lora()`` whether its LoRA
    adapters are still to merge (``write``: this process writes; with several, process 0 alone)."""
    try:
        yield
    except KeyboardInterrupt:
        if not write:
            raise
        from tinygrad_llm.finetune.io import save_finetuned
        from tinygrad_llm.finetune.lora import merge_lora

        model, meta = snapshot()
        model.eval()
        if lora():
            merge_lora(model)
        save_finetuned(out, model, tokenizer, {**meta, "interrupted": True})
        _log(f"interrupted: saved the model as it was, part-way through training, to {out} (finetune.json says "
             f"\"interrupted\"); it is usable as it is, or run the command again with --overwrite to train fully")
        raise


def _counts(model) -> dict:
    return {"trainable_parameters": model.num_parameters(trainable_only=True),
            "total_parameters": model.num_parameters()}


# ---- finetune-classifier --------------------------------------------------------------------------------

def _resolve_classifier_defaults(args) -> None:
    """The book's settings with --init-from; the measured from-scratch recipe otherwise (SCRATCH_RECIPE)."""
    if (args.init_from is not None or args.arch == "bert") and (args.ngram_sizes or args.ngram_buckets):
        raise ValueError("--ngram-embeddings and --ngram-buckets are for a GPT trained from scratch (without "
                         "--init-from or --arch bert): they add tables a pretrained model or BERT does not have")
    if args.init_from is not None:
        defaults = {"epochs": 5, "batch_size": 8, "patience": 0, "lr": 5e-5, "lr_schedule": "constant",
                    "warmup_steps": 0, "ema_decay": 0.0, "average_from": 0, "ensemble": 1}
    else:
        defaults = dict(SCRATCH_RECIPE, **(BERT_SCRATCH if args.arch == "bert" else {}))
    if args.average_from is None and (args.patience is not None or args.ema_decay):
        args.average_from = 0  # choosing an epoch (or averaging every step) was asked for: no epoch average
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.average_from is None:  # the second half of the epochs: 10-20 of 20
        args.average_from = max(1, args.epochs // 2)



def run_finetune_classifier(args, out: Path) -> int:
    import tinygrad_llm as tl
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.finetune.spam_data import (CLASS_NAMES, SpamDataset, create_balanced_dataset, find_spam_file,
                                                 random_split, read_sms_spam)

    args.default_preset = "tiny"
    _resolve_classifier_defaults(args)
    texts, labels = read_sms_spam(find_spam_file(args.data))
    texts, labels = create_balanced_dataset(texts, labels, seed=args.seed)
    splits = random_split(texts, labels, 0.7, 0.1, seed=args.seed)
    tl.manual_seed(args.seed)
    if args.arch == "bert":
        return _finetune_bert_classifier(args, out, splits)

    if args.init_from is None:  # the context of a fresh model is the message length
        from tinygrad_llm.tokenizer import get_tokenizer

        probe = SpamDataset(*splits["train"], get_tokenizer(args.tokenizer), max_length=args.max_length)
        model, tokenizer, described = load_start_model(args, context_length=probe.max_length)
    else:
        model, tokenizer, described = load_start_model(args)
    train_set = SpamDataset(*splits["train"], tokenizer, max_length=args.max_length)
    max_length = min(train_set.max_length, model.config.context_length)  # never past the context
    if max_length != train_set.max_length:
        train_set = SpamDataset(*splits["train"], tokenizer, max_length=max_length)
    val_set = SpamDataset(*splits["validation"], tokenizer, max_length=max_length)
    test_set = SpamDataset(*splits["test"], tokenizer, max_length=max_length)

    trainable = args.trainable or ("last-block" if args.init_from else "all")

    def with_head(model):
        C.add_classification_head(model, num_classes=len(CLASS_NAMES))
        return C.set_trainable(model, trainable)

    def new_member():  # a further member of an --ensemble: the same start, its own draws
        return with_head(load_start_model(args, context_length=max_length if args.init_from is None else None)[0])

    return _train_classifier(args, out, with_head(model), tokenizer, described, trainable,
                             (train_set, val_set, test_set), max_length, new_member)


def _finetune_bert_classifier(args, out: Path, splits) -> int:
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
        overrides = {k: v for k, v in (("emb_dim", args.emb_dim), ("n_layers", args.n_layers),
                                       ("n_heads", args.n_heads), ("drop_rate", args.dropout)) if v is not None}
        preset = args.preset or args.default_preset
        shape = GPTConfig.preset(preset, vocab_size=tokenizer.n_vocab, context_length=max_length, **overrides)
        config = BertConfig.from_gpt_config(shape, pad_token_id=tokenizer.pad_id, num_labels=len(CLASS_NAMES))
        described = f"a fresh BERT of the {preset} size (from scratch)"

        def start_model():
            return BertForSequenceClassification(config)
    else:
        source = Path(args.init_from)
        if not (source / "tokenizer.json").is_file():
            raise ValueError(f"--init-from {source}: no tokenizer.json beside the weights (this library reads BERTs "
                             "trained with 'tinygrad-llm train --arch bert'; BERT's WordPiece vocabulary is not supported)")
        tokenizer = with_bert_tokens(load_tokenizer(source))
        described = f"{source}"

        def start_model():
            with warnings.catch_warnings():  # the fresh pooler/classifier is expected here
                warnings.simplefilter("ignore")
                model = BertForSequenceClassification.from_pretrained(source).train()
            _apply_dropout(model, args.dropout)
            return model

    def new_member():
        model = start_model()
        set_trainable_bert(model, trainable)
        return model

    model = new_member()
    if args.init_from is not None:
        longest = BertSpamDataset(*splits["train"], tokenizer, max_length=args.max_length).max_length
        max_length = min(longest, model.config.max_position_embeddings)  # never past the positions it has
    datasets = tuple(BertSpamDataset(*splits[name], tokenizer, max_length=max_length)
                     for name in ("train", "validation", "test"))
    return _train_classifier(args, out, model, tokenizer, described, trainable, datasets, max_length, new_member)


def _train_classifier(args, out: Path, model, tokenizer, described, trainable, datasets, max_length,
                      new_member) -> int:
    """Train, evaluate and save a classifier of either half: the rest of finetune-classifier. ``model`` is the
    first member, ``new_member()`` builds each further one of an --ensemble (after its own seed is set)."""
    import tinygrad_llm as tl
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.finetune.ensemble import ClassifierEnsemble
    from tinygrad_llm.finetune.io import save_finetuned, write_json
    from tinygrad_llm.finetune.lora import merge_lora
    from tinygrad_llm.finetune.spam_data import CLASS_NAMES

    train_set, val_set, test_set = datasets
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if not args.ema_decay < 1:
        raise ValueError(f"--ema-decay must be below 1 (0 turns the average off), got {args.ema_decay}")
    if args.average_from and (args.average_from > args.epochs or args.patience or args.ema_decay):
        raise ValueError(f"--average-from {args.average_from} must be an epoch of the {args.epochs} (--epochs) and "
                         "does not combine with --patience or --ema-decay (it averages the last epochs instead of "
                         "choosing one)")
    batch = args.batch_size * args.comm.world_size  # --batch-size is per process: each takes its rows
    val_loader = DataLoader(val_set, batch_size=batch, drop_last=False)
    test_loader = DataLoader(test_set, batch_size=batch, drop_last=False)
    size = args.ensemble
    meta = {"task": "classification", "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES),
            "max_length": max_length, "pad_token_id": train_set.pad_token_id}
    members, selections, lora, counts = [], [], None, {}

    def snapshot():  # what Ctrl-C saves: the members so far, the one in training last
        saved = members[0] if len(members) == 1 else ClassifierEnsemble(members)
        return saved, {**meta, **({"ensemble_size": len(members)} if len(members) > 1 else {})}

    start = time.perf_counter()
    with _saved_if_interrupted(out, snapshot, tokenizer, lambda: lora, write=args.comm.is_root):
        for k in range(size):
            seed = args.seed + 1000 * k  # member 0 is the single model of --seed, bit for bit
            if k:
                tl.manual_seed(seed)
                model = new_member()
            members.append(model)
            lora = _apply_lora(args, model)
            member_counts = _counts(model)  # before any merge
            counts = {name: counts.get(name, 0) + n for name, n in member_counts.items()}
            _log(f"fine-tuning {described} as a {len(CLASS_NAMES)}-class classifier"
                 f"{f' (member {k + 1} of {size})' if size > 1 else ''} ({trainable}"
                 f"{', LoRA rank %d' % lora['rank'] if lora else ''}): {member_counts['trainable_parameters']:,} of "
                 f"{member_counts['total_parameters']:,} parameters trainable; {len(train_set)} / {len(val_set)} / "
                 f"{len(test_set)} messages of {max_length} tokens{describe_processes(args.comm, args.batch_size)} "
                 f"-> {out}")
            selections.append(_train_member(args, model, train_set, val_loader, batch, seed))
            if lora:
                merge_lora(model)  # a plain model: W + scale * (A B)^T
    train_s = time.perf_counter() - start
    if not args.comm.is_root:
        return 0  # process 0 scores the model and writes it
    model, meta = snapshot()
    model.eval()
    metrics = {}
    train_loader = DataLoader(train_set, batch_size=batch, drop_last=False)
    for name, loader in (("train", train_loader), ("val", val_loader), ("test", test_loader)):
        metrics[f"{name}_accuracy"] = C.calc_accuracy_loader(loader, model, args.device)
        metrics[f"{name}_loss"] = C.calc_loss_loader(loader, model, args.device)
    if size > 1:  # each member alone, beside the ensemble
        metrics["member_test_accuracy"] = [C.calc_accuracy_loader(test_loader, m, args.device) for m in members]
    first = selections[0]
    metrics.update(counts, epochs=args.epochs, patience=args.patience, epochs_run=first["epochs_run"],
                   best_epoch=first["best_epoch"], val_accuracy_per_epoch=first["val_accuracy"],
                   average_from=args.average_from or None, ensemble_size=size,
                   lr=args.lr, lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps, ema_decay=args.ema_decay,
                   batch_size=args.batch_size, max_length=max_length,
                   trainable=trainable, lora=lora, seed=args.seed, train_seconds=round(train_s, 1),
                   init_from=args.init_from, config=model.config.to_dict())
    if size > 1:
        metrics["members"] = [{"seed": args.seed + 1000 * k, "epochs_run": sel["epochs_run"],
                               "best_epoch": sel["best_epoch"], "val_accuracy_per_epoch": sel["val_accuracy"]}
                              for k, sel in enumerate(selections)]
    save_finetuned(out, model, tokenizer, meta)
    write_json(out / "metrics.json", metrics)
    chosen = (f"epochs {args.average_from}-{args.epochs} averaged" if args.average_from
              else f"epoch {first['best_epoch']} of {first['epochs_run']}")
    if size > 1:
        chosen = f"{size} members, each {chosen}"
    _log(f"accuracy ({chosen}): train {metrics['train_accuracy'] * 100:.2f}% | "
         f"val {metrics['val_accuracy'] * 100:.2f}% | test {metrics['test_accuracy'] * 100:.2f}% "
         f"({train_s:.0f}s training); saved to {out}")
    return 0


def _train_member(args, model, train_set, val_loader, batch: int, seed: int) -> dict:
    """Train one classifier (one member of an ensemble) with its own shuffling seed; returns its selection."""
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.finetune import classifier as C
    from tinygrad_llm.optim import AdamW, WarmupCosineLR
    from tinygrad_llm.train.parallel import DataParallel

    if args.device:
        model.to(args.device)
    optimizer = AdamW(C.trainable_parameters(model), lr=args.lr, weight_decay=args.weight_decay)
    parallel = DataParallel(args.comm, model, optimizer)
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, seed=seed)
    scheduler = None
    if args.lr_schedule == "cosine":
        total_steps = args.epochs * len(train_loader)
        if args.warmup_steps >= total_steps:
            raise ValueError(f"--warmup-steps {args.warmup_steps} must be below the run's {total_steps} steps")
        scheduler = WarmupCosineLR(optimizer, warmup_steps=args.warmup_steps, total_steps=total_steps)
    return C.train_classifier(model, train_loader, val_loader, optimizer, args.device, max_epochs=args.epochs,
                              patience=args.patience or None, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
                              log=_log, parallel=parallel, precision=args.precision, scheduler=scheduler,
                              ema_decay=args.ema_decay or None, average_from=args.average_from or None)


# ---- finetune-instruct ----------------------------------------------------------------------------------

def run_finetune_instruct(args, out: Path) -> int:
    import tinygrad_llm as tl
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.files import find_data_file
    from tinygrad_llm.finetune import instruction as I
    from tinygrad_llm.finetune.io import save_finetuned, write_json
    from tinygrad_llm.finetune.judge import OllamaJudge, score_responses
    from tinygrad_llm.finetune.lora import merge_lora
    from tinygrad_llm.optim import AdamW, param_groups_for_weight_decay
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.simple import evaluate_model

    args.default_preset = "small-cpu"
    args.tokenizer = args.tokenizer or "gpt2"
    data_path = args.data or find_data_file("instruction-data.json")
    if data_path is None:
        raise ValueError("--data: give the instruction JSON file (or set TINYGRAD_LLM_DATA to a folder holding "
                         "instruction-data.json)")
    data = I.load_instruction_data(data_path)
    train_data, test_data, val_data = I.split_instruction_data(data)
    if args.max_test is not None:
        test_data = test_data[:args.max_test]
    judge = None
    if args.judge_url:
        judge = OllamaJudge(model=args.judge_model, url=args.judge_url, timeout=args.judge_timeout)
        judge.check()  # fail now, not after training
    tl.manual_seed(args.seed)
    model, tokenizer, described = load_start_model(args)
    if tokenizer.eot_id is None:
        raise ValueError(f"the tokenizer {tokenizer.name!r} has no <|endoftext|> to pad and stop with")
    lora = _apply_lora(args, model)
    if args.device:
        model.to(args.device)
    context = model.config.context_length
    allowed = min(args.max_length or context, context)
    datasets = [I.InstructionDataset(d, tokenizer, allowed_max_length=allowed, mask_inputs=args.mask_inputs)
                for d in (train_data, val_data)]
    batch = args.batch_size * args.comm.world_size  # --batch-size is per process: each takes its rows
    train_loader = DataLoader(datasets[0], batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    val_loader = DataLoader(datasets[1], batch_size=batch, drop_last=False)
    lr = args.lr if args.lr is not None else (5e-5 if args.init_from else 1e-3)
    if lr <= 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    optimizer = AdamW(param_groups_for_weight_decay(model, args.weight_decay), lr=lr)
    parallel = DataParallel(args.comm, model, optimizer)
    counts = _counts(model)
    _log(f"instruction fine-tuning {described}{' with LoRA rank %d' % lora['rank'] if lora else ''}: "
         f"{counts['trainable_parameters']:,} of {counts['total_parameters']:,} parameters trainable; "
         f"{len(train_data)} / {len(val_data)} / {len(test_data)} train/val/test records"
         f"{describe_processes(args.comm, args.batch_size)} -> {out}")

    from tinygrad_llm.train.simple import train_model_simple

    start = time.perf_counter()
    with _saved_if_interrupted(out, lambda: (model, {"task": "instruction", "prompt_format": "alpaca"}), tokenizer,
                               lambda: lora, write=args.comm.is_root):
        train_losses, val_losses, _ = train_model_simple(
            model, train_loader, val_loader, optimizer, args.device, num_epochs=args.epochs, eval_freq=args.eval_freq,
            eval_iter=args.eval_iter, start_context=I.format_input(val_data[0]), tokenizer=tokenizer,
            parallel=parallel, precision=args.precision)
    train_s = time.perf_counter() - start
    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, args.device, args.eval_iter,
                                          parallel=parallel)
    if not args.comm.is_root:
        return 0  # process 0 answers the test instructions and writes the model
    if lora:
        merge_lora(model)
    _log(f"answering {len(test_data)} test instructions ...")
    responses = I.generate_test_responses(model, tokenizer, test_data, args.max_new_tokens, args.device,
                                          progress=sys.stderr.isatty())
    metrics = {"train_loss": train_loss, "val_loss": val_loss, "offline_scores": score_responses(responses)}
    if judge is not None:
        metrics["judge"] = judge.score_entries(responses)
    metrics.update(counts, epochs=args.epochs, lr=lr, batch_size=args.batch_size, allowed_max_length=allowed,
                   mask_inputs=args.mask_inputs, lora=lora, seed=args.seed, train_seconds=round(train_s, 1),
                   init_from=args.init_from, config=model.config.to_dict(),
                   loss_history={"train": train_losses, "val": val_losses})
    save_finetuned(out, model, tokenizer, {"task": "instruction", "prompt_format": "alpaca"})
    I.save_responses(out / "instruction-data-with-response.json", responses)
    write_json(out / "metrics.json", metrics)
    scores = metrics["offline_scores"]
    _log(f"train loss {train_loss:.3f}, val loss {val_loss:.3f}; test responses: token F1 {scores['token_f1']:.3f}, "
         f"ROUGE-L {scores['rouge_l']:.3f}, exact match {scores['exact_match']:.3f}"
         + (f", judge {metrics['judge']['average']:.1f}/100" if judge else "") + f"; saved to {out}")
    return 0
