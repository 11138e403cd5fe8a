"""``tinygrad-llm train``: train a GPT from scratch on a text file, a folder of text, or Python's help texts
(``--arch bert``: a BERT-style encoder by masked-token prediction instead, with the same loop and run folder)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tinygrad_llm.cli.common import (
    HelpFormatter,
    add_device_argument,
    add_precision_argument,
    finite_float,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    start_data_parallel,
)
from tinygrad_llm.train.run import DEFAULTS

if TYPE_CHECKING:
    from tinygrad_llm.train.run import TrainRun

DEFAULT_PRESET = "mini"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a GPT from scratch, then print a sample",
        description="Train a GPT from scratch and save it, with checkpoints to resume from, log.jsonl and "
        "losses.png, in --out. With no --data it trains on Python's own help texts (pydoc_data): "
        "no download needed.",
        formatter_class=HelpFormatter,
    )
    _add_data_and_model_arguments(p)
    _add_optimisation_arguments(p)
    _add_run_arguments(p)
    p.set_defaults(run=run_train)


def _add_data_and_model_arguments(p) -> None:
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="a UTF-8 text file, or a folder of .txt/.md/.rst files (default: Python's help texts)",
    )
    data.add_argument(
        "--tokenizer",
        choices=("char", "byte", "gpt2", "bpe"),
        default=None,
        help="char (the default; gpt2 with --init-from): one token per character; byte: 256 bytes; "
        "gpt2: GPT-2's BPE (needs its files: TINYGRAD_LLM_DATA or network); bpe: train a "
        "byte-level BPE on the data",
    )
    data.add_argument("--vocab-size", type=positive_int, default=1024, help="vocabulary size for --tokenizer bpe")
    data.add_argument(
        "--val-fraction", type=finite_float, default=0.1, help="share of the text held out for validation"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--arch",
        choices=("gpt", "bert"),
        default="gpt",
        help="gpt: the decoder, trained to predict the next token; bert: the encoder, trained to "
        "fill in masked tokens (15%% chosen: 80%% [MASK], 10%% random, 10%% kept), of the "
        "--preset's size, with [PAD]/[CLS]/[SEP]/[MASK] added to the tokenizer",
    )
    model.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help="model size: tiny, mini, small-cpu, gpt2-small, ... (see 'tinygrad-llm info --list')",
    )
    model.add_argument(
        "--init-from",
        default=None,
        metavar="DIR|NAME",
        help="start from pretrained weights and their shape instead of a preset: a Hugging Face "
        "GPT-2 folder, a GPT-2 name (gpt2, gpt2-medium, ...) or a run folder; needs the gpt2 "
        "tokenizer",
    )
    model.add_argument("--n-layers", type=positive_int, help="transformer blocks (overrides the preset)")
    model.add_argument("--n-heads", type=positive_int, help="attention heads (overrides the preset)")
    model.add_argument("--emb-dim", type=positive_int, help="embedding width (overrides the preset)")
    model.add_argument(
        "--context-length", type=positive_int, default=DEFAULTS["context_length"], help="tokens per training window"
    )
    model.add_argument("--dropout", type=nonnegative_float, default=DEFAULTS["dropout"], help="dropout rate")


def _add_optimisation_arguments(p) -> None:
    opt = p.add_argument_group("optimisation")
    opt.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS["batch_size"],
        help="windows per micro-batch (per process under mpiexec, as torch DDP)",
    )
    opt.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    length = opt.add_mutually_exclusive_group()
    length.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help=f"optimizer steps (default {DEFAULTS['max_steps']} unless --epochs)",
    )
    length.add_argument("--epochs", type=positive_int, default=None, help="passes over the training split")
    opt.add_argument("--lr", type=finite_float, default=DEFAULTS["lr"], help="peak learning rate (AdamW)")
    opt.add_argument("--min-lr", type=nonnegative_float, default=None, help="cosine floor (default lr/10)")
    opt.add_argument(
        "--warmup-steps", type=nonnegative_int, default=DEFAULTS["warmup_steps"], help="linear warmup steps"
    )
    opt.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW decay of weight matrices")
    opt.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="global gradient-norm clip (0: off)")


def _add_run_arguments(p) -> None:
    run = p.add_argument_group("run")
    run.add_argument(
        "--eval-interval",
        type=positive_int,
        default=DEFAULTS["eval_interval"],
        help="steps between evaluations and checkpoints",
    )
    run.add_argument("--eval-iters", type=positive_int, default=DEFAULTS["eval_iters"], help="batches per evaluation")
    run.add_argument("--seed", type=nonnegative_int, default=1337, help="seed of initialisation, shuffling and dropout")
    add_device_argument(run)
    add_precision_argument(run)
    run.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<data name>)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out exactly where it stopped")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an --out that is not empty: another folder's files of the same names are "
        "replaced, an earlier run there starts afresh (without it such a folder is refused)",
    )
    run.add_argument("--keep-last", type=positive_int, default=2, help="checkpoints to keep")
    run.add_argument(
        "--zero",
        action="store_true",
        help="under mpiexec: shard AdamW's moments over the processes (ZeRO stage 1); each keeps "
        "1/N of them ('tinygrad-llm info --processes N' shows the memory saved)",
    )
    run.add_argument(
        "--sample-prompt",
        default=None,
        help="text to continue after training (default: the first line of the validation text)",
    )
    run.add_argument("--sample-tokens", type=positive_int, default=200, help="tokens in the final sample")


def given_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options ``argv`` (``train ...``) gives explicitly: parsed again by this command's
    parser alone, with every default suppressed."""
    parser = argparse.ArgumentParser(prog="tinygrad-llm")
    commands = parser.add_subparsers(dest="command")
    add_parser(commands)
    for action in commands.choices["train"]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "run"}


def run_train(args: argparse.Namespace) -> int:
    """Train (``tinygrad_llm.train.run.train_run``), then print a sample of the model from process 0."""
    from tinygrad_llm.cli.preflight import check_train
    from tinygrad_llm.train.run import RunSettings, train_run

    comm = start_data_parallel(args.device, args.threads)  # under mpiexec: this process's place among the N
    if comm is None:
        return 0
    check_train(args, comm)  # the memory the run needs, before the text is read or a model allocated
    argv = getattr(args, "argv", None)
    run = train_run(RunSettings.from_namespace(args), comm, given=given_options(argv) if argv is not None else None)
    if comm.is_root:  # process 0 prints the sample
        print_sample(run)
    return 0


def print_sample(run: TrainRun) -> None:
    """A BERT fills in masked tokens of a validation line; a GPT continues the sample prompt."""
    from tinygrad_llm.generate import generate_stream
    from tinygrad_llm.train.mlm import fill_mask_sample
    from tinygrad_llm.train.run import first_line

    s, ctx = run.settings, run.settings.context_length
    if s.arch == "bert":  # an encoder does not continue text: it fills in masked tokens
        print(
            f"\n--- sample (filling in masked tokens) ---\n"
            f"{fill_mask_sample(run.model, run.tokenizer, first_line(run.val_head, 4 * ctx), ctx, s.seed)}"
        )
        return
    print(f"\n--- sample (continuing {run.prompt!r}) ---\n{run.prompt}", end="", flush=True)
    from tinygrad_llm.cli.generate import stream_text

    stream_text(
        generate_stream(
            run.model, run.prompt_ids, s.sample_tokens, context_size=ctx, temperature=0.8, top_k=None, seed=s.seed
        ),
        run.tokenizer,
    )
    print()
    # quoted as a shell needs it (a folder with a space), so that the line can be copied as it is
    print(f'\nnext: tinygrad-llm generate --checkpoint {shlex.quote(str(run.out))} --prompt "..."', file=sys.stderr)
