"""What every training command checks before it allocates a model or a batch.

The model's shape is worked out without building it -- from --init-from's config.json, checked against its
weights' header (``checked_config``, which ``info --checkpoint`` uses too), from a GPT-2 name, or from the
preset and the size flags -- and the flags are checked against it: --max-length within the model's context,
--lora-rank within its layers' width, and the memory the job needs (``tinygrad_llm.memory``) within what the
machine has left. Each refusal names the flag to change. Where the shape cannot be known this early (a BERT
checkpoint, a preset that does not exist), nothing is checked here: the library then names the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.finetune.recipe import check_max_length

if TYPE_CHECKING:
    import argparse

    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.model.config import GPTConfig

# What a tokenizer's vocabulary is before any text is read. A character vocabulary is the text's own
# characters, known only once it is read: 256 stands in for it (the-verdict has 62, Python's help texts 151).
VOCABULARY = {"gpt2": 50257, "byte": 256, "char": 256}
BERT_TOKENS = 4  # [PAD] [CLS] [SEP] [MASK], added after the vocabulary
# A fine-tuning batch is as long as its longest record (cut at --max-length), known only once the data are read:
# without --max-length the estimate takes this many tokens (at most the model's context), a length every data
# set here exceeds, so that a job refused would not have fit.
SHORT_RECORDS = 64


def checked_config(folder: Path) -> tuple[GPTConfig, str]:
    """(the model configuration in ``folder``'s config.json, a line about its weights): the config checked
    against model.safetensors' header, as generate checks it before loading (only the header is read), so
    a config.json that the weights contradict is refused before anything is built. A folder with a
    config.json alone (a configuration to plan with) is read, and the line says so."""
    from tinygrad_llm.model.ngram_gpt import check_tables_fit_header, config_from_dict
    from tinygrad_llm.model.pretrained import (
        WEIGHTS_FILE,
        PretrainedSafetensors,
        check_config_fits_header,
        config_from_hf,
        is_hf_config,
    )

    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (expected a run folder with config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        hf_layout = is_hf_config(data)
        config = config_from_hf(data, path) if hf_layout else config_from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: not a model configuration ({exc})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        return config, f"no {WEIGHTS_FILE} here: the sizes are config.json's alone"
    header = PretrainedSafetensors(weights)  # the header only: no tensor is read
    check_config_fits_header(config, header, path, hf_layout=hf_layout)
    if not hf_layout:
        check_tables_fit_header(config, header, path)
    return config, f"{WEIGHTS_FILE} holds this model (its header agrees with config.json)"


def start_config(init_from: str) -> GPTConfig | None:
    """The shape of the model --init-from names: a folder's config.json (checked against its weights), or a
    GPT-2 name's preset (as released: QKV biases, tied head); None for a BERT or anything else."""
    from tinygrad_llm.model import GPTConfig
    from tinygrad_llm.model.pretrained import ALIASES, HF_MODELS

    folder = Path(init_from).expanduser()
    if folder.is_dir():
        try:
            is_bert = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") == "bert"
        except (OSError, ValueError, AttributeError):
            return None  # missing or unreadable: loading names the problem
        return None if is_bert else checked_config(folder)[0]
    name = ALIASES.get(init_from, init_from)
    if name not in HF_MODELS:
        return None
    return GPTConfig.preset("gpt2-small" if name == "gpt2" else name, qkv_bias=True, tie_weights=True)


def preset_config(preset: str, vocab_size: int, context_length: int, args: argparse.Namespace) -> GPTConfig | None:
    """A fresh model's shape: the preset with the vocabulary, context and the size flags given (None where
    the preset or the sizes are wrong: the library names that)."""
    from tinygrad_llm.model import PRESETS, GPTConfig, NgramGPTConfig

    if preset not in PRESETS:
        return None
    sizes = {name: getattr(args, name, None) for name in ("n_layers", "n_heads", "emb_dim")}
    overrides = {name: value for name, value in sizes.items() if value is not None}
    try:
        if getattr(args, "ngram_sizes", None):  # the from-scratch classifier's hashed n-gram tables
            return NgramGPTConfig.preset(
                preset,
                vocab_size=vocab_size,
                context_length=context_length,
                ngram_sizes=args.ngram_sizes,
                ngram_buckets=args.ngram_buckets,
                **overrides,
            )
        return GPTConfig.preset(preset, vocab_size=vocab_size, context_length=context_length, **overrides)
    except (TypeError, ValueError):
        return None


def check_lora_rank(config: GPTConfig, rank: int | None) -> None:
    """A rank above every adapted layer's own: each Linear of the GPT has emb_dim inputs or outputs, so an
    update A @ B of it has rank at most emb_dim, and a larger rank adds parameters and nothing else.
    (Hugging Face PEFT's LoRA checks only that r > 0 and builds whatever rank it is given.)"""
    if rank is not None and rank > config.emb_dim:
        raise ValueError(
            f"--lora-rank {rank}: above the rank of every layer it adapts (the model's Linears are "
            f"{config.emb_dim} wide, emb_dim, so an update A @ B of one has rank at most {config.emb_dim}; a "
            f"larger rank only adds parameters); use --lora-rank {config.emb_dim} or less (the LoRA paper: 1 to 64)"
        )


def check_train(args: argparse.Namespace, comm: Communicator) -> None:
    """``tinygrad-llm train``: the memory of the run its flags describe (a resumed run's own settings and
    shape), before the text is read or the run folder claimed; and a note where --zero can do nothing (one
    process: nothing to shard), as a run that is one process where MPI is around says so."""
    import sys

    from tinygrad_llm.checkpoint import find_checkpoint
    from tinygrad_llm.train.run import RunSettings, read_saved_settings

    if args.zero and comm.world_size == 1:
        print(
            "note: --zero has no effect in one process: it shards AdamW's moments over the processes of a "
            "data-parallel run (mpiexec -n N tinygrad-llm train ... --zero)",
            file=sys.stderr,
        )

    batch_size, context = args.batch_size, args.context_length
    if args.resume:
        try:
            checkpoint = find_checkpoint(RunSettings.from_namespace(args).run_folder())
            saved = read_saved_settings(checkpoint)
            config = start_config(str(checkpoint))
        except (OSError, ValueError):
            return  # no checkpoint, or a damaged one: resuming names it
        batch_size, context = saved.get("batch_size", batch_size), saved.get("context_length", context)
        fixed = "run: a resumed run keeps its own --batch-size, --context-length and model, so start a new one"
        flags = dict.fromkeys(("activations", "model", "lora"), fixed)
    elif args.init_from:
        config = start_config(args.init_from)
        flags = {"activations": "--batch-size or --context-length", "model": "model (--init-from)"}
    else:
        tokenizer = args.tokenizer or "char"
        vocab = args.vocab_size if tokenizer == "bpe" else VOCABULARY[tokenizer]
        vocab += BERT_TOKENS if args.arch == "bert" else 0  # the encoder's shape is the GPT's, near enough
        config = preset_config(args.preset, vocab, context, args)
        flags = {"activations": "--batch-size or --context-length", "model": "--preset (or --n-layers, --emb-dim)"}
    if config is None or context > config.context_length:
        return  # the library names a context the model does not have
    check_memory(args, config, batch_size, context, comm, flags, zero=args.zero)


def check_finetune(args: argparse.Namespace, comm: Communicator) -> None:
    """finetune-classifier, finetune-instruct, finetune-dpo: --max-length and --lora-rank against the starting
    model's shape, and the memory of the job, before the data is read or the output folder claimed."""
    import types

    from tinygrad_llm.finetune.recipe import SCRATCH_RECIPE, resolve_classifier_defaults
    from tinygrad_llm.model import PRESETS

    classifier = args.command == "finetune-classifier"
    job = types.SimpleNamespace(**vars(args))  # the recipe's defaults filled in on a copy
    if classifier:
        resolve_classifier_defaults(job)  # (also refuses flags that do not combine, as the recipe would)
    tokenizer = getattr(job, "tokenizer", None) or ("byte" if classifier else "gpt2")
    if job.init_from:
        config = start_config(job.init_from)
        model_flag = "model (--init-from)"
    else:  # a fresh classifier's context is its messages' length (the recipe's 160), an instruction model's its own
        default = "tiny" if classifier else "small-cpu"
        vocab = VOCABULARY[tokenizer] + (BERT_TOKENS if getattr(job, "arch", "gpt") == "bert" else 0)
        context = None
        if classifier:
            context = job.max_length = job.max_length or SCRATCH_RECIPE["max_length"]
        elif job.preset in PRESETS or job.preset is None:
            context = PRESETS[job.preset or default].context_length
        config = preset_config(job.preset or default, vocab, context, job) if context else None
        model_flag = "--preset (or --n-layers, --emb-dim)"
    if config is None:
        return
    check_max_length(job.max_length, config.context_length)  # the recipes' own check, before the data are read
    context = job.max_length or min(config.context_length, SHORT_RECORDS)
    lora_rank = getattr(job, "lora_rank", None)
    check_lora_rank(config, lora_rank)
    check_memory(
        args,
        config,
        job.batch_size,
        context,
        comm,
        {
            "activations": "--batch-size or --max-length",
            "model": model_flag,
            "lora": "--lora-rank",
        },
        num_classes=2 if classifier else None,
        lora_rank=lora_rank,
        sequences=2 if args.command == "finetune-dpo" else 1,
    )


def check_memory(
    args: argparse.Namespace,
    config: GPTConfig,
    batch_size: int,
    context: int,
    comm: Communicator,
    flags: dict,
    **job: object,
) -> None:
    """``memory.check_training_memory`` for this process and the others of its machine (mpiexec), on the
    device the command computes on (--device, else $TINYGRAD_LLM_DEVICE)."""
    import os

    from tinygrad_llm.memory import check_training_memory

    device = getattr(args, "device", None) or os.environ.get("TINYGRAD_LLM_DEVICE", "").strip() or "cpu"
    check_training_memory(
        config,
        batch_size,
        context,
        flags=flags,
        processes=comm.world_size,
        processes_here=1 if device == "cuda" else comm.local_size,  # one GPU per process of a machine
        device=device,
        **job,
    )
