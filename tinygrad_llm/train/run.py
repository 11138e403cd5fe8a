"""One training run from its settings: what ``tinygrad-llm train`` does, for a script as for the command line.

    from tinygrad_llm.train.run import RunSettings, train_run
    run = train_run(RunSettings(data="the-verdict.txt", max_steps=500, out="runs/verdict"))
    run.trainer.history[-1]["val_loss"], run.model, run.tokenizer

``train_run`` reads the text, builds the tokenizer, the data sets, the model (a GPT, or with ``arch="bert"`` an
encoder trained to fill in masked tokens) and the ``Trainer``, claims the run folder and trains. With
``resume=True`` it continues the run saved in ``out`` exactly where it stopped: the settings that shape the data
or the model are the run's own (saved with every checkpoint), those of the schedule may change. Messages go to
``log`` (stderr by default); settings that cannot work raise ValueError before anything is written. The option
names in messages are the command line's (``--max-steps`` for ``max_steps``).
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.data.tokens_file import header_path

if TYPE_CHECKING:
    import argparse

    from tinygrad_llm.backend import Array
    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.model.config import GPTConfig
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.tokenizer.base import Tokenizer
    from tinygrad_llm.train.trainer import Trainer

    Log = Callable[[str], object]

DEFAULTS = {  # the main job: a character-level GPT on pydoc_data, a few minutes on 2 CPU cores
    "tokenizer": "char",
    "context_length": 64,
    "batch_size": 12,
    "max_steps": 2000,
    "lr": 2e-3,
    "warmup_steps": 100,
    "eval_interval": 250,
    "eval_iters": 10,
    "dropout": 0.0,
}

ALLOW_EOT = {"<|endoftext|>"}  # a corpus may separate its documents with end-of-text, as the book's

# What a resumed run takes from the run itself (saved with every checkpoint) unless the caller gives it.
# These shape the data or the model: the run cannot continue with other values.
FIXED_ON_RESUME = (
    "arch",
    "data",
    "tokenizer",
    "vocab_size",
    "val_fraction",
    "preset",
    "init_from",
    "n_layers",
    "n_heads",
    "emb_dim",
    "context_length",
    "dropout",
    "batch_size",
    "grad_accum",
    "seed",
)
# These a resumed run may change: train longer, with another schedule, evaluate more often.
OVERRIDABLE_ON_RESUME = (
    "max_steps",
    "epochs",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "eval_interval",
    "eval_iters",
    "keep_last",
    "sample_prompt",
    "sample_tokens",
    "precision",
)


@dataclasses.dataclass
class RunSettings:
    """Everything a run is made of, with ``tinygrad-llm train``'s defaults (its ``--help`` says what each does).

    ``max_steps`` and ``epochs`` both None: ``DEFAULTS["max_steps"]`` steps. ``grad_clip`` 0: no clipping.
    """

    data: str | None = None
    tokenizer: str | None = None
    vocab_size: int = 1024
    val_fraction: float = 0.1
    arch: str = "gpt"
    preset: str = "mini"
    init_from: str | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    emb_dim: int | None = None
    context_length: int = DEFAULTS["context_length"]
    dropout: float = DEFAULTS["dropout"]
    batch_size: int = DEFAULTS["batch_size"]
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: int | None = None
    lr: float = DEFAULTS["lr"]
    min_lr: float | None = None
    warmup_steps: int = DEFAULTS["warmup_steps"]
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = DEFAULTS["eval_interval"]
    eval_iters: int = DEFAULTS["eval_iters"]
    seed: int = 1337
    device: str | None = None
    precision: str = "fp32"
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    keep_last: int = 2
    zero: bool = False
    sample_prompt: str | None = None
    sample_tokens: int = 200

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RunSettings:
        """From an object with these attributes (the command line's parsed arguments)."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def run_folder(self) -> Path:
        """``out``, or runs/<the data's name> (runs/pydoc for Python's help texts)."""
        return Path(self.out) if self.out else Path("runs") / (Path(self.data).stem if self.data else "pydoc")

    def saved(self) -> dict:
        """The settings a resumed run takes again, as JSON-able data (the data path made absolute)."""
        settings = {name: getattr(self, name) for name in FIXED_ON_RESUME + OVERRIDABLE_ON_RESUME}
        if settings["data"] is not None:
            settings["data"] = str(Path(settings["data"]).resolve())
        return settings


@dataclasses.dataclass
class TrainRun:
    """A run once trained: its settings (a resumed run's own filled in), folder, the start of its validation
    text, tokenizer, model and trainer, and the sample prompt (checked to encode before training)."""

    settings: RunSettings
    out: Path
    val_head: str  # the first characters of the validation text (where sample prompts come from)
    described: str
    tokenizer: object
    prompt: str
    prompt_ids: object  # (1, T) int64
    model: object = None
    trainer: object = None


def first_line(text: str, limit: int) -> str:
    """The first whole non-empty line of ``text`` (cut to ``limit`` characters): a natural sample prompt."""
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]  # [0] may start mid-line
    return (lines[0] if lines else text.strip())[:limit] or text[:limit]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def apply_saved_settings(settings: RunSettings, saved: dict, out: Path, given: set | None = None) -> list[str]:
    """Take the run's own ``saved`` settings for every one the caller did not give (``given``: the names given
    explicitly; None: all of them); refuse given values that would change the data or the model; return the
    overrides as "--flag old -> new"."""
    given = set(saved) if given is None else set(given)
    if given & {"max_steps", "epochs"}:  # one of them sets the length; the other is then unset
        given |= {"max_steps", "epochs"}
    conflicts, overrides = [], []
    for name, old in saved.items():
        if name not in given:
            setattr(settings, name, old)
            continue
        new = getattr(settings, name)
        if name == "data" and new is not None:
            new = str(Path(new).resolve())
        if new == old:
            continue
        if name in FIXED_ON_RESUME:
            conflicts.append(f"{flag(name)} {new} (the run has {old})")
        elif new is not None:
            overrides.append(f"{flag(name)} {old} -> {new}")
    if conflicts:
        raise ValueError(
            f"--resume: {out} was trained with other data or model settings than "
            f"{', '.join(conflicts)}; drop those flags to continue it, or start a new run with another "
            f"--out"
        )
    return overrides


def read_saved_settings(checkpoint: Path) -> dict:
    """The settings saved with a run's checkpoint ({} for a run saved before they were)."""
    import json

    from tinygrad_llm.checkpoint import TRAINER_JSON

    state = json.loads((checkpoint / TRAINER_JSON).read_text(encoding="utf-8"))
    if "settings" in state:
        return state["settings"]
    saved = {
        name: value
        for name, value in state.get("train_config", {}).items()
        if name in OVERRIDABLE_ON_RESUME or name in FIXED_ON_RESUME
    }  # older runs: at least their training settings
    if "grad_clip" in saved and saved["grad_clip"] is None:
        saved["grad_clip"] = 0.0
    return saved


def build_tokenizer(name: str, text: str, vocab_size: int, log: Log = _stderr) -> Tokenizer:
    from tinygrad_llm.tokenizer import get_tokenizer

    if name == "char":
        return get_tokenizer("char", text=text)
    if name == "bpe":
        log(f"training a byte-level BPE of {vocab_size} tokens on the data ...")
        with warnings.catch_warnings():  # a small text's shortfall is said below, in the run's own words
            warnings.filterwarnings("ignore", message="train_bpe: the text allows only", category=UserWarning)
            tokenizer = get_tokenizer("bpe", text=text, vocab_size=vocab_size)
        if tokenizer.n_vocab < vocab_size:
            log(
                f"note: the text offers only {tokenizer.n_vocab} BPE tokens, so the vocabulary has "
                f"{tokenizer.n_vocab} rather than --vocab-size {vocab_size} (more text gives more)"
            )
        return tokenizer
    return get_tokenizer(name)


def check_settings(settings: RunSettings) -> None:
    """Everything wrong with the settings alone, said before any file is read or written."""
    from tinygrad_llm.model import PRESETS

    if not 0 < settings.val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {settings.val_fraction}")
    if settings.lr <= 0:
        raise ValueError(f"--lr must be positive, got {settings.lr}")
    if not settings.init_from and settings.preset not in PRESETS:
        raise ValueError(f"--preset: unknown GPT preset {settings.preset!r}: expected one of {sorted(PRESETS)}")
    if settings.device is not None:
        from tinygrad_llm.backend import check_device

        try:
            check_device(settings.device)
        except RuntimeError as exc:
            reason = str(exc).removeprefix("device 'cuda': ")
            raise ValueError(f"--device {settings.device}: {reason}") from None


def train_run(
    settings: RunSettings, comm: Communicator | None = None, given: set | None = None, log: Log = _stderr
) -> TrainRun:
    """Train as ``settings`` say, in ``settings.run_folder()``, and return the run (see the module docstring).

    ``comm``: the data-parallel communicator (``tinygrad_llm.dist.init()``; default one process): process 0
    alone claims, locks and writes the run folder. ``given``: for ``resume``, the names of the settings the
    caller gave explicitly, the others taken from the run (None: every one is compared with the run's).
    """
    from tinygrad_llm.checkpoint import NoCheckpointError, find_checkpoint
    from tinygrad_llm.dist import SingleProcess
    from tinygrad_llm.run_folder import check_output_path, claim

    comm = comm if comm is not None else SingleProcess()
    if settings.resume and settings.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite starts it afresh: pass one of them")
    out = settings.run_folder()
    if settings.resume:
        try:
            find_checkpoint(out)
        except NoCheckpointError:
            raise NoCheckpointError(
                f"--resume: no checkpoint in {out} to resume from "
                f"(train without --resume first, or pass the run's --out)"
            ) from None
    else:
        check_settings(settings)
    check_output_path(out)
    if not comm.is_root:  # process 0 alone claims, locks and writes the run folder
        return _claimed_run(settings, out, comm, given, log)
    with claim(out, "train", resume=settings.resume, overwrite=settings.overwrite):  # locked and marked as a run
        return _claimed_run(settings, out, comm, given, log)  # (read under the lock: no run writes it)


def resume_settings(
    settings: RunSettings, out: Path, given: set | None = None, log: Log = _stderr
) -> tuple[list[str], Path | None]:
    """For ``resume``: (the overrides given, the checkpoint to continue: the newest intact one, every file
    checked; a damaged newest one is named). Fills in the run's own settings and checks them."""
    from tinygrad_llm.checkpoint import find_intact_checkpoint
    from tinygrad_llm.train.trainer import check_trainer_state

    changed, checkpoint = [], None
    if settings.resume:
        checkpoint = find_intact_checkpoint(out, log=log, validate=check_trainer_state)
        changed = apply_saved_settings(settings, read_saved_settings(checkpoint), out, given)
        check_settings(settings)
    if settings.max_steps is None and settings.epochs is None:
        settings.max_steps = DEFAULTS["max_steps"]
    return changed, checkpoint


def tokenizer_name(settings: RunSettings) -> str:
    """The tokenizer's name: --tokenizer, else gpt2 with --init-from, else the default (char)."""
    return settings.tokenizer or ("gpt2" if settings.init_from else DEFAULTS["tokenizer"])


def _tokenizer(settings: RunSettings, out: Path, text: str, log):
    """The run's tokenizer: its own when resumed, else built on ``text`` (BERT's four tokens added)."""
    import tinygrad_llm as tl
    from tinygrad_llm.tokenizer import load_tokenizer, with_bert_tokens

    s = settings
    name = tokenizer_name(s)
    if s.init_from and not s.resume and s.arch == "gpt":
        if name != "gpt2":
            raise ValueError(
                f"--init-from starts from GPT-2 weights, which read GPT-2's token ids: use --tokenizer "
                f"gpt2 (the default with --init-from), not {name}"
            )
        shaped = [
            flag
            for flag, value in (("--n-layers", s.n_layers), ("--n-heads", s.n_heads), ("--emb-dim", s.emb_dim))
            if value is not None
        ]
        if shaped:
            raise ValueError(f"--init-from takes the model's shape from {s.init_from}: drop {', '.join(shaped)}")
    tl.manual_seed(s.seed)
    if _has_own_tokenizer(s, out):
        tokenizer = load_tokenizer(out)
    else:
        tokenizer = build_tokenizer(name, text, s.vocab_size, log)
    if s.arch == "bert":
        tokenizer = with_bert_tokens(tokenizer)  # + [PAD] [CLS] [SEP] [MASK] after the vocabulary
    return tokenizer


def _has_own_tokenizer(settings: RunSettings, out: Path) -> bool:
    from tinygrad_llm.tokenizer import TOKENIZER_FILE

    return settings.resume and (out / TOKENIZER_FILE).exists()


def prepare_data(
    settings: RunSettings, out: Path, log: Log = _stderr, keep_token_files: bool = True
) -> tuple[TrainRun, Array, Array]:
    """(the run so far: described corpus, tokenizer, checked sample prompt; training ids; validation ids).

    The text is streamed (``corpus.encode_corpus``), never held whole but for a BPE to train on: read once
    to check it, count its characters (the split is the book's, ``int(len(text) * (1 - val_fraction))``
    characters for training) and collect a char tokenizer's alphabet; read again to encode each side in
    chunks into ``out/train.bin`` and ``out/val.bin``, read back as memmaps. ``keep_token_files=False`` (the
    other processes of a data-parallel run): the files are written to a temporary folder, removed once
    mapped."""
    import tempfile

    from tinygrad_llm.train.corpus import encode_corpus, open_corpus, scan_corpus

    corpus = open_corpus(settings.data)
    name = tokenizer_name(settings)
    builds = not _has_own_tokenizer(settings, out)
    n_chars, text = scan_corpus(corpus, alphabet=builds and name == "char", keep_text=builds and name == "bpe")
    tokenizer = _tokenizer(settings, out, text, log)
    del text
    split = int(n_chars * (1 - settings.val_fraction))
    folder = out if keep_token_files else Path(tempfile.mkdtemp(prefix="tinygrad-llm-tokens-"))
    try:
        train_ids, val_ids, val_head, written = encode_corpus(corpus, tokenizer, split, n_chars, folder, ALLOW_EOT, log)
        try:
            run = _checked_run(settings, out, val_head, corpus.described, tokenizer, train_ids, val_ids)
        except BaseException:
            for path in written:  # a run that stops here leaves no token file (nor, then, a new folder)
                for file in (path, header_path(path)):
                    file.unlink(missing_ok=True)
            raise
    finally:
        if not keep_token_files:
            shutil.rmtree(folder, ignore_errors=True)  # the maps keep the data for as long as they live
    return run, train_ids, val_ids


def _checked_run(settings, out, val_head, described, tokenizer, train_ids, val_ids) -> TrainRun:
    """The run so far, once both splits hold a window and the sample prompt encodes."""
    import numpy as np

    ctx = settings.context_length
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < ctx + 1:
            raise ValueError(
                f"the {name} split of {described} has {len(ids)} tokens, fewer than one window of "
                f"--context-length {ctx} + 1: use a shorter context or more text"
            )
    prompt = settings.sample_prompt if settings.sample_prompt is not None else first_line(val_head, ctx // 2)
    try:  # checked now, not after the whole run
        prompt_ids = np.asarray([tokenizer.encode(prompt, allowed_special=ALLOW_EOT) or [0]], dtype=np.int64)
    except ValueError as exc:
        raise ValueError(
            f"--sample-prompt {prompt!r}: the {tokenizer.name} tokenizer cannot encode it ({exc})"
        ) from None
    return TrainRun(settings, out, val_head, described, tokenizer, prompt, prompt_ids)


def build_model(settings: RunSettings, tokenizer: Tokenizer, checkpoint: Path | None) -> tuple[Module, GPTConfig]:
    """(model, its GPTConfig): the preset's shape, the run's own (resume) or --init-from's weights."""
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.train.mlm import build_masked_lm

    s, ctx = settings, settings.context_length
    overrides = {"vocab_size": tokenizer.n_vocab, "context_length": ctx, "drop_rate": s.dropout}
    for field, value in (("n_layers", s.n_layers), ("n_heads", s.n_heads), ("emb_dim", s.emb_dim)):
        if value is not None:
            overrides[field] = value
    config = GPTConfig.preset(s.preset, **overrides)
    if s.arch == "bert":  # the encoder, of this size; or the run's own (resume), or --init-from's weights
        model = build_masked_lm(config, tokenizer, checkpoint if s.resume else s.init_from)
    elif s.resume:  # the run's own shape, whatever the flags say, checked against its weights
        model = GPTModel.from_pretrained(checkpoint, device=s.device).train()
        config = model.config
    elif s.init_from:  # (a resumed run's checkpoint already holds the weights)
        model = GPTModel.from_pretrained(s.init_from, device=s.device, drop_rate=s.dropout).train()
        config = model.config
        if ctx > config.context_length or tokenizer.n_vocab > config.vocab_size:
            raise ValueError(
                f"--init-from {s.init_from}: the model takes {config.context_length} positions and "
                f"{config.vocab_size} token ids; --context-length {ctx} and the {tokenizer.name} "
                f"tokenizer's {tokenizer.n_vocab} ids must fit"
            )
    else:
        model = GPTModel(config)
    if s.device:
        model.to(s.device)
    return model, config


def build_trainer(
    settings: RunSettings, out: Path, run: TrainRun, train_ids: Array, val_ids: Array, comm: Communicator | None
) -> Trainer:
    """The Trainer of ``run.model`` on the windows of the two splits, saving the settings with each checkpoint."""
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.train.mlm import mlm_datasets
    from tinygrad_llm.train.trainer import TrainConfig, Trainer

    s, ctx = settings, settings.context_length
    train_config = TrainConfig(
        max_steps=s.max_steps,
        epochs=s.epochs,
        batch_size=s.batch_size,
        grad_accum=s.grad_accum,
        lr=s.lr,
        min_lr=s.min_lr,
        warmup_steps=s.warmup_steps,
        weight_decay=s.weight_decay,
        grad_clip=s.grad_clip or None,
        eval_interval=s.eval_interval,
        eval_iters=s.eval_iters,
        seed=s.seed,
        keep_last=s.keep_last,
        precision=s.precision,
    )
    # stride 1 would give every offset; half a window keeps epochs short and windows varied
    if s.arch == "bert":  # [CLS] window [SEP], masked; labels only on the masked positions
        train_set, val_set = mlm_datasets(train_ids, val_ids, run.tokenizer, ctx, s.seed)
    else:
        train_set = GPTDataset(train_ids, ctx, stride=max(ctx // 2, 1))
        val_set = GPTDataset(val_ids, ctx, stride=ctx)
    trainer = Trainer(
        run.model,
        train_set,
        val_set,
        train_config,
        out,
        tokenizer=run.tokenizer,
        device=s.device,
        comm=comm,
        zero=s.zero,
    )
    trainer.run_settings = s.saved()  # saved with each checkpoint: what --resume takes again
    launcher = f"mpiexec -n {comm.world_size} " if comm is not None and comm.world_size > 1 else ""
    trainer.resume_hint = f"continue with: {launcher}tinygrad-llm train --out {shlex.quote(str(out))} --resume"
    return trainer


def _claimed_run(settings: RunSettings, out: Path, comm, given, log) -> TrainRun:
    changed, checkpoint = resume_settings(settings, out, given, log)
    run, train_ids, val_ids = prepare_data(settings, out, log, keep_token_files=comm.is_root)
    run.model, config = build_model(settings, run.tokenizer, checkpoint)
    run.trainer = build_trainer(settings, out, run, train_ids, val_ids, comm)
    if settings.resume:
        try:
            step = run.trainer.load_state(checkpoint)
        except ValueError as exc:
            if "num_windows" not in str(exc):
                raise
            raise ValueError(
                f"--resume: {out} was trained on other windows than these data, --context-length and "
                f"--val-fraction give now; pass the ones the run started with ({exc})"
            ) from None
        log(
            f"resuming {out} at step {step} with the run's own settings"
            + (f"; overriding {', '.join(changed)}" if changed else "")
        )
    _announce(run, config, train_ids, val_ids, comm, log)
    run.trainer.fit()
    if comm.is_root:
        _finish(run, log)
    return run


def _announce(run: TrainRun, config, train_ids, val_ids, comm, log) -> None:
    """The line that says what trains on what, and a warning for a schedule that never decays."""
    from tinygrad_llm.dist import ZeroAdamW
    from tinygrad_llm.dist.launch import describe_processes

    s, trainer = run.settings, run.trainer
    shape = f"from {s.init_from}" if s.init_from else s.preset
    log(
        f"training {run.model.num_parameters():,} parameters ({shape}: {config.n_layers} layers, "
        f"{config.n_heads} heads, {config.emb_dim} wide, context {s.context_length}, vocabulary {config.vocab_size}) "
        f"on {run.described}: {len(train_ids):,} training / {len(val_ids):,} validation tokens"
        f"{describe_processes(comm, s.batch_size)}, {trainer.total_steps} steps -> {run.out}"
    )
    if isinstance(trainer.optimizer, ZeroAdamW):  # --zero under mpiexec
        from tinygrad_llm.model import format_bytes

        zero = trainer.optimizer
        kept, whole = zero.exp_avg.nbytes + zero.exp_avg_sq.nbytes, 2 * zero.params_flat.nbytes
        log(
            f"ZeRO-1: each of the {comm.world_size} processes keeps {format_bytes(kept)} of AdamW's moments "
            f"instead of {format_bytes(whole)}"
        )
    if s.warmup_steps >= trainer.total_steps:
        log(
            f"warning: --warmup-steps {s.warmup_steps} is not below the run's {trainer.total_steps} steps, so the "
            f"learning rate only warms up and never decays: use --warmup-steps {trainer.total_steps // 10} "
            f"(about a tenth of the steps) or more --max-steps"
        )


def _loss(value: float | None) -> str:
    """A loss for a message; None (a NaN, as JSON keeps it) as nan."""
    return "nan" if value is None else f"{value:.4f}"


def _finish(run: TrainRun, log) -> None:
    """Say how the run ended; where the best evaluation was not the last, load the best model (the one saved
    as the run's model.safetensors) so that the sample shows what generate will."""
    trainer, out = run.trainer, run.out
    last = trainer.history[-1] if trainer.history else None
    if not last:
        return
    log(
        f"done: step {last['step']}, train loss {_loss(last['train_loss'])}, val loss {_loss(last['val_loss'])}, "
        f"{last['elapsed_s']:.0f}s; saved to {out}"
    )
    best = trainer.best
    if best["step"] is not None and best["step"] != last["step"]:
        from tinygrad_llm.checkpoint import MODEL_FILE, read_safetensors

        log(
            f"{out}/{MODEL_FILE} is the best model, from step {best['step']} (val loss {_loss(best['val_loss'])}); "
            f"the latest is in {out}/checkpoints, to resume from"
        )
        run.model.load_state_dict(read_safetensors(out / MODEL_FILE))
