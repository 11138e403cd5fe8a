"""``tinygrad-llm generate`` and ``tinygrad-llm chat``: text from a trained model, streamed as it comes."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from tinygrad_llm.cli.common import add_device_argument, add_sampling_arguments, load_model_and_tokenizer

if TYPE_CHECKING:
    import argparse
    import os

    from tinygrad_llm.tokenizer.base import Tokenizer


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt with a trained model",
        description="Continue --prompt with the model saved in --checkpoint, printing tokens as they are generated.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR|NAME",
        help="a run folder from 'tinygrad-llm train' (config.json + model.safetensors), a Hugging Face "
        "GPT-2 folder, or a GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl: downloaded once)",
    )
    p.add_argument("--prompt", required=True, help="the text to continue")
    add_sampling_arguments(p)
    add_device_argument(p)
    p.set_defaults(run=run_generate)


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="type prompts, read continuations (an interactive loop)",
        description="An interactive loop: each line you type is continued by the model. Ctrl-D or 'exit' ends it.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR|NAME",
        help="a run folder from 'tinygrad-llm train', a Hugging Face GPT-2 folder, or a GPT-2 name",
    )
    add_sampling_arguments(p)
    add_device_argument(p)
    p.set_defaults(run=run_chat)


def stream_text(token_stream: Iterable[int], tokenizer: Tokenizer, out: TextIO | None = None) -> str:
    """Print the text of each new token as it arrives; return the whole generated text.

    The text is decoded from all ids so far, so a character split over several byte tokens appears whole
    (an unfinished one at the end is held back until it completes).
    """
    out = out or sys.stdout
    ids, shown = [], ""
    for token in token_stream:
        ids.append(int(token))
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue
        out.write(text[len(shown) :])
        out.flush()
        shown = text
    text = tokenizer.decode(ids)
    out.write(text[len(shown) :])
    out.flush()
    return text


def unknown_characters(tokenizer: Tokenizer, text: str) -> list[str]:
    """The distinct characters of ``text`` the tokenizer cannot encode (a char vocabulary lacks them)."""
    unknown = []
    for ch in dict.fromkeys(text):
        try:
            tokenizer.encode(ch)
        except ValueError:
            unknown.append(ch)
    return unknown


def encode_prompt(tokenizer: Tokenizer, prompt: str, what: str = "--prompt") -> list[int]:
    """The prompt's ids, or a ValueError naming every character the vocabulary lacks."""
    try:
        ids = tokenizer.encode(prompt, allowed_special={"<|endoftext|>"})  # as the book's text_to_token_ids
    except ValueError as exc:
        unknown = unknown_characters(tokenizer, prompt)
        if not unknown:
            raise
        raise ValueError(
            f"{what}: {_quoted(unknown)} not in the vocabulary of this model's {tokenizer.name} "
            f"tokenizer ({tokenizer.n_vocab} tokens); leave {'it' if len(unknown) == 1 else 'them'} "
            f"out"
        ) from exc
    if not ids:
        raise ValueError(f"{what} is empty: give some text to continue")
    return ids


def _quoted(chars: list[str]) -> str:
    return ", ".join(repr(c) for c in chars) + (" is" if len(chars) == 1 else " are")


def check_generator(checkpoint: str | os.PathLike) -> None:
    """A classifier's folder cannot continue text: say what it is and what to use instead."""
    import json
    from pathlib import Path

    from tinygrad_llm.finetune.io import FINETUNE_FILE

    meta_file = Path(checkpoint) / FINETUNE_FILE
    if meta_file.is_file():
        try:
            task = json.loads(meta_file.read_text(encoding="utf-8")).get("task")
        except (ValueError, AttributeError):
            return
        if task == "classification":
            raise ValueError(
                f"{checkpoint} is a classifier (finetune-classifier), which labels a text instead of "
                f'continuing it: use tinygrad-llm classify --checkpoint {checkpoint} --text "..."'
            )


def _continue(model, tokenizer, ids: list[int], args) -> str:
    import numpy as np

    from tinygrad_llm.generate import generate_stream

    return stream_text(
        generate_stream(
            model,
            np.asarray([ids], dtype=np.int64),
            args.max_new_tokens,
            context_size=model.config.context_length,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=getattr(tokenizer, "eot_id", None),
            use_cache=not args.no_cache,
            seed=args.seed,
        ),
        tokenizer,
    )


def run_generate(args: argparse.Namespace) -> int:
    check_generator(args.checkpoint)
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, args.device)
    ids = encode_prompt(tokenizer, args.prompt)  # before anything is printed
    sys.stdout.write(args.prompt)
    _continue(model, tokenizer, ids, args)
    sys.stdout.write("\n")
    return 0


def run_chat(args: argparse.Namespace) -> int:
    check_generator(args.checkpoint)
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, args.device)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.checkpoint} ({model.num_parameters():,} parameters); Ctrl-D or 'exit' to leave")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if line.strip() in ("exit", "quit"):
            break
        if not line.strip():
            continue
        try:
            ids = tokenizer.encode(line)
        except ValueError as exc:  # say what is wrong with the line, and carry on
            unknown = unknown_characters(tokenizer, line)
            if not unknown:
                print(f"({str(exc).splitlines()[0]})", file=sys.stderr)
                continue
            print(f"({_quoted(unknown)} not in the model's vocabulary: left out)", file=sys.stderr)
            line = "".join(ch for ch in line if ch not in unknown)
            ids = tokenizer.encode(line) if line.strip() else []
        if not ids:
            continue
        _continue(model, tokenizer, ids, args)
        sys.stdout.write("\n")
    return 0
