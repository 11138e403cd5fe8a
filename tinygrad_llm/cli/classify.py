"""``tinygrad-llm classify``: label texts with a classifier from ``finetune-classifier`` (the book's
``classify_review``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tinygrad_llm.cli.common import add_device_argument

if TYPE_CHECKING:
    import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="label texts with a fine-tuned classifier (e.g. spam or not)",
        description="Label each --text (or each line of standard input) with the classifier that "
        "'tinygrad-llm finetune-classifier' saved in --checkpoint, as the book's "
        "classify_review does: one label per line (with --probs, each class's probability beside it).",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a folder written by finetune-classifier")
    p.add_argument(
        "--text",
        action="append",
        default=None,
        help="a text to label; repeat for several (default: read one text per line from stdin)",
    )
    p.add_argument(
        "--probs",
        action="store_true",
        help="print every class with its probability after the label, most likely first, as a Hugging Face "
        "text-classification pipeline with top_k=None gives them (e.g. 'spam 0.973 ham 0.027')",
    )
    add_device_argument(p)
    p.set_defaults(run=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tinygrad_llm.cli.common import tokenizer_for
    from tinygrad_llm.finetune.classifier import class_probabilities
    from tinygrad_llm.finetune.io import FINETUNE_FILE, load_classifier

    folder = Path(args.checkpoint)
    if (folder / "config.json").is_file() and not (folder / FINETUNE_FILE).is_file():
        raise ValueError(
            f"{folder} is a language model, not a classifier (no {FINETUNE_FILE}): continue text with "
            f"tinygrad-llm generate --checkpoint {folder}, or make a classifier of it with "
            f"tinygrad-llm finetune-classifier --init-from {folder}"
        )
    for text in args.text or ():
        if not text.strip():
            raise ValueError("--text is empty: give a text to label (or leave --text out to read lines from stdin)")
    model, _, meta = load_classifier(folder, args.device)
    # the tokenizer checked against the model's vocabulary, as generate does: a wrong one answers quietly wrong
    tokenizer = tokenizer_for(folder, model.config.vocab_size)
    class_names = tuple(meta["class_names"])
    texts = args.text if args.text is not None else (line.rstrip("\n") for line in sys.stdin)
    for text in texts:
        if not text.strip():
            continue  # a blank line of stdin
        probs = class_probabilities(
            text, model, tokenizer, max_length=meta.get("max_length"), pad_token_id=meta.get("pad_token_id")
        )
        label = _name(class_names, int(probs.argmax()))
        if args.probs:
            label += "".join(f" {_name(class_names, k)} {probs[k]:.3f}" for k in probs.argsort()[::-1])
        print(label if args.text is not None and len(args.text) == 1 else f"{label}\t{text}", flush=True)
    return 0


def _name(class_names: tuple, k: int) -> str:
    """Class k's name (its number where finetune.json names fewer classes)."""
    return class_names[k] if k < len(class_names) else str(k)
