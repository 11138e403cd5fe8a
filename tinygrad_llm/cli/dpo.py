"""``tinygrad-llm finetune-dpo``: preference tuning with DPO, the book's chapter-7 bonus.

The starting model (``--init-from``: usually an instruction-tuned run of ``finetune-instruct``, or a Hugging
Face GPT-2 folder) is also the frozen reference. Its log-probabilities of every chosen and rejected response
are computed once, before training, so no second copy of the model is kept. Defaults are the book's: AdamW
lr 5e-6, weight decay 0.01, batch 8, beta 0.1, one epoch, log-probabilities averaged over response tokens.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.cli.common import add_device_argument, finite_float, nonnegative_float, nonnegative_int, positive_int
from tinygrad_llm.cli.finetune import add_out_arguments, claimed, log

if TYPE_CHECKING:
    import argparse

DATA_FILE = "instruction-data-with-preference.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune-dpo",
        help="preference-tune a GPT with DPO (chapter 7, bonus)",
        description="Direct preference optimization on {instruction, input, chosen, rejected} records (split "
        "85/10/5 in file order: train / test / validation, as the book). Writes the model, its "
        "tokenizer, metrics.json (train/val loss and reward margin per evaluation, before and after) "
        "and dpo-loss.png / dpo-reward-margin.png into --out.",
    )
    p.add_argument(
        "--init-from",
        required=True,
        metavar="DIR|NAME",
        help="the starting (and reference) model: a run folder of 'tinygrad-llm train' or "
        "'finetune-instruct', or a GPT-2 folder/name in the Hugging Face layout",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help=f"a JSON list of {{instruction, input, chosen, rejected}} (default: $TINYGRAD_LLM_DATA/{DATA_FILE})",
    )
    train = p.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=1, help="passes over the training split (default 1)")
    train.add_argument("--lr", type=finite_float, default=5e-6, help="AdamW learning rate (default 5e-6)")
    train.add_argument("--weight-decay", type=nonnegative_float, default=0.01, help="AdamW weight decay (default 0.01)")
    train.add_argument("--batch-size", type=positive_int, default=8, help="records per batch (default 8)")
    train.add_argument(
        "--beta", type=finite_float, default=0.1, help="how far the policy may move from the reference (default 0.1)"
    )
    train.add_argument(
        "--sum-logprobs",
        action="store_true",
        help="sum the response tokens' log-probabilities (the DPO paper) instead of averaging them (the book)",
    )
    train.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="allowed_max_length: tokens per sequence, at most the context length (the default)",
    )
    train.add_argument("--dropout", type=nonnegative_float, default=None, help="dropout rate (default: the model's)")
    train.add_argument(
        "--max-train", type=positive_int, default=None, help="use only the first N training records (a quick run)"
    )
    train.add_argument("--eval-freq", type=positive_int, default=5, help="steps between evaluations (default 5)")
    train.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation (default 5)")
    run = p.add_argument_group("run")
    run.add_argument(
        "--seed", type=nonnegative_int, default=123, help="seed of the shuffling and dropout (default 123)"
    )
    add_device_argument(run)
    add_out_arguments(run)
    p.set_defaults(run=claimed(run_finetune_dpo))


def run_finetune_dpo(args: argparse.Namespace, out: Path) -> int:
    import tinygrad_llm as tl
    from tinygrad_llm.cli.common import describe_processes
    from tinygrad_llm.data import DataLoader
    from tinygrad_llm.files import require_data_file, write_json
    from tinygrad_llm.finetune import dpo
    from tinygrad_llm.finetune.instruction import split_instruction_data
    from tinygrad_llm.finetune.io import save_finetuned
    from tinygrad_llm.finetune.preference import PreferenceDataset, load_preference_data
    from tinygrad_llm.finetune.recipe import (
        check_max_length,
        check_usable_records,
        load_start_model,
        parameter_counts,
        require_end_of_text,
        saved_if_interrupted,
    )
    from tinygrad_llm.optim import AdamW
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.plot import plot_values
    from tinygrad_llm.train.progress import Progress

    comm = args.comm  # set by claimed: under mpiexec, data-parallel; process 0 alone writes
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.beta <= 0:
        raise ValueError(f"--beta must be positive, got {args.beta}")
    data_path = args.data or require_data_file(DATA_FILE)
    train_data, test_data, val_data = split_instruction_data(load_preference_data(data_path))
    if args.max_train is not None:
        train_data = train_data[: args.max_train]
    tl.manual_seed(args.seed)
    args.emb_dim = args.n_layers = args.n_heads = None  # the starting model's shape is kept
    model, tokenizer, described = load_start_model(args)  # applies --dropout
    require_end_of_text(tokenizer, args.init_from, "finetune-dpo")
    if args.device:
        model.to(args.device)
    allowed = check_max_length(args.max_length, model.config.context_length)
    average = not args.sum_logprobs
    train_set, val_set = (PreferenceDataset(d, tokenizer, allowed_max_length=allowed) for d in (train_data, val_data))
    check_usable_records(  # pairs whose DPO gradient is zero
        len(train_set.records_without_preference()),
        len(train_set),
        f"have the same chosen and rejected tokens within the {allowed} tokens of --max-length (the same "
        "answer twice, or both cut off before they differ): DPO has nothing to prefer",
        "give records whose chosen and rejected responses differ, and a --max-length that reaches the difference",
        log,
    )
    if len(train_set) < args.batch_size * comm.world_size:
        raise ValueError(
            f"--batch-size {args.batch_size} x {comm.world_size} process(es) is larger than the "
            f"{len(train_set)} training records"
        )
    counts = parameter_counts(model)
    log(
        f"DPO on {described}: {counts['trainable_parameters']:,} parameters trainable; {len(train_set)} / "
        f"{len(val_set)} train/val preference pairs; beta {args.beta}, lr {args.lr}, "
        f"{'summed' if args.sum_logprobs else 'averaged'} log-probabilities{describe_processes(comm, args.batch_size)}"
        f" -> {out}"
    )

    start = time.perf_counter()
    for dataset in (train_set, val_set):  # the starting model is the reference: score every pair once, now
        dpo.precompute_reference_logprobs(model, dataset, args.batch_size, average, args.device)
    reference_s = time.perf_counter() - start
    batch = args.batch_size * comm.world_size  # --batch-size is per process: each takes its rows
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True, seed=args.seed)
    val_loader = DataLoader(val_set, batch_size=batch, drop_last=False)
    full_train_loader = DataLoader(train_set, batch_size=args.batch_size, drop_last=False)
    before = dpo.evaluate_dpo_loss_loader(
        model, None, train_loader, val_loader, args.beta, args.eval_iter, average, args.device
    )
    optimizer = AdamW(
        [(name, p) for name, p in model.named_parameters() if p.requires_grad],
        lr=args.lr,
        weight_decay=args.weight_decay,
    )
    start = time.perf_counter()
    meta = {"task": "instruction", "prompt_format": "alpaca", "tuning": "dpo"}
    # Ctrl-C or SIGTERM while training saves the model as it is, as the other fine-tunings do
    bar = Progress(args.epochs * len(train_loader), log, enabled=comm.is_root)  # one bar, the job's ETA
    with (
        contextlib.closing(bar),
        saved_if_interrupted(out, lambda: (model, meta), tokenizer, lambda: None, write=comm.is_root, log=log),
    ):
        tracking = dpo.train_model_dpo(
            model,
            None,
            train_loader,
            val_loader,
            optimizer,
            args.epochs,
            args.beta,
            args.eval_freq,
            args.eval_iter,
            average=average,
            device=args.device,
            log=log,
            parallel=DataParallel(comm, model, optimizer),
            bar=bar,
        )
    train_s = time.perf_counter() - start
    if not comm.is_root:
        return 0  # process 0 evaluates and writes
    after = dpo.evaluate_dpo_loss_loader(
        model, None, full_train_loader, val_loader, args.beta, None, average, args.device
    )
    metrics = {
        "before": before,
        "after": after,
        "history": {
            "step": tracking["steps"],
            "tokens_seen": tracking["tokens_seen"],
            **{
                f"{split}_{name}": tracking[f"{split}_{key}"]
                for split in ("train", "val")
                for name, key in (
                    ("loss", "losses"),
                    ("chosen_reward", "chosen_rewards"),
                    ("rejected_reward", "rejected_rewards"),
                )
            },
            **{
                f"{split}_reward_margin": [
                    c - r for c, r in zip(tracking[f"{split}_chosen_rewards"], tracking[f"{split}_rejected_rewards"])
                ]
                for split in ("train", "val")
            },
        },
        **counts,
        "epochs": args.epochs,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "beta": args.beta,
        "batch_size": args.batch_size,
        "logprobs": "sum" if args.sum_logprobs else "mean",
        "allowed_max_length": allowed,
        "records": {"train": len(train_set), "val": len(val_set)},
        "seed": args.seed,
        "train_seconds": round(train_s, 1),
        "reference_seconds": round(reference_s, 1),
        "init_from": args.init_from,
        "config": model.config.to_dict(),
    }
    save_finetuned(out, model, tokenizer, meta)
    write_json(out / "metrics.json", metrics)
    history = metrics["history"]
    if history["step"]:
        for label, key in (("loss", "loss"), ("reward margin", "reward_margin")):
            plot_values(
                history["step"],
                history["tokens_seen"],
                history[f"train_{key}"],
                history[f"val_{key}"],
                label=label,
                path=out / f"dpo-{key.replace('_', '-')}.png",
                xlabel="Steps",
                top_xlabel="Tokens seen",
            )
    log(
        f"before: train loss {before['train_loss']:.3f}, margin {before['train_reward_margin']:.3f}; after "
        f"{len(train_set) // args.batch_size * args.epochs} steps ({train_s:.0f}s): train loss "
        f"{after['train_loss']:.3f}, val loss {after['val_loss']:.3f}, reward margin train "
        f"{after['train_reward_margin']:.3f}, val {after['val_reward_margin']:.3f}; saved to {out}"
    )
    return 0
