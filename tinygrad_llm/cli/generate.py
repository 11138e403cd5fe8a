"""``tinygrad-llm generate`` and ``tinygrad-llm chat``: text from a trained model, streamed as it comes."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from tinygrad_llm.cli.common import (
    add_device_argument,
    add_sampling_arguments,
    load_model_and_tokenizer,
    positive_int,
)

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
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the text to continue")
    prompt.add_argument(
        "--prompt-file",
        metavar="FILE",
        help="read the text to continue from FILE (UTF-8, used as is); '-' reads standard input",
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="how many continuations of the prompt, each after a line of dashes (default 1; "
        "with --seed S, sample i draws with seed S+i)",
    )
    add_sampling_arguments(p)
    add_device_argument(p)
    p.set_defaults(run=run_generate)


def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="type prompts, read continuations (an interactive loop)",
        description="An interactive loop: each line you type is continued by the model, with the conversation "
        "so far as its context (the last context-length tokens of it). An instruction-tuned folder "
        "(finetune-instruct, finetune-dpo) answers each line on its own, as an instruction in the Alpaca "
        "prompt it was trained on. Piped input is echoed after '> ', so the transcript reads as a "
        "conversation. Ctrl-D or 'exit' ends it.",
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
    if fine_tuning_task(checkpoint) == "classification":
        raise ValueError(
            f"{checkpoint} is a classifier (finetune-classifier), which labels a text instead of "
            f'continuing it: use tinygrad-llm classify --checkpoint {checkpoint} --text "..."'
        )


def fine_tuning_task(checkpoint: str | os.PathLike) -> str | None:
    """finetune.json's task ("classification", "instruction"), None for a pretrained model or a model name."""
    import json
    from pathlib import Path

    from tinygrad_llm.finetune.io import FINETUNE_FILE

    meta_file = Path(checkpoint) / FINETUNE_FILE
    if not meta_file.is_file():
        return None
    try:
        task = json.loads(meta_file.read_text(encoding="utf-8")).get("task")
    except (ValueError, AttributeError):
        return None  # loading the folder names what is wrong with it
    return task if isinstance(task, str) else None


def read_prompt(args: argparse.Namespace) -> tuple[str, str]:
    """The prompt text and the flag it came from (--prompt, or --prompt-file's file or standard input)."""
    from pathlib import Path

    if args.prompt is not None:
        return args.prompt, "--prompt"
    if args.prompt_file == "-":
        return sys.stdin.read(), "--prompt-file - (standard input)"
    path = Path(args.prompt_file)
    if not path.is_file():
        raise FileNotFoundError(f"--prompt-file {path}: no such file")
    try:
        return path.read_text(encoding="utf-8"), f"--prompt-file {path}"
    except UnicodeDecodeError as exc:
        raise ValueError(f"--prompt-file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _continue(model, tokenizer, ids: list[int], args, seed: int | None) -> list[int]:
    """Stream the continuation of ``ids`` to stdout; return its token ids."""
    import numpy as np

    from tinygrad_llm.generate import generate_stream

    new_ids: list[int] = []

    def kept(stream: Iterable[int]) -> Iterator[int]:
        for token in stream:
            new_ids.append(token)
            yield token

    stream_text(
        kept(
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
                seed=seed,
            )
        ),
        tokenizer,
    )
    return new_ids


def run_generate(args: argparse.Namespace) -> int:
    check_generator(args.checkpoint)
    prompt, source = read_prompt(args)
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, args.device)
    ids = encode_prompt(tokenizer, prompt, what=source)  # before anything is printed
    for sample in range(args.num_samples):
        if sample:
            sys.stdout.write("---------------\n")  # nanoGPT's separator between samples
        sys.stdout.write(prompt)
        _continue(model, tokenizer, ids, args, seed=None if args.seed is None else args.seed + sample)
        sys.stdout.write("\n")
    return 0


def alpaca_prompt(instruction: str) -> str:
    """An instruction in the Alpaca prompt that finetune-instruct trains on, up to the response header."""
    from tinygrad_llm.finetune.instruction import format_input

    return format_input({"instruction": instruction, "input": ""}) + "\n\n### Response:\n"


def run_chat(args: argparse.Namespace) -> int:
    check_generator(args.checkpoint)
    instructions = fine_tuning_task(args.checkpoint) == "instruction"
    model, tokenizer = load_model_and_tokenizer(args.checkpoint, args.device)
    context = model.config.context_length
    interactive = sys.stdin.isatty()
    if interactive:
        how = (
            "each line is an instruction, answered on its own"
            if instructions
            else f"the conversation so far is the model's context (its last {context} tokens)"
        )
        print(
            f"chatting with {args.checkpoint} ({model.num_parameters():,} parameters; {how}); Ctrl-D or 'exit' to leave"
        )
    history: list[int] = []  # the conversation's token ids, for a model that continues text
    turn = 0
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if line.strip() in ("exit", "quit"):
            break
        if not line.strip():
            continue
        if not interactive:  # echo piped input, so that each answer follows its line, a blank line between turns
            sys.stdout.write(f"\n> {line}\n" if turn else f"> {line}\n")
        try:
            ids = encode_prompt(tokenizer, alpaca_prompt(line) if instructions else line, what="this line")
        except ValueError as exc:  # the same check as generate's --prompt; the next line may be fine
            print(f"error: {exc}", file=sys.stderr)
            continue
        if not instructions:
            separator = _newline_ids(tokenizer) if history else []
            ids = (history + separator + ids)[-context:]
        answer = _continue(model, tokenizer, ids, args, seed=None if args.seed is None else args.seed + turn)
        sys.stdout.write("\n")
        sys.stdout.flush()
        if not instructions:
            history = (ids + answer)[-context:]
        turn += 1
    return 0


def _newline_ids(tokenizer: Tokenizer) -> list[int]:
    """The ids of a line break between turns, or none when the vocabulary has no line break."""
    try:
        return tokenizer.encode("\n")
    except ValueError:
        return []
