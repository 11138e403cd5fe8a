"""Arguments and loading shared by the commands."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os

    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.model.gpt import GPTModel
    from tinygrad_llm.tokenizer.base import Tokenizer

    ArgumentTarget = argparse.ArgumentParser | argparse._ArgumentGroup


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default once: added where the help text does not already say it, and not
    for options whose default is nothing (None, a flag's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def example_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of an example script: its docstring as the description, defaults shown in --help, and
    ``--device cpu|cuda``."""
    import os

    parser = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=os.environ.get("TINYGRAD_LLM_DEVICE") or "cpu",
        help="where to compute: cpu, or cuda for a GPU through CuPy",
    )
    return parser


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, or a message saying what was expected."""
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_device_argument(parser: ArgumentTarget) -> None:
    """--device, and --threads beside it: every command that computes takes both."""
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="where to compute (default: $TINYGRAD_LLM_DEVICE or cpu); cuda needs CuPy",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for the matrix products (default: $TINYGRAD_LLM_THREADS, else automatic: "
        "the cores other processes leave free, one on a busy machine; see 'tinygrad-llm info')",
    )


def start_data_parallel(device: str | None, threads_given: int | None = None) -> Communicator | None:
    """The communicator for a training command (``mpiexec -n N``: N processes, else one), with every process
    but 0 silenced: process 0 alone prints (errors still reach the terminal, see ``cli.main``). The processes
    of one machine share its cores: each takes cores / processes threads unless --threads or
    $TINYGRAD_LLM_THREADS says otherwise.

    Returns None for a process that should not train at all: started by mpiexec without mpi4py installed,
    where process 0 trains alone (with a note) and the others leave at once.
    """
    import os
    import sys

    from tinygrad_llm import dist
    from tinygrad_llm.runtime import settings, threads

    comm = dist.init(device)
    if getattr(comm, "launcher_rank", 0) > 0:
        return None
    if not comm.is_root:
        sys.stdout = sys.stderr = open(os.devnull, "w")
    if comm.local_size > 1 and threads_given is None and settings.current().threads is None:
        threads.set_threads(max(1, threads.cores() // comm.local_size))
    return comm


def describe_processes(comm: Communicator, batch_size: int) -> str:
    """``tinygrad_llm.dist.launch.describe_processes``: the processes and batch, for a command's first line."""
    from tinygrad_llm.dist.launch import describe_processes as describe

    return describe(comm, batch_size)


def add_precision_argument(parser: ArgumentTarget) -> None:
    parser.add_argument(
        "--precision",
        choices=("fp32", "tf32", "fp16", "bf16"),
        default="fp32",
        help="fp32 (default); tf32: GPU float32 products on TF32 tensor cores; fp16: float16 "
        "matrix products, float32 weights, dynamic loss scaling; bf16: bfloat16 products "
        "(needs ml-dtypes). Meant for GPUs: NumPy's float16/bfloat16 products are slow",
    )


def add_sampling_arguments(parser: ArgumentTarget) -> None:
    parser.add_argument("--max-new-tokens", type=positive_int, default=200, help="tokens to generate (default 200)")
    parser.add_argument(
        "--temperature", type=nonnegative_float, default=0.8, help="0 is greedy; higher is more random (default 0.8)"
    )
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens")
    parser.add_argument(
        "--top-p",
        type=finite_float,
        default=None,
        help="nucleus sampling: the smallest set of tokens whose probability reaches p, in (0, 1]",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=None, help="seed for reproducible sampling")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context each step (no KV cache)")


def load_model_and_tokenizer(checkpoint: str | os.PathLike, device: str | None) -> tuple[GPTModel, Tokenizer]:
    """The model and its tokenizer, from a run folder (config.json + model.safetensors + tokenizer.json), one
    of its checkpoints (``run/checkpoints/ckpt-N``: the run's tokenizer), a Hugging Face GPT-2 folder or a
    GPT-2 model name (gpt2, gpt2-medium, ...: GPT-2's tokenizer).

    The one validation of config + weights + tokenizer together: ``from_pretrained`` checks config.json's
    sizes against the weights file's header before allocating, then every name, shape, dtype and value;
    here the tokenizer's vocabulary is checked against the model's.
    """
    from tinygrad_llm.model import GPTModel
    from tinygrad_llm.model.pretrained import ALIASES, HF_MODELS
    from tinygrad_llm.tokenizer import get_tokenizer

    folder = Path(checkpoint)
    if not folder.exists() and (str(checkpoint) in HF_MODELS or str(checkpoint) in ALIASES):
        return GPTModel.from_pretrained(str(checkpoint), device=device), get_tokenizer("gpt2")
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder (nor a model name: {', '.join(HF_MODELS)})")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a folder with config.json and model.safetensors")
    try:
        is_bert = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") == "bert"
    except (OSError, ValueError, AttributeError):
        is_bert = False  # missing or unreadable: from_pretrained below names the problem
    if is_bert:
        raise ValueError(
            f"{folder} holds a BERT (an encoder, from 'train --arch bert'): it fills in masked tokens "
            "and does not generate text; load it with BertForMaskedLM.from_pretrained, or fine-tune it "
            "with 'finetune-classifier --arch bert --init-from'"
        )
    model = GPTModel.from_pretrained(folder, device=device)
    return model, tokenizer_for(folder, model.config.vocab_size)


GPT2_VOCAB = 50257


def tokenizer_for(folder: Path, vocab_size: int) -> Tokenizer:
    """The tokenizer that belongs with the model in ``folder``: its tokenizer.json (a checkpoint folder's is
    the run's, two levels up), else GPT-2's for a model with GPT-2's vocabulary; checked against
    ``vocab_size``. Anything else is an error naming tokenizer.json and what was expected."""
    from tinygrad_llm.tokenizer import TOKENIZER_FILE, get_tokenizer, load_tokenizer

    file = folder / TOKENIZER_FILE
    if not file.is_file() and folder.parent.name == "checkpoints":  # run/checkpoints/ckpt-N
        file = folder.parent.parent / TOKENIZER_FILE
    if file.is_file() and _is_hf_tokenizers_file(file) and vocab_size in (GPT2_VOCAB, 50304):
        return get_tokenizer("gpt2")  # a Hugging Face GPT-2 folder's own tokenizer.json: GPT-2's BPE
    if file.is_file():
        tokenizer = load_tokenizer(file)
        fits = tokenizer.n_vocab <= vocab_size if tokenizer.name == "gpt2" else tokenizer.n_vocab == vocab_size
        if not fits:
            raise ValueError(
                f"{file}: a {tokenizer.name} tokenizer of {tokenizer.n_vocab} tokens, but the model in "
                f"{folder} has a vocabulary of {vocab_size}: the tokenizer and the model do not belong "
                "together (copy the tokenizer.json of the run that trained this model)"
            )
        return tokenizer
    if vocab_size in (GPT2_VOCAB, 50304):  # GPT-2's vocabulary (50304: padded to a multiple of 64, as nanoGPT)
        return get_tokenizer("gpt2")
    raise FileNotFoundError(
        f"{file}: missing; the model in {folder} has a vocabulary of {vocab_size} tokens, not "
        f"GPT-2's {GPT2_VOCAB}, so its tokenizer cannot be assumed (copy the tokenizer.json of "
        "the run that trained it)"
    )


def _is_hf_tokenizers_file(file: Path) -> bool:
    """Whether ``file`` is in the Hugging Face ``tokenizers`` format (a "model" entry, no "type" of ours)."""
    import json

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model" in data and "type" not in data
