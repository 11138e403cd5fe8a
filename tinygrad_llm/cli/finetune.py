"""``tinygrad-llm finetune-classifier`` and ``finetune-instruct``: chapters 6 and 7 (and appendix E's LoRA).

The starting model is ``--init-from`` (a run folder of ``tinygrad-llm train``, a Hugging Face GPT-2 folder
or name when ``GPTModel.from_pretrained`` can load it) or, with ``--preset``, a fresh model trained from
scratch. Everything the user gave is checked before training starts, and the outputs are written only at
the end, each atomically: an error leaves no partial output. Each command parses its flags into a recipe and
calls one library function (finetune/recipe.py: ``finetune_classifier``, ``finetune_instruct``), then prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tinygrad_llm.cli.common import (
    add_device_argument,
    add_precision_argument,
    finite_float,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)

# The recipes, and the steps the instruction and DPO commands share, are library code (finetune/recipe.py);
# the --help texts name their defaults, and finetune-dpo imports the last two from here.
from tinygrad_llm.finetune.recipe import BERT_SCRATCH, SCRATCH_RECIPE

TOKENIZERS = ("gpt2", "byte")


def ngram_sizes(text: str) -> tuple:
    """--ngram-embeddings: "2,3,4" -> (2, 3, 4); "none" -> () (argparse type)."""
    if text.strip().lower() in ("none", "0", ""):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = None
    if not sizes or min(sizes) < 2 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(
            f"expected distinct n-gram sizes >= 2 separated by commas (e.g. 2,3,4) or 'none', got {text!r}"
        )
    return sizes


def _add_model_arguments(p, default_preset: str) -> None:
    model = p.add_argument_group("starting model")
    start = model.add_mutually_exclusive_group()
    start.add_argument(
        "--init-from",
        metavar="DIR|NAME",
        default=None,
        help="a run folder of 'tinygrad-llm train' (config.json + model.safetensors), or a GPT-2 "
        "folder/name in the Hugging Face layout",
    )
    start.add_argument(
        "--preset",
        default=None,
        help=f"train from scratch with this model size (default {default_preset} when no --init-from)",
    )
    model.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default=None,
        help="tokenizer of a from-scratch model (default: byte for the classifier, gpt2 for "
        "instructions; an --init-from model brings its own)",
    )
    model.add_argument("--emb-dim", type=positive_int, default=None, help="override the preset's width")
    model.add_argument("--n-layers", type=positive_int, default=None, help="override the preset's blocks")
    model.add_argument("--n-heads", type=positive_int, default=None, help="override the preset's heads")
    model.add_argument("--dropout", type=nonnegative_float, default=None, help="dropout rate (default: the model's)")
    lora = p.add_argument_group("LoRA (appendix E)")
    lora.add_argument(
        "--lora-rank",
        type=positive_int,
        default=None,
        help="freeze the model and train rank-r adapters on every Linear instead",
    )
    lora.add_argument(
        "--lora-alpha",
        type=finite_float,
        default=None,
        help="adapter scale is alpha / rank (default alpha = rank: scale 1)",
    )


def _add_run_arguments(p) -> None:
    run = p.add_argument_group("run")
    run.add_argument(
        "--seed",
        type=nonnegative_int,
        default=123,
        help="seed of the split, initialisation and shuffling (default 123)",
    )
    add_device_argument(run)
    add_precision_argument(run)
    add_out_arguments(run)


def add_out_arguments(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--out and --overwrite of the fine-tuning commands (checked and claimed by ``claimed``)."""
    group.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the fine-tuned model and results (new or empty, unless --overwrite)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out that is not empty, replacing its files of the same names",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune-classifier",
        help="fine-tune a GPT into a spam classifier (chapter 6)",
        description="Train a GPT to classify SMS messages as ham or spam (the SMS Spam Collection, balanced, "
        "split 70/10/20), reading the class off the last token. Writes the model, tokenizer.json, "
        "finetune.json and metrics.json (train/val/test accuracy and loss) into --out.",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="the SMSSpamCollection file (label<TAB>text) or its folder (default: $TINYGRAD_LLM_DATA/"
        "sms_spam_collection, else download from UCI)",
    )
    _add_model_arguments(p, "tiny")
    p.add_argument(
        "--ngram-embeddings",
        dest="ngram_sizes",
        type=ngram_sizes,
        default=None,
        metavar="SIZES",
        help="a from-scratch GPT's hashed n-gram embeddings, added to each byte's: the sizes, e.g. 2,3,4, "
        "or none (default 2,3,4 from scratch; a pretrained model keeps its architecture)",
    )
    p.add_argument(
        "--ngram-buckets",
        type=positive_int,
        default=None,
        help=f"rows of each n-gram table (default {SCRATCH_RECIPE['ngram_buckets']})",
    )
    p.add_argument(
        "--arch",
        choices=("gpt", "bert"),
        default="gpt",
        help="gpt: the decoder, reading the class off the last token (the book); bert: the encoder, "
        "reading it off [CLS] with the padding masked (from scratch: --preset's size, the tokenizer "
        "plus [PAD]/[CLS]/[SEP]/[MASK]; or --init-from a 'train --arch bert' run)",
    )
    train = p.add_argument_group("training")
    train.add_argument(
        "--trainable",
        default=None,
        help="last-block (the book's: last block + final norm + head), last-N, head or all "
        "(default: last-block with --init-from, all from scratch)",
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the training split (default 5 with --init-from, as the book; "
        f"{SCRATCH_RECIPE['epochs']} from scratch)",
    )
    train.add_argument(
        "--patience",
        type=nonnegative_int,
        default=None,
        help="stop after this many epochs without a better validation accuracy; 0 never stops "
        f"early (default 0; {BERT_SCRATCH['patience']} for --arch bert from scratch). Without "
        "--average-from the weights of the epoch with the best validation accuracy are kept",
    )
    train.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help=f"AdamW learning rate (default 5e-5 with --init-from, {SCRATCH_RECIPE['lr']:g} from scratch, "
        f"{BERT_SCRATCH['lr']:g} for --arch bert from scratch)",
    )
    train.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default=None,
        help="constant (the book's; the default), or linear warmup for --warmup-steps then cosine decay "
        "to 0 over --epochs",
    )
    train.add_argument(
        "--warmup-steps",
        type=nonnegative_int,
        default=None,
        help=f"warmup of the cosine schedule (default {SCRATCH_RECIPE['warmup_steps']} from scratch, 0 "
        "with --init-from)",
    )
    train.add_argument(
        "--ema-decay",
        type=nonnegative_float,
        default=None,
        help="score, choose and save an exponential moving average of the weights, updated after "
        "every step with this decay, e.g. 0.995 (default 0: the raw weights)",
    )
    train.add_argument(
        "--average-from",
        type=nonnegative_int,
        default=None,
        metavar="EPOCH",
        help="stochastic weight averaging: keep the mean of the weights at the end of every epoch from "
        "this one on, instead of choosing an epoch (default from scratch: half of --epochs, "
        "epochs 10-20 of 20; 0: off, the default with --init-from, --patience or --ema-decay)",
    )
    train.add_argument(
        "--split-seed",
        type=nonnegative_int,
        default=None,
        help="seed of the balanced train/validation/test split alone (default: --seed): models of several "
        "--seed on one split, as Hugging Face's data_seed",
    )
    train.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay (default 0.1)")
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"messages per batch (default 8 with --init-from, as the book; "
        f"{SCRATCH_RECIPE['batch_size']} from scratch, {BERT_SCRATCH['batch_size']} for --arch bert from scratch)",
    )
    train.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per message (truncate/pad; default: the longest training message, capped at "
        f"the context length; {SCRATCH_RECIPE['max_length']} from scratch)",
    )
    train.add_argument("--eval-freq", type=positive_int, default=50, help="steps between loss evaluations (default 50)")
    train.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation (default 5)")
    _add_run_arguments(p)
    p.set_defaults(run=claimed(run_finetune_classifier))

    p = sub.add_parser(
        "finetune-instruct",
        help="fine-tune a GPT to follow instructions (chapter 7)",
        description="Train a GPT on Alpaca-style {instruction, input, output} records (split 85/5/10 in file "
        "order), then answer the test instructions into instruction-data-with-response.json and "
        "score them offline (exact match, token F1, ROUGE-L) and, with --judge-url, by an "
        "Ollama-compatible judge model. Writes the model, its tokenizer and metrics.json into --out.",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a JSON list of {instruction, input, output} (default: $TINYGRAD_LLM_DATA/instruction-data.json)",
    )
    _add_model_arguments(p, "small-cpu")
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=2, help="passes over the training split (default 2)")
    train.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help="stop after this many optimizer steps, within --epochs (Hugging Face's max_steps): a quick run",
    )
    train.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help="AdamW learning rate (default 5e-5 with --init-from, 1e-3 from scratch)",
    )
    train.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW weight decay (default 0.1)")
    train.add_argument("--batch-size", type=positive_int, default=8, help="records per batch (default 8)")
    train.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="allowed_max_length: tokens per training sequence, at most the context length (the default)",
    )
    train.add_argument("--mask-inputs", action="store_true", help="no loss on the instruction and input tokens")
    train.add_argument("--eval-freq", type=positive_int, default=5, help="steps between loss evaluations (default 5)")
    train.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation (default 5)")
    score = p.add_argument_group("responses and scoring")
    score.add_argument(
        "--max-new-tokens", type=positive_int, default=256, help="tokens per test response (default 256)"
    )
    score.add_argument("--max-test", type=positive_int, default=None, help="answer only the first N test records")
    score.add_argument(
        "--judge-url",
        default=None,
        metavar="URL",
        help="an Ollama-compatible /api/chat endpoint (e.g. http://localhost:11434/api/chat) to "
        "score responses 0-100, the book's method; checked before training starts",
    )
    score.add_argument("--judge-model", default="llama3", help="the judge's model name (default llama3)")
    score.add_argument("--judge-timeout", type=positive_int, default=60, help="seconds per judge request (default 60)")
    _add_run_arguments(p)
    p.set_defaults(run=claimed(run_finetune_instruct))


# ---- shared steps ---------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def claimed(run: Callable[[argparse.Namespace, Path], int]) -> Callable[[argparse.Namespace], int]:
    """``run(args, out)`` with --out checked, locked and marked first (before any data or model is read).
    Under ``mpiexec -n N`` (data-parallel) process 0 alone claims the folder, prints and writes."""

    def command(args: argparse.Namespace) -> int:
        from tinygrad_llm.cli.common import start_data_parallel
        from tinygrad_llm.cli.preflight import check_finetune
        from tinygrad_llm.run_folder import check_output_path, claim

        args.comm = start_data_parallel(args.device, args.threads)
        if args.comm is None:
            return 0
        check_finetune(args, args.comm)  # sizes and memory against the starting model, before anything is read
        if not args.comm.is_root:
            return run(args, check_output_path(args.out))
        with claim(args.out, args.command, overwrite=args.overwrite) as out:
            return run(args, out)

    return command


# ---- finetune-classifier --------------------------------------------------------------------------------


def run_finetune_classifier(args: argparse.Namespace, out: Path) -> int:
    """The flags as a ClassifierRecipe, trained by the library (finetune.recipe); the summary line printed."""
    import dataclasses

    from tinygrad_llm.finetune.recipe import ClassifierRecipe, finetune_classifier

    recipe = ClassifierRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ClassifierRecipe)})
    metrics = finetune_classifier(recipe, out, comm=args.comm, log=log)
    if metrics is None:
        return 0  # not process 0: it neither scores nor writes
    chosen = (
        f"epochs {metrics['average_from']}-{metrics['epochs']} averaged"
        if metrics["average_from"]
        else f"epoch {metrics['best_epoch']} of {metrics['epochs_run']}"
    )
    log(
        f"accuracy ({chosen}): train {metrics['train_accuracy'] * 100:.2f}% | "
        f"val {metrics['val_accuracy'] * 100:.2f}% | test {metrics['test_accuracy'] * 100:.2f}% "
        f"({metrics['train_seconds']:.0f}s training); saved to {out}"
    )
    return 0


# ---- finetune-instruct ----------------------------------------------------------------------------------


def run_finetune_instruct(args: argparse.Namespace, out: Path) -> int:
    """The flags as an InstructRecipe, trained and scored by the library (finetune.recipe); the summary printed."""
    import dataclasses

    from tinygrad_llm.finetune.recipe import InstructRecipe, finetune_instruct

    recipe = InstructRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(InstructRecipe)})
    metrics = finetune_instruct(recipe, out, comm=args.comm, log=log)
    if metrics is None:
        return 0  # not process 0: it neither answers nor writes
    scores = metrics["offline_scores"]
    log(
        f"train loss {metrics['train_loss']:.3f}, val loss {metrics['val_loss']:.3f}; test responses: token F1 "
        f"{scores['token_f1']:.3f}, ROUGE-L {scores['rouge_l']:.3f}, exact match {scores['exact_match']:.3f}"
        + (f", judge {metrics['judge']['average']:.1f}/100" if "judge" in metrics else "")
        + f"; saved to {out}"
    )
    return 0
