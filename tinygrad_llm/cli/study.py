"""``tinygrad-llm gradcheck`` and ``tinygrad-llm attention``: look inside a model.

gradcheck checks every parameter's gradient of a small float64 GPT (or a saved one) on one batch against
central differences and ends with OK or NOT OK and the exit status to match (0 / 1), as llm.c's test
does; ``--op NAME`` checks one operation on random shapes. attention draws the attention weights of one
layer for a prompt, one panel per head.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tinygrad_llm.cli.common import add_device_argument, finite_float, nonnegative_int, positive_int

if TYPE_CHECKING:
    import argparse

    from tinygrad_llm.tensor import Tensor


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="check a model's gradients (or one operation's) against finite differences",
        description="Build a small GPT (or read --checkpoint), cast it to float64, take one batch of random "
        "token ids and print, per parameter, the norm of backward's gradient, the derivative along "
        "it by central differences, the largest relative error over that and --directions random "
        "directions, and OK / NOT OK. Exit status 0 when every parameter is OK, 1 otherwise.",
        epilog="Run it after changing an operation's backward. --op NAME checks one operation instead "
        "(--op list names them).",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default="tiny", help="model shape (default tiny; see 'tinygrad-llm info --list')")
    which.add_argument(
        "--checkpoint",
        metavar="DIR|NAME",
        default=None,
        help="a run folder, a Hugging Face GPT-2 folder or a GPT-2 name, instead of a preset",
    )
    which.add_argument(
        "--op",
        metavar="NAME",
        default=None,
        help="check one operation (add, matmul, softmax, layer_norm, ...; 'list' names them all)",
    )
    for flag in ("--n-layers", "--n-heads", "--emb-dim", "--vocab-size"):
        p.add_argument(flag, type=positive_int, default=None, help=f"override the preset's {flag[2:]}")
    p.add_argument("--batch-size", type=positive_int, default=2, help="sequences in the batch (default 2)")
    p.add_argument("--context-length", type=positive_int, default=8, help="tokens per sequence (default 8)")
    p.add_argument(
        "--directions",
        type=nonnegative_int,
        default=3,
        help="random directions per parameter, besides the gradient's own (default 3)",
    )
    p.add_argument("--eps", type=finite_float, default=1e-6, help="central-difference step (default 1e-6)")
    p.add_argument(
        "--rtol",
        type=finite_float,
        default=1e-5,
        help="allowed difference relative to the gradient's norm (default 1e-5)",
    )
    p.add_argument("--cases", type=positive_int, default=20, help="random cases for --op (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model, the batch and the directions")
    add_device_argument(p)
    p.set_defaults(run=run_gradcheck)

    a = sub.add_parser(
        "attention",
        help="draw one layer's attention weights for a prompt, a panel per head",
        description="Run --prompt through the model in --checkpoint and write a PNG with one panel per "
        "attention head of --layer: row i is the query at token i, column j how much it attends to "
        "token j (the causal mask leaves the upper triangle empty).",
    )
    a.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR|NAME",
        help="a run folder, a Hugging Face GPT-2 folder or a GPT-2 name",
    )
    a.add_argument("--prompt", required=True, help="the text whose attention is drawn (up to 48 tokens read well)")
    a.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="which transformer block, from 0; negative counts from the end (default -1, the last)",
    )
    a.add_argument(
        "--out",
        default="attention.png",
        metavar="PNG",
        help="the picture to write (default attention.png; never overwritten)",
    )
    add_device_argument(a)
    a.set_defaults(run=run_attention)


def run_gradcheck(args: argparse.Namespace) -> int:
    import numpy as np

    import tinygrad_llm as tl
    from tinygrad_llm import functional as F
    from tinygrad_llm.gradreport import OP_CASES, check_model_gradients, check_op, format_report

    if args.op is not None:
        if args.op == "list":
            print(" ".join(sorted(OP_CASES)))
            return 0
        results = check_op(args.op, n_cases=args.cases, seed=args.seed)
        for described, failure in results:
            print(f"{args.op}  inputs {described:32s} {'OK' if failure is None else 'NOT OK  ' + failure}")
        bad = sum(failure is not None for _, failure in results)
        verdict = (
            f"OK: {args.op} passed all {len(results)} cases"
            if not bad
            else f"NOT OK: {args.op} failed {bad} of {len(results)} cases"
        )
        print(verdict)
        return 1 if bad else 0

    if not args.eps > 0 or args.rtol < 0:
        raise ValueError(f"--eps must be > 0 and --rtol >= 0, got --eps {args.eps:g} --rtol {args.rtol:g}")
    tl.manual_seed(args.seed)
    if args.checkpoint:
        overrides = [f for f in ("n_layers", "n_heads", "emb_dim", "vocab_size") if getattr(args, f) is not None]
        if overrides:
            raise ValueError(
                f"--checkpoint takes the model's shape from {args.checkpoint}: drop "
                f"{', '.join('--' + f.replace('_', '-') for f in overrides)}"
            )
        from tinygrad_llm.cli.common import load_model_and_tokenizer

        model, _ = load_model_and_tokenizer(args.checkpoint, args.device)
        title = args.checkpoint
    else:
        overrides = {
            f: getattr(args, f)
            for f in ("n_layers", "n_heads", "emb_dim", "vocab_size")
            if getattr(args, f) is not None
        }
        overrides["context_length"] = args.context_length
        model = tl.GPTModel(tl.GPTConfig.preset(args.preset, **overrides))
        if args.device:
            model.to(args.device)
        title = f"preset {args.preset}"
    model.double().eval()  # float64 for finite differences; eval: no dropout, the same loss every call
    cfg = model.config
    if args.context_length > cfg.context_length:  # never cut to the model's context without a word
        raise ValueError(
            f"--context-length {args.context_length}: the model in {title} takes at most {cfg.context_length} "
            f"positions (its context_length); use --context-length {cfg.context_length} or less"
        )
    t = args.context_length
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, cfg.vocab_size, (args.batch_size, t + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]  # next-token prediction, as in training

    def loss_fn() -> Tensor:
        return F.cross_entropy(model(inputs), targets)

    print(
        f"gradcheck: {title} (n_layers {cfg.n_layers}, n_heads {cfg.n_heads}, emb_dim {cfg.emb_dim}, vocab_size "
        f"{cfg.vocab_size}, {model.num_parameters():,} parameters) in float64, one batch of {args.batch_size} x "
        f"{t} tokens, loss {float(loss_fn().item()):.6f}"
    )
    print(
        f"each gradient is checked along its own direction and {args.directions} random ones by central "
        f"differences with eps {args.eps:g}; OK when within {args.rtol:g} x its norm"
    )
    rows = check_model_gradients(
        loss_fn, model.named_parameters(), n_directions=args.directions, eps=args.eps, rtol=args.rtol, seed=args.seed
    )
    text, ok = format_report(rows)
    print(text)
    return 0 if ok else 1


def run_attention(args: argparse.Namespace) -> int:
    from tinygrad_llm.cli.common import load_model_and_tokenizer
    from tinygrad_llm.files import check_output_file
    from tinygrad_llm.train.figures import attention_weights, plot_attention
    from tinygrad_llm.train.plot import matplotlib_available

    out = check_output_file(args.out, suffixes=(".png",), overwrite_flag=None)  # never replaces a file
    if not matplotlib_available():
        raise RuntimeError("drawing needs matplotlib: pip install 'tinygrad-llm[plot]'")
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, args.device)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise ValueError("the prompt is empty: give some text to look at")
    n_layers = model.config.n_layers
    if not -n_layers <= args.layer < n_layers:
        raise ValueError(
            f"--layer {args.layer}: the model has {n_layers} layers (0 to {n_layers - 1}, or -1 for the last)"
        )
    layer = args.layer % n_layers
    if len(ids) > model.config.context_length:  # never cut to the model's context without a word
        raise ValueError(
            f"--prompt: {len(ids)} tokens, but the model attends over at most {model.config.context_length} "
            "(its context_length): give a shorter prompt"
        )
    weights = attention_weights(model, ids, layer)  # (H, T, T)
    tokens = [tokenizer.decode([i]) for i in ids]
    plot_attention(weights, tokens, out, title=f"{args.checkpoint}: layer {layer}")
    print(f"wrote {out}: {weights.shape[0]} heads of layer {layer} over {len(ids)} tokens", file=sys.stderr)
    return 0
