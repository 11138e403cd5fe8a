"""Chapter 7: instruction fine-tuning on Alpaca-style records {instruction, input, output}.

    data = load_instruction_data("instruction-data.json")
    train_data, test_data, val_data = split_instruction_data(data)        # 85 / 10 / 5 %, in file order
    train_set = InstructionDataset(train_data, tokenizer, allowed_max_length=1024)
    train_loader = DataLoader(train_set, batch_size=8, shuffle=True, drop_last=True, seed=123)
    ... train_model_simple(model, train_loader, val_loader, optimizer, ...)   (chapter 5's loop, as the book)
    ... train_instruction_model(model, train_loader, ..., parallel=..., precision="bf16")   (the CLI's: fast)
    test_data = generate_test_responses(model, tokenizer, test_data)       # adds "model_response"
    save_responses("instruction-data-with-response.json", test_data)

``custom_collate_fn`` is the book's: each sequence gets one end-of-text appended and is padded with
end-of-text to the longest in the batch plus one; inputs drop the last token, targets drop the first; every
padding target after the first end-of-text becomes -100 (ignored by the loss), so the model learns to stop
but not to predict padding. The book finds the padding by value (``targets == pad_token_id``); here it is
found by position (everything past the sequence's own tokens), which is the same unless a text itself
contains end-of-text, whose genuine occurrence the book would then mask by mistake.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.amp import MixedPrecision
from tinygrad_llm.files import atomic_write
from tinygrad_llm.train.simple import evaluate_model, generate_and_print_sample
from tinygrad_llm.train.step import train_step

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.model.gpt import GPTModel
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tokenizer.base import Tokenizer
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.progress import Progress

IGNORE_INDEX = -100
RESPONSE_KEY = "model_response"


def format_input(entry: dict) -> str:
    """The Alpaca prompt of ``entry``, exactly as the book: instruction, then the input when it has one."""
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_response(entry: dict) -> str:
    """The part the model learns to write: the response header, then the output."""
    return f"\n\n### Response:\n{entry['output']}"


def load_instruction_data(path: str | os.PathLike, required: Sequence[str] = ("instruction", "output")) -> list[dict]:
    """A JSON list of objects with string ``instruction`` and ``output`` (``input`` optional, default "").

    ``required``: the string fields every record must have (the preference data needs "chosen" and
    "rejected" as well).
    Anything else raises ValueError naming the file and the first bad record's index.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a JSON list of instruction records)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of {{instruction, input, output}} objects, got a {type(data).__name__}"
        )
    if not data:
        raise ValueError(f"{path}: the list of instruction records is empty")
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(
                f"{path}: record {index} is a {type(entry).__name__}, expected an object with "
                f"{', '.join(repr(k) for k in required)}"
            )
        for key in required:
            if not isinstance(entry.get(key), str):
                problem = "is missing" if key not in entry else f"is a {type(entry[key]).__name__}, not a string"
                raise ValueError(f"{path}: record {index}: '{key}' {problem}")
        if not isinstance(entry.get("input", ""), str):
            raise ValueError(f"{path}: record {index}: 'input' must be a string when present")
    return [{**entry, "input": entry.get("input", "")} for entry in data]


def split_instruction_data(data: list, train_frac: float = 0.85, test_frac: float = 0.10) -> tuple[list, list, list]:
    """(train, test, validation): the first 85%, the next 10%, the rest (5%), in order, as the book."""
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    train = data[:train_portion]
    test = data[train_portion : train_portion + test_portion]
    val = data[train_portion + test_portion :]
    if not train or not test or not val:
        raise ValueError(
            f"split_instruction_data: {len(data)} records leave an empty split "
            f"({len(train)} train, {len(test)} test, {len(val)} validation)"
        )
    return train, test, val


def custom_collate_fn(
    batch: Sequence[Sequence[int]],
    pad_token_id: int = 50256,
    ignore_index: int = IGNORE_INDEX,
    allowed_max_length: int | None = None,
    prompt_lengths: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), both (B, L) int64, from token-id lists.

    L = longest sequence + 1 (its appended end-of-text), cut to ``allowed_max_length``. For a sequence of n
    tokens: inputs = tokens + [eot] * (L - n), targets = tokens[1:] + [eot] + [ignore_index] * (L - n).
    ``prompt_lengths``: for each sequence, how many leading tokens are the prompt (instruction and input);
    their targets become ``ignore_index``, so the loss covers only the response (the book's exercise 7.2).
    """
    if not batch:
        raise ValueError("custom_collate_fn: empty batch")
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs = np.full((len(batch), batch_max_length - 1), pad_token_id, dtype=np.int64)
    targets = np.full((len(batch), batch_max_length - 1), ignore_index, dtype=np.int64)
    for row, item in enumerate(batch):
        n = len(item)
        inputs[row, :n] = item  # the tokens, then padding
        targets[row, : n - 1] = item[1:]  # each position predicts the next token
        targets[row, n - 1] = pad_token_id  # ... and the last one predicts end-of-text, kept as a target
        if prompt_lengths is not None:
            targets[row, : max(int(prompt_lengths[row]) - 1, 0)] = ignore_index  # do not learn to write the prompt
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs, targets


class InstructionDataset:
    """Records encoded as ``format_input(entry) + format_response(entry)``; batches via ``custom_collate_fn``.

    ``dataset[i]`` is the token-id list (the book's item); ``get_batch(indices)`` collates, so the library's
    ``DataLoader`` yields ``(inputs, targets)``. ``mask_inputs`` ignores the prompt tokens in the targets.
    """

    def __init__(
        self,
        data: Sequence[dict],
        tokenizer: Tokenizer,
        pad_token_id: int | None = None,
        allowed_max_length: int | None = None,
        mask_inputs: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ):
        if pad_token_id is None:
            if tokenizer.eot_id is None:
                raise ValueError(
                    f"InstructionDataset: tokenizer {tokenizer.name!r} has no <|endoftext|>; pass pad_token_id"
                )
            pad_token_id = tokenizer.eot_id
        self.data = list(data)
        self.pad_token_id, self.ignore_index = int(pad_token_id), ignore_index
        self.allowed_max_length, self.mask_inputs = allowed_max_length, bool(mask_inputs)
        self.encoded_texts, self.prompt_lengths = [], []
        for entry in self.data:
            prompt = format_input(entry)
            self.encoded_texts.append(tokenizer.encode(prompt + format_response(entry)))
            self.prompt_lengths.append(len(tokenizer.encode(prompt)))

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)

    def records_without_response(self) -> list[int]:
        """The indices of the records that keep no response token within ``allowed_max_length``: their
        prompt fills it, so they teach nothing of answering (with ``mask_inputs``, nothing at all)."""
        limit = self.allowed_max_length
        return [
            i
            for i, (ids, prompt_length) in enumerate(zip(self.encoded_texts, self.prompt_lengths))
            # position prompt_length - 1 predicts the first response token (custom_collate_fn's targets)
            if max(prompt_length - 1, 0) >= (len(ids) if limit is None else min(len(ids), limit))
        ]

    def get_batch(self, indices: Sequence[int] | Array) -> tuple[np.ndarray, np.ndarray]:
        indices = [int(i) for i in indices]
        return custom_collate_fn(
            [self.encoded_texts[i] for i in indices],
            self.pad_token_id,
            self.ignore_index,
            self.allowed_max_length,
            [self.prompt_lengths[i] for i in indices] if self.mask_inputs else None,
        )


def generate_response(
    model: GPTModel, tokenizer: Tokenizer, entry: dict, max_new_tokens: int = 256, device: str | None = None
) -> str:
    """The model's greedy answer to ``entry``'s prompt, stopping at end-of-text, header stripped (the book)."""
    from tinygrad_llm import backend
    from tinygrad_llm.generate import generate, text_to_token_ids

    prompt_ids = text_to_token_ids(format_input(entry), tokenizer)  # (1, T)
    context = model.config.context_length
    prompt_ids = prompt_ids[:, -context:]  # keep the tail of a prompt longer than the context
    device = device or model.device
    out = generate(
        model,
        backend.to_device(prompt_ids, device),
        max_new_tokens=max_new_tokens,
        context_size=context,
        eos_id=tokenizer.eot_id,
    )
    new_ids = backend.to_numpy(out)[0, prompt_ids.shape[1] :].tolist()
    if tokenizer.eot_id is not None and tokenizer.eot_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.eot_id)]
    return tokenizer.decode(new_ids).replace("### Response:", "").strip()


def generate_test_responses(
    model: GPTModel,
    tokenizer: Tokenizer,
    test_data: Iterable[dict],
    max_new_tokens: int = 256,
    device: str | None = None,
    progress: bool = False,
) -> list[dict]:
    """Copies of the records with ``"model_response"`` added (the book's instruction-data-with-response)."""
    items = list(test_data)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="responses")
    return [
        {**entry, RESPONSE_KEY: generate_response(model, tokenizer, entry, max_new_tokens, device)} for entry in items
    ]


def save_responses(path: str | os.PathLike, entries: list[dict]) -> Path:
    """Write the records (with their responses) as indented JSON, atomically."""
    path = Path(path)
    with atomic_write(path, "w") as f:
        json.dump(list(entries), f, indent=4)
        f.write("\n")
    return path


def train_instruction_model(
    model: GPTModel,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    device: str | None,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: Tokenizer,
    parallel: DataParallel | None = None,
    precision: str = "fp32",
    bar: Progress | None = None,
    max_steps: int | None = None,
) -> tuple[list[float], list[float], list[int]]:
    """The loop of ``tinygrad-llm finetune-instruct``: chapter 5's ``train_model_simple`` (same arguments, same
    evaluations, prints and return value) with the fast step of train/step.py in place of the book's four
    lines: the batch cut into parts on the CPU's cores, ``precision`` tf32/fp16/bf16 on a GPU (see
    tinygrad_llm.amp), and ``parallel`` a ``train.parallel.DataParallel`` (the loaders then yield every
    process's rows; each process trains on its own). ``bar``: the job's progress, stepped after every step
    (``train.progress.Progress``: a bar with its ETA, or a line every 15 s). ``max_steps``: stop after that
    many steps, within ``num_epochs`` (Hugging Face's max_steps), then print the sample as an epoch's end does."""
    say = bar.write if bar is not None and bar.enabled else print
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    amp = MixedPrecision(precision, model.device)
    for epoch in range(num_epochs):
        if max_steps is not None and global_step + 1 >= max_steps:
            break
        model.train()
        for input_batch, target_batch in train_loader:
            tokens_seen += input_batch.size
            loss = train_step(model, optimizer, [(input_batch, target_batch)], device, amp, parallel)
            if bar is not None:
                bar.step(loss)
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter, parallel=parallel
                )
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                say(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            if max_steps is not None and global_step + 1 >= max_steps:
                break
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen
