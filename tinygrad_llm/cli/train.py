"""``tinygrad-llm train``: train a GPT from scratch on a text file, a folder of text, or Python's help texts."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinygrad_llm.cli.common import (add_device_argument, finite_float, nonnegative_float, nonnegative_int,
                                     positive_int)

DEFAULT_PRESET = "mini"
DEFAULTS = {  # the main job: a character-level GPT on pydoc_data, a few minutes on 2 CPU cores
    "tokenizer": "char", "context_length": 64, "batch_size": 12, "max_steps": 2000, "lr": 2e-3,
    "warmup_steps": 100, "eval_interval": 250, "eval_iters": 10, "dropout": 0.0,
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a GPT from scratch, then print a sample",
        description="Train a GPT from scratch and save it, with checkpoints to resume from, log.jsonl and "
                    "losses.png, in --out. With no --data it trains on Python's own help texts (pydoc_data): "
                    "no download needed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    opt.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"], help="windows per micro-batch")
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
    run.add_argument("--seed", type=int, default=1337, help="seed of initialisation, shuffling and dropout")
    add_device_argument(run)
    run.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/<data name>)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out exactly where it stopped")
    run.add_argument("--keep-last", type=positive_int, default=2, help="checkpoints to keep")
    run.add_argument("--sample-prompt", default=None, help="text to continue after training (default: the first "
                                                           "line of the validation text)")
    run.add_argument("--sample-tokens", type=positive_int, default=200, help="tokens in the final sample")
    p.set_defaults(run=run_train)


def first_line(text: str, limit: int) -> str:
    """The first whole non-empty line of ``text`` (cut to ``limit`` characters): a natural sample prompt."""
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]  # [0] may start mid-line
    return (lines[0] if lines else text.strip())[:limit] or text[:limit]


def build_tokenizer(name: str, text: str, vocab_size: int):
    from tinygrad_llm.tokenizer import get_tokenizer

    if name == "char":
        return get_tokenizer("char", text=text)
    if name == "bpe":
        print(f"training a byte-level BPE of {vocab_size} tokens on the data ...", file=sys.stderr)
        return get_tokenizer("bpe", text=text, vocab_size=vocab_size)
    return get_tokenizer(name)


def run_train(args) -> int:
    import numpy as np

    import tinygrad_llm as tl
    from tinygrad_llm.checkpoint import NoCheckpointError, find_checkpoint
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.generate import generate_stream
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.tokenizer import load_tokenizer
    from tinygrad_llm.train.corpus import load_corpus
    from tinygrad_llm.train.trainer import Trainer, TrainConfig

    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    text, described = load_corpus(args.data)
    out = Path(args.out) if args.out else Path("runs") / (Path(args.data).stem if args.data else "pydoc")
    if args.resume:
        try:
            find_checkpoint(out)
        except NoCheckpointError:
            raise NoCheckpointError(f"--resume: no checkpoint in {out} to resume from "
                                    f"(train without --resume first, or pass the run's --out)") from None
    elif (out / "checkpoints").exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or another --out")

    tokenizer_name = args.tokenizer or ("gpt2" if args.init_from else DEFAULTS["tokenizer"])
    if args.init_from and not args.resume:
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
    split = int(len(text) * (1 - args.val_fraction))
    train_ids = np.asarray(tokenizer.encode(text[:split]), dtype=np.int64)
    val_ids = np.asarray(tokenizer.encode(text[split:]), dtype=np.int64)
    ctx = args.context_length
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < ctx + 1:
            raise ValueError(f"the {name} split of {described} has {len(ids)} tokens, fewer than one window of "
                             f"--context-length {ctx} + 1: use a shorter context or more text")

    overrides = {"vocab_size": tokenizer.n_vocab, "context_length": ctx, "drop_rate": args.dropout}
    for field, value in (("n_layers", args.n_layers), ("n_heads", args.n_heads), ("emb_dim", args.emb_dim)):
        if value is not None:
            overrides[field] = value
    config = GPTConfig.preset(args.preset, **overrides)
    if args.resume:  # the run's own shape, whatever the flags say
        import json

        config = GPTConfig.from_dict(json.loads((find_checkpoint(out) / "config.json").read_text()))
    if args.init_from and not args.resume:  # (a resumed run's checkpoint already holds the weights)
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
        max_steps=args.max_steps if args.max_steps or args.epochs else DEFAULTS["max_steps"], epochs=args.epochs,
        batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
        eval_interval=args.eval_interval, eval_iters=args.eval_iters, seed=args.seed, keep_last=args.keep_last)
    # stride 1 would give every offset; half a window keeps epochs short and windows varied
    train_set = GPTDataset(train_ids, ctx, stride=max(ctx // 2, 1))
    val_set = GPTDataset(val_ids, ctx, stride=ctx)
    trainer = Trainer(model, train_set, val_set, train_config, out, tokenizer=tokenizer, device=args.device)
    if args.resume:
        try:
            step = trainer.load_state()
        except ValueError as exc:
            if "num_windows" not in str(exc):
                raise
            raise ValueError(f"--resume: {out} was trained on other windows than these data, --context-length and "
                             f"--val-fraction give now; pass the ones the run started with ({exc})") from None
        print(f"resuming {out} at step {step}", file=sys.stderr)
    shape = f"from {args.init_from}" if args.init_from else args.preset
    print(f"training {model.num_parameters():,} parameters ({shape}: {config.n_layers} layers, "
          f"{config.n_heads} heads, {config.emb_dim} wide, context {ctx}, vocabulary {config.vocab_size}) on "
          f"{described}: {len(train_ids):,} training / {len(val_ids):,} validation tokens, "
          f"{trainer.total_steps} steps -> {out}", file=sys.stderr)
    trainer.fit()
    last = trainer.history[-1] if trainer.history else None
    if last:
        print(f"done: step {last['step']}, train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}, "
              f"{last['elapsed_s']:.0f}s; saved to {out}", file=sys.stderr)
    prompt = args.sample_prompt if args.sample_prompt is not None else first_line(text[split:], ctx // 2)
    prompt_ids = np.asarray([tokenizer.encode(prompt) or [0]], dtype=np.int64)
    print(f"\n--- sample (continuing {prompt!r}) ---\n{prompt}", end="", flush=True)
    from tinygrad_llm.cli.generate import stream_text

    stream_text(generate_stream(model, prompt_ids, args.sample_tokens, context_size=ctx, temperature=0.8,
                                top_k=None, seed=args.seed), tokenizer)
    print()
    print(f"\nnext: tinygrad-llm generate --checkpoint {out} --prompt \"...\"", file=sys.stderr)
    return 0
