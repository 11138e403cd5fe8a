"""``tinygrad-llm train``: train a GPT from scratch on a text file, a folder of text, or Python's help texts
(``--arch bert``: a BERT-style encoder by masked-token prediction instead, with the same loop and run folder)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinygrad_llm.cli.common import (HelpFormatter, add_device_argument, add_precision_argument, describe_processes,
                                     finite_float, nonnegative_float, nonnegative_int, positive_int,
                                     start_data_parallel)

DEFAULT_PRESET = "mini"
DEFAULTS = {  # the main job: a character-level GPT on pydoc_data, a few minutes on 2 CPU cores
    "tokenizer": "char", "context_length": 64, "batch_size": 12, "max_steps": 2000, "lr": 2e-3,
    "warmup_steps": 100, "eval_interval": 250, "eval_iters": 10, "dropout": 0.0,
}

ALLOW_EOT = {"<|endoftext|>"}  # a corpus may separate its documents with end-of-text, as the book's


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a GPT from scratch, then print a sample",
        description="Train a GPT from scratch and save it, with checkpoints to resume from, log.jsonl and "
                    "losses.png, in --out. With no --data it trains on Python's own help texts (pydoc_data): "
                    "no download needed.",
        formatter_class=HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--data", default=None, metavar="PATH",
                      help="a UTF-8 text file, or a folder of .txt/.md/.rst files (default: Python's help texts)")
    data.add_argument("--tokenizer", choices=("char", "byte", "gpt2", "bpe"), default=None,
                      help="char (the default; gpt2 with --init-from): one token per character; byte: 256 bytes; "
                           "gpt2: GPT-2's BPE (needs its files: TINYGRAD_LLM_DATA or network); bpe: train a "
                           "byte-level BPE on the data")
    data.add_argument("--vocab-size", type=positive_int, default=1024, help="vocabulary size for --tokenizer bpe")
    data.add_argument("--val-fraction", type=finite_float, default=0.1, help="share of the text held out for validation")
    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=("gpt", "bert"), default="gpt",
                       help="gpt: the decoder, trained to predict the next token; bert: the encoder, trained to "
                            "fill in masked tokens (15%% chosen: 80%% [MASK], 10%% random, 10%% kept), of the "
                            "--preset's size, with [PAD]/[CLS]/[SEP]/[MASK] added to the tokenizer")
    model.add_argument("--preset", default=DEFAULT_PRESET, help="model size: tiny, mini, small-cpu, gpt2-small, ... "
                                                                "(see 'tinygrad-llm info --list')")
    model.add_argument("--init-from", default=None, metavar="DIR|NAME",
                       help="start from pretrained weights and their shape instead of a preset: a Hugging Face "
                            "GPT-2 folder, a GPT-2 name (gpt2, gpt2-medium, ...) or a run folder; needs the gpt2 "
                            "tokenizer")
    model.add_argument("--n-layers", type=positive_int, help="transformer blocks (overrides the preset)")
    model.add_argument("--n-heads", type=positive_int, help="attention heads (overrides the preset)")
    model.add_argument("--emb-dim", type=positive_int, help="embedding width (overrides the preset)")
    model.add_argument("--context-length", type=positive_int, default=DEFAULTS["context_length"],
                       help="tokens per training window")
    model.add_argument("--dropout", type=nonnegative_float, default=DEFAULTS["dropout"], help="dropout rate")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                     help="windows per micro-batch (per process under mpiexec, as torch DDP)")
    opt.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimizer step")
    length = opt.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=positive_int, default=None,
                        help=f"optimizer steps (default {DEFAULTS['max_steps']} unless --epochs)")
    length.add_argument("--epochs", type=positive_int, default=None, help="passes over the training split")
    opt.add_argument("--lr", type=finite_float, default=DEFAULTS["lr"], help="peak learning rate (AdamW)")
    opt.add_argument("--min-lr", type=nonnegative_float, default=None, help="cosine floor (default lr/10)")
    opt.add_argument("--warmup-steps", type=nonnegative_int, default=DEFAULTS["warmup_steps"], help="linear warmup steps")
    opt.add_argument("--weight-decay", type=nonnegative_float, default=0.1, help="AdamW decay of weight matrices")
    opt.add_argument("--grad-clip", type=nonnegative_float, default=1.0, help="global gradient-norm clip (0: off)")
    run = p.add_argument_group("run")
    run.add_argument("--eval-interval", type=positive_int, default=DEFAULTS["eval_interval"],
                     help="steps between evaluations and checkpoints")
    run.add_argument("--eval-iters", type=positive_int, default=DEFAULTS["eval_iters"], help="batches per evaluation")
    run.add_argument("--seed", type=nonnegative_int, default=1337, help="seed of initialisation, shuffling and dropout")
    add_device_argument(run)
    add_precision_argument(run)
    run.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<data name>)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out exactly where it stopped")
    run.add_argument("--overwrite", action="store_true",
                     help="write into an --out that is not empty: another folder's files of the same names are "
                          "replaced, an earlier run there starts afresh (without it such a folder is refused)")
    run.add_argument("--keep-last", type=positive_int, default=2, help="checkpoints to keep")
    run.add_argument("--zero", action="store_true",
                     help="under mpiexec: shard AdamW's moments over the processes (ZeRO stage 1); each keeps "
                          "1/N of them ('tinygrad-llm info --processes N' shows the memory saved)")
    run.add_argument("--sample-prompt", default=None, help="text to continue after training (default: the first "
                                                           "line of the validation text)")
    run.add_argument("--sample-tokens", type=positive_int, default=200, help="tokens in the final sample")
    p.set_defaults(run=run_train)


def first_line(text: str, limit: int) -> str:
    """The first whole non-empty line of ``text`` (cut to ``limit`` characters): a natural sample prompt."""
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]  # [0] may start mid-line
    return (lines[0] if lines else text.strip())[:limit] or text[:limit]


# What --resume takes from the run itself (saved with every checkpoint) unless the command line gives it.
# These shape the data or the model: the run cannot continue with other values.
FIXED_ON_RESUME = ("arch", "data", "tokenizer", "vocab_size", "val_fraction", "preset", "init_from", "n_layers",
                   "n_heads", "emb_dim", "context_length", "dropout", "batch_size", "grad_accum", "seed")
# These a resumed run may change: train longer, with another schedule, evaluate more often.
OVERRIDABLE_ON_RESUME = ("max_steps", "epochs", "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip",
                         "eval_interval", "eval_iters", "keep_last", "sample_prompt", "sample_tokens",
                         "precision")


def run_settings(args) -> dict:
    """The settings a resumed run takes again, as JSON-able data (the data path made absolute)."""
    settings = {name: getattr(args, name) for name in FIXED_ON_RESUME + OVERRIDABLE_ON_RESUME}
    if settings["data"] is not None:
        settings["data"] = str(Path(settings["data"]).resolve())
    return settings


def given_options(argv) -> set[str]:
    """The destinations of the options ``argv`` gives explicitly (parsed again with every default suppressed)."""
    from tinygrad_llm.cli import build_parser

    parser = build_parser()
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for action in train_parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "run"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def apply_saved_settings(args, saved: dict, out: Path) -> list[str]:
    """Take the run's own ``saved`` settings for every option the command line did not give; refuse given
    values that would change the data or the model; return the overrides as "--flag old -> new"."""
    argv = getattr(args, "argv", None)
    given = given_options(argv) if argv is not None else set(saved)
    if given & {"max_steps", "epochs"}:  # one of them sets the length; the other is then unset
        given |= {"max_steps", "epochs"}
    conflicts, overrides = [], []
    for name, old in saved.items():
        if name not in given:
            setattr(args, name, old)
            continue
        new = getattr(args, name)
        if name == "data" and new is not None:
            new = str(Path(new).resolve())
        if new == old:
            continue
        if name in FIXED_ON_RESUME:
            conflicts.append(f"{flag(name)} {new} (the run has {old})")
        elif new is not None:
            overrides.append(f"{flag(name)} {old} -> {new}")
    if conflicts:
        raise ValueError(f"--resume: {out} was trained with other data or model settings than "
                         f"{', '.join(conflicts)}; drop those flags to continue it, or start a new run with another --out")
    return overrides


def read_saved_settings(out: Path) -> dict:
    """The settings saved with the run's latest checkpoint ({} for a run saved before they were)."""
    import json

    from tinygrad_llm.checkpoint import TRAINER_JSON, find_checkpoint

    state = json.loads((find_checkpoint(out) / TRAINER_JSON).read_text(encoding="utf-8"))
    if "settings" in state:
        return state["settings"]
    saved = {name: value for name, value in state.get("train_config", {}).items() if name in OVERRIDABLE_ON_RESUME
             or name in FIXED_ON_RESUME}  # older runs: at least their training settings
    if "grad_clip" in saved and saved["grad_clip"] is None:
        saved["grad_clip"] = 0.0
    return saved


def build_tokenizer(name: str, text: str, vocab_size: int):
    from tinygrad_llm.tokenizer import get_tokenizer

    if name == "char":
        return get_tokenizer("char", text=text)
    if name == "bpe":
        print(f"training a byte-level BPE of {vocab_size} tokens on the data ...", file=sys.stderr)
        return get_tokenizer("bpe", text=text, vocab_size=vocab_size)
    return get_tokenizer(name)


def check_arguments(args) -> None:
    """Everything wrong with the arguments alone, said before any file is read or written."""
    from tinygrad_llm.model import PRESETS

    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if not args.init_from and args.preset not in PRESETS:
        raise ValueError(f"--preset: unknown GPT preset {args.preset!r}: expected one of {sorted(PRESETS)}")
    if args.device is not None:
        from tinygrad_llm.backend import check_device

        try:
            check_device(args.device)
        except RuntimeError as exc:
            reason = str(exc).removeprefix("device 'cuda': ")
            raise ValueError(f"--device {args.device}: {reason}") from None


def run_train(args) -> int:
    from tinygrad_llm.checkpoint import NoCheckpointError, find_checkpoint
    from tinygrad_llm.run_folder import check_output_path, claim

    comm = start_data_parallel(args.device, args.threads)  # under mpiexec: this process's place among the N
    if comm is None:
        return 0
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite starts it afresh: pass one of them")
    out = Path(args.out) if args.out else Path("runs") / (Path(args.data).stem if args.data else "pydoc")
    if args.resume:
        try:
            find_checkpoint(out)
        except NoCheckpointError:
            raise NoCheckpointError(f"--resume: no checkpoint in {out} to resume from "
                                    f"(train without --resume first, or pass the run's --out)") from None
    else:
        check_arguments(args)
    check_output_path(out)
    if not comm.is_root:  # process 0 alone claims, locks and writes the run folder
        return _train(args, out, *_resume_settings(args, out), comm)
    with claim(out, "train", resume=args.resume, overwrite=args.overwrite):  # locked and marked as a run
        return _train(args, out, *_resume_settings(args, out), comm)  # (read under the lock: no run writes it)


def _resume_settings(args, out: Path) -> tuple[list, Path | None]:
    """For --resume: (the overrides given, the checkpoint to continue: the newest intact one, every file
    checked; a damaged newest one is named). Fills in the run's own settings and checks the arguments."""
    from tinygrad_llm.checkpoint import find_intact_checkpoint
    from tinygrad_llm.train.trainer import check_trainer_state

    changed, checkpoint = [], None
    if args.resume:
        checkpoint = find_intact_checkpoint(out, log=lambda message: print(message, file=sys.stderr),
                                            validate=check_trainer_state)
        changed = apply_saved_settings(args, read_saved_settings(checkpoint), out)
        check_arguments(args)
    if args.max_steps is None and args.epochs is None:
        args.max_steps = DEFAULTS["max_steps"]
    return changed, checkpoint


def _train(args, out: Path, changed: list, checkpoint: Path | None, comm) -> int:
    import numpy as np

    import tinygrad_llm as tl
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.generate import generate_stream
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.tokenizer import load_tokenizer, with_bert_tokens
    from tinygrad_llm.train.corpus import load_corpus
    from tinygrad_llm.train.mlm import build_masked_lm, fill_mask_sample, mlm_datasets
    from tinygrad_llm.train.trainer import Trainer, TrainConfig

    text, described = load_corpus(args.data)

    tokenizer_name = args.tokenizer or ("gpt2" if args.init_from else DEFAULTS["tokenizer"])
    if args.init_from and not args.resume and args.arch == "gpt":
        if tokenizer_name != "gpt2":
            raise ValueError(f"--init-from starts from GPT-2 weights, which read GPT-2's token ids: use --tokenizer "
                             f"gpt2 (the default with --init-from), not {tokenizer_name}")
        shaped = [flag for flag, value in (("--n-layers", args.n_layers), ("--n-heads", args.n_heads),
                                           ("--emb-dim", args.emb_dim)) if value is not None]
        if shaped:
            raise ValueError(f"--init-from takes the model's shape from {args.init_from}: drop {', '.join(shaped)}")
    tl.manual_seed(args.seed)
    if args.resume and (out / "tokenizer.json").exists():
        tokenizer = load_tokenizer(out)
    else:
        tokenizer = build_tokenizer(tokenizer_name, text, args.vocab_size)
    if args.arch == "bert":
        tokenizer = with_bert_tokens(tokenizer)  # + [PAD] [CLS] [SEP] [MASK] after the vocabulary
    split = int(len(text) * (1 - args.val_fraction))
    train_ids = np.asarray(tokenizer.encode(text[:split], allowed_special=ALLOW_EOT), dtype=np.int64)
    val_ids = np.asarray(tokenizer.encode(text[split:], allowed_special=ALLOW_EOT), dtype=np.int64)
    ctx = args.context_length
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < ctx + 1:
            raise ValueError(f"the {name} split of {described} has {len(ids)} tokens, fewer than one window of "
                             f"--context-length {ctx} + 1: use a shorter context or more text")

    prompt = args.sample_prompt if args.sample_prompt is not None else first_line(text[split:], ctx // 2)
    try:  # checked now, not after the whole run
        prompt_ids = np.asarray([tokenizer.encode(prompt, allowed_special=ALLOW_EOT) or [0]], dtype=np.int64)
    except ValueError as exc:
        raise ValueError(f"--sample-prompt {prompt!r}: the {tokenizer.name} tokenizer cannot encode it ({exc})") from None

    overrides = {"vocab_size": tokenizer.n_vocab, "context_length": ctx, "drop_rate": args.dropout}
    for field, value in (("n_layers", args.n_layers), ("n_heads", args.n_heads), ("emb_dim", args.emb_dim)):
        if value is not None:
            overrides[field] = value
    config = GPTConfig.preset(args.preset, **overrides)
    if args.arch == "bert":  # the encoder, of this size; or the run's own (resume), or --init-from's weights
        model = build_masked_lm(config, tokenizer, checkpoint if args.resume else args.init_from)
    elif args.resume:  # the run's own shape, whatever the flags say, checked against its weights
        model = GPTModel.from_pretrained(checkpoint, device=args.device).train()
        config = model.config
    elif args.init_from:  # (a resumed run's checkpoint already holds the weights)
        model = GPTModel.from_pretrained(args.init_from, device=args.device, drop_rate=args.dropout).train()
        config = model.config
        if ctx > config.context_length or tokenizer.n_vocab > config.vocab_size:
            raise ValueError(f"--init-from {args.init_from}: the model takes {config.context_length} positions and "
                             f"{config.vocab_size} token ids; --context-length {ctx} and the {tokenizer.name} "
                             f"tokenizer's {tokenizer.n_vocab} ids must fit")
    else:
        model = GPTModel(config)
    if args.device:
        model.to(args.device)
    train_config = TrainConfig(
        max_steps=args.max_steps, epochs=args.epochs,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
        eval_interval=args.eval_interval, eval_iters=args.eval_iters, seed=args.seed, keep_last=args.keep_last,
        precision=args.precision)
    # stride 1 would give every offset; half a window keeps epochs short and windows varied
    if args.arch == "bert":  # [CLS] window [SEP], masked; labels only on the masked positions
        train_set, val_set = mlm_datasets(train_ids, val_ids, tokenizer, ctx, args.seed)
    else:
        train_set = GPTDataset(train_ids, ctx, stride=max(ctx // 2, 1))
        val_set = GPTDataset(val_ids, ctx, stride=ctx)
    trainer = Trainer(model, train_set, val_set, train_config, out, tokenizer=tokenizer, device=args.device,
                      comm=comm, zero=args.zero)
    trainer.run_settings = run_settings(args)  # saved with each checkpoint: what --resume takes again
    trainer.resume_hint = f"continue with: tinygrad-llm train --out {out} --resume"
    if args.resume:
        try:
            step = trainer.load_state(checkpoint)
        except ValueError as exc:
            if "num_windows" not in str(exc):
                raise
            raise ValueError(f"--resume: {out} was trained on other windows than these data, --context-length and "
                             f"--val-fraction give now; pass the ones the run started with ({exc})") from None
        print(f"resuming {out} at step {step} with the run's own settings"
              + (f"; overriding {', '.join(changed)}" if changed else ""), file=sys.stderr)
    shape = f"from {args.init_from}" if args.init_from else args.preset
    print(f"training {model.num_parameters():,} parameters ({shape}: {config.n_layers} layers, "
          f"{config.n_heads} heads, {config.emb_dim} wide, context {ctx}, vocabulary {config.vocab_size}) on "
          f"{described}: {len(train_ids):,} training / {len(val_ids):,} validation tokens"
          f"{describe_processes(comm, args.batch_size)}, {trainer.total_steps} steps -> {out}", file=sys.stderr)
    if args.warmup_steps >= trainer.total_steps:
        print(f"warning: --warmup-steps {args.warmup_steps} is not below the run's {trainer.total_steps} steps, so the "
              f"learning rate only warms up and never decays: use --warmup-steps {trainer.total_steps // 10} "
              f"(about a tenth of the steps) or more --max-steps", file=sys.stderr)
    trainer.fit()
    if not comm.is_root:
        return 0  # process 0 prints the sample
    last = trainer.history[-1] if trainer.history else None
    if last:
        print(f"done: step {last['step']}, train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}, "
              f"{last['elapsed_s']:.0f}s; saved to {out}", file=sys.stderr)
        best = trainer.best
        if best["step"] is not None and best["step"] != last["step"]:
            from tinygrad_llm.checkpoint import MODEL_FILE, read_safetensors

            print(f"{out}/{MODEL_FILE} is the best model, from step {best['step']} (val loss {best['val_loss']:.4f}); "
                  f"the latest is in {out}/checkpoints, to resume from", file=sys.stderr)
            model.load_state_dict(read_safetensors(out / MODEL_FILE))  # the sample shows what generate will
    if args.arch == "bert":  # an encoder does not continue text: it fills in masked tokens
        print(f"\n--- sample (filling in masked tokens) ---\n"
              f"{fill_mask_sample(model, tokenizer, first_line(text[split:], 4 * ctx), ctx, args.seed)}")
        return 0
    print(f"\n--- sample (continuing {prompt!r}) ---\n{prompt}", end="", flush=True)
    from tinygrad_llm.cli.generate import stream_text

    stream_text(generate_stream(model, prompt_ids, args.sample_tokens, context_size=ctx, temperature=0.8,
                                top_k=None, seed=args.seed), tokenizer)
    print()
    print(f"\nnext: tinygrad-llm generate --checkpoint {out} --prompt \"...\"", file=sys.stderr)
    return 0
