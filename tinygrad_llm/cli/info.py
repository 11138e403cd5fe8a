"""``tinygrad-llm info``: a model's configuration, parameter count and training memory estimate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.cli.common import positive_int
from tinygrad_llm.cli.preflight import checked_config

if TYPE_CHECKING:
    import argparse
    import os

    from tinygrad_llm.model.config import GPTConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and memory of a preset or a saved model",
        description="Print the configuration, parameter count and an estimate of the memory "
        "training needs (parameters, gradients, AdamW moments, activations).",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", default=None, help="a preset name (default gpt2-small)")
    which.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="a run folder or a Hugging Face GPT-2 folder (its config.json)",
    )
    which.add_argument("--list", action="store_true", help="list the presets")
    which.add_argument(
        "--threads",
        action="store_true",
        dest="threads_only",
        help="only the thread policy: how many CPU threads the math would use now, and why",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="batch size for the memory estimate")
    p.add_argument(
        "--context-length",
        type=positive_int,
        default=None,
        help="tokens per window for the memory estimate (default: the model's context)",
    )
    p.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="data-parallel processes (mpiexec -n N): memory per process, with and without ZeRO-1 (train --zero)",
    )
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from tinygrad_llm.memory import training_memory
    from tinygrad_llm.model import PRESETS, GPTConfig, count_parameters, format_bytes
    from tinygrad_llm.runtime.host_memory import available_memory

    if args.threads_only:
        print_threads()
        return 0
    if args.list:
        for name, cfg in PRESETS.items():
            print(
                f"{name:12s} {count_parameters(cfg):>14,} parameters  {cfg.n_layers:>2} layers "
                f"{cfg.n_heads:>2} heads {cfg.emb_dim:>5} wide  context {cfg.context_length:>4}  "
                f"vocabulary {cfg.vocab_size:,}"
            )
        print(
            "(counted at each preset's own vocabulary and context: the embedding and head grow with the "
            "tokenizer's vocabulary, so a run's count, which train prints, differs)"
        )
        return 0
    if args.checkpoint:  # checked against its weights' header, as generate checks it
        config, weights_note = checked_config(Path(args.checkpoint))
        title = str(args.checkpoint)
    else:
        name = args.preset or "gpt2-small"
        config = GPTConfig.preset(name)
        title = name
    print(f"{title}")
    for key, value in config.to_dict().items():
        print(f"  {key:16s} {value}")
    untied, tied = config.num_parameters(tied=False), config.num_parameters(tied=True)  # a variant counts its own
    print(
        f"  parameters       {config.num_parameters():,} (untied {untied:,}; with the output head tied to "
        f"the token embedding {tied:,})"
    )
    if args.checkpoint:
        print(f"  {'weights':16s} {weights_note}")
        for line in run_summary(Path(args.checkpoint)):
            print(f"  {line}")
    ctx = args.context_length or config.context_length
    if ctx > config.context_length:
        raise ValueError(
            f"--context-length {ctx}: the model takes at most {config.context_length} positions (its context_length)"
        )
    memory = training_memory(config, args.batch_size, ctx)  # the estimate every training command checks
    print(f"  training memory, float32, batch {args.batch_size} x context {ctx}:")
    for key in ("parameters", "gradients", "optimizer", "activations", "total"):
        print(f"    {key:14s} {format_bytes(memory[key])}")
    available = available_memory()
    if available is not None:
        print(f"    {'available':14s} {format_bytes(available[0])} ({available[1]})")
    if args.processes > 1:
        print_data_parallel_memory(config, args.batch_size, ctx, args.processes)
    print_threads()
    return 0


def print_data_parallel_memory(config: GPTConfig, batch_size: int, context_length: int, processes: int) -> None:
    """Per process of ``mpiexec -n processes`` (batch_size each): the flat gradient buffer the Allreduce adds,
    and what ZeRO-1 saves by keeping 1/processes of AdamW's moments (tinygrad_llm/dist)."""
    from tinygrad_llm.memory import training_memory
    from tinygrad_llm.model import format_bytes

    plain = training_memory(config, batch_size, context_length, processes=processes)
    zero = training_memory(config, batch_size, context_length, processes=processes, zero=True)
    moments, shard = plain["optimizer"], zero["optimizer"]
    print(f"  data-parallel over {processes} processes, per process (batch {batch_size} each):")
    print(
        f"    {'without ZeRO':15s} {format_bytes(plain['total'])} (the above + a {format_bytes(plain['allreduce'])} "
        f"gradient buffer for the Allreduce)"
    )
    print(
        f"    {'ZeRO-1 (--zero)':15s} {format_bytes(zero['total'])}: AdamW moments {format_bytes(shard)} "
        f"instead of {format_bytes(moments)}, saving {format_bytes(moments - shard)} per process"
    )


def print_threads() -> None:
    from tinygrad_llm import runtime

    print("threads (CPU)")
    for line in runtime.describe():
        print(f"  {line}")


def run_summary(folder: str | os.PathLike) -> list[str]:
    """How far a run folder's training went: its step, tokens seen, last and best losses (nothing for a
    folder that is only a model)."""
    import json

    from tinygrad_llm.checkpoint import TRAINER_JSON, CheckpointError, find_checkpoint

    lines = []
    try:
        state = json.loads((find_checkpoint(folder) / TRAINER_JSON).read_text(encoding="utf-8"))
    except (CheckpointError, OSError, ValueError):
        state = None
    if isinstance(state, dict) and "step" in state:
        total = (state.get("train_config") or {}).get("max_steps")
        lines.append(
            f"{'trained':16s} step {state['step']:,}{f' of {total:,}' if total else ''}, "
            f"{state.get('tokens_seen', 0):,} tokens seen (latest checkpoint)"
        )
    log = folder / "log.jsonl"
    if log.is_file():
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        if records:
            last = records[-1]
            best = min(records, key=lambda r: r["val_loss"])
            lines.append(
                f"{'last evaluation':16s} step {last['step']:,}: train loss {last['train_loss']:.4f}, "
                f"val loss {last['val_loss']:.4f}"
            )
            lines.append(
                f"{'best val loss':16s} {best['val_loss']:.4f} at step {best['step']:,} (the model in this folder)"
            )
    metrics = folder / "metrics.json"
    if metrics.is_file():
        values = json.loads(metrics.read_text(encoding="utf-8"))
        scores = [
            f"{split} accuracy {values[f'{split}_accuracy'] * 100:.1f}%"
            for split in ("train", "val", "test")
            if isinstance(values.get(f"{split}_accuracy"), (int, float))
        ]
        scores += [
            f"{split} loss {values[f'{split}_loss']:.4f}"
            for split in ("train", "val")
            if not scores and isinstance(values.get(f"{split}_loss"), (int, float))
        ]
        if scores:
            lines.append(f"{'fine-tuned':16s} {', '.join(scores)}")
    return lines
