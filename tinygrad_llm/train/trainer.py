"""The configurable training loop: schedules, clipping, accumulation, evaluation, checkpoints, exact resume.

    trainer = Trainer(model, train_dataset, val_dataset, TrainConfig(max_steps=2000, lr=1e-3), out_dir="runs/x",
                      tokenizer=tokenizer)
    trainer.load_state()      # only to continue the run saved in out_dir
    trainer.fit()

Every ``eval_interval`` steps (and at the end) it evaluates on ``eval_iters`` batches of each split, appends
a line to ``log.jsonl`` (step, tokens_seen, train_loss, val_loss, lr, elapsed_s) and one to
``grad_norms.jsonl`` (step and the per-layer gradient norms of that step, before clipping), redraws
``losses.png`` and ``grad_norms.png`` (``lr_schedule.png`` is drawn when it starts) and writes a checkpoint
holding everything a resumed run needs to continue bit for bit: weights, optimizer moments, step, the data
loader's position and the random generators' states.

As nanoGPT does, the model in ``out_dir`` itself (``model.safetensors``, what ``generate`` reads) is the one
with the lowest validation loss so far; ``checkpoints/`` holds the latest, to resume from. When validation
loss has not improved for ``patience`` evaluations while training goes on, the log says so once (the model
is memorising its training text) and suggests what to change.

Data-parallel (``comm``, from ``tinygrad_llm.dist.init()`` under ``mpiexec -n N``): ``batch_size`` is per
process; each process takes its rows of the same global batch (train/parallel.py), gradients are averaged
over the processes before clipping and the update (dist/reducer.py), evaluation is averaged over them, and
process 0 alone prints and writes. ``zero=True`` shards AdamW's moments over the processes (dist/zero.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm import backend, run_folder, runtime
from tinygrad_llm.amp import PRECISIONS, MixedPrecision
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.data import DataLoader
from tinygrad_llm.dist import SingleProcess, ZeroAdamW
from tinygrad_llm.files import atomic_write, json_text
from tinygrad_llm.optim import AdamW, grad_norms_by_layer, lr_at, param_groups_for_weight_decay
from tinygrad_llm.tensor import no_grad
from tinygrad_llm.train.figures import plot_grad_norms, plot_lr_schedule
from tinygrad_llm.train.losses import calc_loss_batch, host_losses, mean_loss_on_device
from tinygrad_llm.train.parallel import DataParallel, calc_loss_loader_parallel, stop_together
from tinygrad_llm.train.plot import plot_losses
from tinygrad_llm.train.progress import Progress
from tinygrad_llm.train.signals import SignalGuard, catch_signals
from tinygrad_llm.train.step import backward_step, read_loss

if TYPE_CHECKING:
    from collections.abc import Callable

    from tinygrad_llm.checkpoint import Checkpoint
    from tinygrad_llm.data.dataset import GPTDataset
    from tinygrad_llm.data.mlm import MLMDataset
    from tinygrad_llm.dist.comm import Communicator
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.tokenizer.base import Tokenizer

LOG_FILE, PLOT_FILE = "log.jsonl", "losses.png"
GRAD_LOG_FILE, GRAD_PLOT_FILE, LR_PLOT_FILE = "grad_norms.jsonl", "grad_norms.png", "lr_schedule.png"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, an impossible configuration); the message says why."""


@dataclass
class TrainConfig:
    """How to train. ``max_steps`` wins over ``epochs``; one step is ``grad_accum`` micro-batches."""

    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float | None = None  # floor of the cosine decay; None: lr / 10
    warmup_steps: int = 0
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.999)
    grad_clip: float | None = 1.0
    eval_interval: int = 100
    eval_iters: int = 20
    seed: int = 1337
    keep_last: int = 2
    precision: str = "fp32"  # fp32, tf32, fp16 or bf16: see tinygrad_llm.amp

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_iters", "keep_last"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be positive, got 0")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.betas = tuple(self.betas)

    @property
    def floor_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


class Trainer:
    """Trains ``model`` on windows of ``train_dataset`` (a GPTDataset), evaluating on ``val_dataset``."""

    def __init__(
        self,
        model: Module,
        train_dataset: GPTDataset | MLMDataset,
        val_dataset: GPTDataset | MLMDataset,
        config: TrainConfig,
        out_dir: str | os.PathLike,
        tokenizer: Tokenizer | None = None,
        device: str | None = None,
        log: Callable[[str], object] | None = None,
        comm: Communicator | None = None,
        zero: bool = False,
    ):
        runtime.configure()  # host memory kept for the next step; threads as set (--threads) or automatic
        self.model, self.config, self.tokenizer = model, config, tokenizer
        self.out_dir = Path(out_dir)
        self.device = device or model.device
        self.comm = comm or SingleProcess()
        self.log = log or (lambda message: print(message, flush=True))
        if not self.comm.is_root:
            self.log = lambda message: None  # process 0 alone prints
        batch = config.batch_size * self.comm.world_size  # the global batch: every process takes its rows
        if len(train_dataset) < batch:
            raise TrainingError(
                f"the training split has {len(train_dataset)} windows, fewer than one batch of "
                f"{batch}: use a smaller --batch-size or --context-length, or more text"
            )
        if len(val_dataset) == 0:
            raise TrainingError("the validation split has no full window: use a smaller --context-length or more text")
        self.train_loader = DataLoader(train_dataset, batch, shuffle=True, drop_last=True, seed=config.seed)
        # evaluation always reads the same first batches, in order, and never moves the training position
        self.train_eval_loader = DataLoader(train_dataset, batch, shuffle=False, drop_last=False)
        self.val_eval_loader = DataLoader(val_dataset, batch, shuffle=False, drop_last=False)
        self.optimizer = AdamW(
            param_groups_for_weight_decay(model, config.weight_decay), lr=config.lr, betas=config.betas
        )
        # several processes: all start from process 0's parameters; gradients are averaged in every step
        self.parallel = DataParallel(self.comm, model, self.optimizer)
        if zero and self.parallel.reducer is not None:
            self.optimizer = ZeroAdamW(self.optimizer, self.parallel.reducer)
        self.precision = MixedPrecision(config.precision, self.device)  # fp16: a loss scale, saved with the run
        steps_per_epoch = max(len(self.train_loader) // config.grad_accum, 1)
        self.total_steps = config.max_steps or (config.epochs or 1) * steps_per_epoch
        self.step, self.tokens_seen, self.elapsed_s = 0, 0, 0.0
        self.history: list[dict] = []
        self.grad_norm_history: list[dict] = []  # {"step", "grad_norms": {layer: norm}} at each evaluation
        self._batches = None
        self._saved_step = None
        # without a terminal (output redirected to a file, CI) a progress line every so often instead of a bar
        self.progress_interval_s = 15.0
        self.resume_hint: str | None = None  # how to continue, said on Ctrl-C (the command line sets its own)
        self.run_settings: dict = {}  # the caller's own settings (the command line's), saved with each checkpoint
        self._signals = SignalGuard(self.log)  # fit's: SIGINT/SIGTERM wait while a checkpoint is written
        self.best = {"step": None, "val_loss": None}  # the evaluation whose model out_dir holds
        self.patience = 3  # evaluations without a new best before the log says the run overfits
        self._warned_overfitting = False
        self._grad_norms = None  # per-layer gradient norms of the last step, kept for the next evaluation

    # --- resume -----------------------------------------------------------------------------------
    def load_state(self, checkpoint_dir: str | os.PathLike | None = None) -> int:
        """Restore weights, optimizer, data position, generators and history from the latest checkpoint
        of ``checkpoint_dir`` (default: this run's folder). Returns the step it resumes from."""
        ckpt = load_checkpoint(checkpoint_dir or self.out_dir, expected_state=self.model.state_dict())
        check_trainer_state(ckpt)
        state = ckpt.trainer_state
        saved_world = state.get("world_size", 1)
        if saved_world != self.comm.world_size:
            raise TrainingError(
                f"{ckpt.path} was trained on {saved_world} process(es) of batch {self.config.batch_size}; this "
                f"run has {self.comm.world_size}. Each process's rows and the data order depend on the count, so "
                f"resume it with {'mpiexec -n %d ' % saved_world if saved_world > 1 else 'one process (no mpiexec) '}"
                f"to continue exactly"
            )
        self.model.load_state_dict(ckpt.model_state)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        self.train_loader.load_state_dict(state["data"])
        backend.set_rng_state(state["rng"])
        self.precision.load_state_dict(state.get("precision", {}))
        self.step, self.tokens_seen, self.elapsed_s = state["step"], state["tokens_seen"], state["elapsed_s"]
        self.history = list(state["history"])
        self.best = dict(state.get("best", self.best))
        self.grad_norm_history = list(state.get("grad_norm_history", []))
        self._grad_norms = state.get("grad_norms_pending")  # a step whose evaluation an interrupt cut short
        self._saved_step = self.step
        return self.step

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.elapsed_s,
            "data": self.train_loader.state_dict(),
            "rng": backend.get_rng_state(),
            "history": self.history,
            "grad_norm_history": self.grad_norm_history,
            "grad_norms_pending": self._grad_norms,
            "train_config": dataclasses.asdict(self.config),
            "settings": self.run_settings,
            "best": self.best,
            "world_size": self.comm.world_size,
            "precision": self.precision.state_dict(),
        }

    def save(self) -> Path:
        """Write a checkpoint of the current step, then the log and the plot. The model is published in
        out_dir too when it is the best so far (or nothing was evaluated yet). Data-parallel: every process
        calls it (with ZeRO the moments are gathered), process 0 alone writes."""
        with self._signals.deferred("the checkpoint being written"):
            optimizer_state = self.optimizer.state_dict()
            if not self.comm.is_root:
                self._saved_step = self.step
                return self.out_dir / "checkpoints"
            try:
                path = save_checkpoint(
                    self.out_dir,
                    self.model.state_dict(),
                    self.model.config.to_dict(),
                    optimizer_state,
                    self._trainer_state(),
                    keep_last=self.config.keep_last,
                    publish=self.best["step"] in (None, self.step),
                )
                self._saved_step = self.step
                self._write_log()
            except OSError as exc:  # disk full, a file size limit: the earlier checkpoints are untouched
                raise TrainingError(
                    f"saving step {self.step} failed: {exc}; {self.out_dir} keeps its last complete "
                    "checkpoint (free some space, then --resume)"
                ) from None
        return path

    # --- the loop ---------------------------------------------------------------------------------
    def _next_batch(self):
        """The next training batch; a new epoch (a new shuffled pass) starts when one runs out."""
        while True:
            if self._batches is None:
                self._batches = iter(self.train_loader)
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def lr_at(self, step: int) -> float:
        c = self.config
        warmup = min(c.warmup_steps, self.total_steps)  # a run shorter than its warmup just warms up
        return lr_at(step, max_lr=c.lr, total_steps=self.total_steps, warmup_steps=warmup, min_lr=c.floor_lr)

    def train_step(self) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean training loss.

        A step happens whole or not at all: an interrupt (Ctrl-C) during its forward and backward passes
        rewinds the data position, the generators and the token count to the step's start, and one during the
        parameter update waits until it is done. So a checkpoint written after an interrupt is exactly that of
        the last finished step, and resuming from it replays the interrupted step's batch.
        """
        c, model = self.config, self.model
        start = self._step_start()
        try:
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            batches = [self._next_batch() for _ in range(c.grad_accum)]
            tokens = sum(inputs.size for inputs, _ in batches)  # the global batches: every process's rows
            loss = backward_step(
                model, self.optimizer, batches, self.device, self.precision, self.parallel, calc_loss_batch
            )  # (calc_loss_batch: looked up here, where tests patch it)
            if self._eval_due(self.step + 1):  # grad_norms.jsonl records this step's, before clipping
                unscale = 1.0 / self.precision.scaler.get_scale()  # fp16's loss scale taken out (1 otherwise)
                self._grad_norms = {
                    layer: norm * unscale for layer, norm in grad_norms_by_layer(model.named_parameters()).items()
                }
            # The update's first half stays on the GPU (fp16: unscale, and note an inf/NaN; the clip) and one copy
            # to the host brings the loss and fp16's verdict together: one wait per step, after which the update
            # is queued without another.
            self.precision.unscale_and_clip(self.optimizer, model.parameters(), c.grad_clip)
            loss = read_loss(loss, self.precision)
            loss = self.comm.mean(loss)  # the mean over processes, so that all stop together
            if not math.isfinite(loss):
                raise TrainingError(
                    f"the training loss became {loss} at step {self.step + 1}; stopped without "
                    f"updating. The last good checkpoint is in {self.out_dir} (lower --lr, or set "
                    f"--grad-clip)"
                )
        except BaseException:
            self.precision.scaler.discard_step()
            self._rewind(start)
            raise
        with self._signals.deferred():  # every parameter moves, or none
            # (fp16: a step with an inf/NaN gradient is skipped and the scale lowered)
            self.precision.finish_step(self.optimizer)
            self.optimizer.zero_grad()
            self.step += 1
            self.tokens_seen += tokens
        return loss

    def _step_start(self) -> dict:
        """What a step changes besides the parameters: where the data is, and the generators."""
        return {"data": self.train_loader.state_dict(), "rng": backend.get_rng_state()}

    def _rewind(self, start: dict) -> None:
        """Undo a step cut short: its batches will be read again, its dropout masks drawn again."""
        self.optimizer.zero_grad()
        self.train_loader.load_state_dict(start["data"])
        self._batches = None
        backend.set_rng_state(start["rng"])

    def evaluate(self) -> tuple[float, float]:
        was_training = self.model.training
        self.model.eval()
        with no_grad(), self.precision.autocast():  # evaluated as trained
            losses = [self._eval_loss(self.train_eval_loader), self._eval_loss(self.val_eval_loader)]
        self.model.train(was_training)
        if self.comm.world_size > 1:
            return tuple(losses)
        train_loss, val_loss = host_losses(losses)  # both in one copy to the host
        return train_loss, val_loss

    def _eval_loss(self, loader):
        """One process: the mean loss on the model's device (read with the other); several: a float."""
        if self.comm.world_size > 1:  # each process scores its rows; the mean over all of them
            return calc_loss_loader_parallel(loader, self.model, self.device, self.config.eval_iters, self.comm)
        return mean_loss_on_device(loader, self.model, self.device, self.config.eval_iters)

    def fit(self, stop_after: int | None = None) -> list[dict]:
        """Train until ``total_steps`` (or until step ``stop_after``, saving there as an interruption would).

        Ctrl-C or SIGTERM saves a checkpoint of the last finished step before leaving, so ``resume``
        continues it; signals wait while a checkpoint is written. ``out_dir`` is locked while training and
        must be empty or a run (see ``run_folder``). Returns the evaluation history (the records of log.jsonl).
        """
        try:
            if not self.comm.is_root:  # the run folder (check, lock, marker) is process 0's alone
                with catch_signals(self.log) as self._signals:
                    return self._fit(stop_after)
            run_folder.check_output_path(self.out_dir, "out_dir").mkdir(parents=True, exist_ok=True)
            with run_folder.lock(self.out_dir, log=self.log), catch_signals(self.log) as self._signals:
                run_folder.adopt(self.out_dir, "train", flag="out_dir")
                return self._fit(stop_after)
        finally:
            self._signals = SignalGuard(self.log)  # outside fit: no handlers of ours

    def _fit(self, stop_after: int | None) -> list[dict]:
        if self.tokenizer is not None and hasattr(self.tokenizer, "save") and self.comm.is_root:
            self.tokenizer.save(self.out_dir)  # tokenizer.json beside config.json
        if self.comm.is_root:
            try:
                plot_lr_schedule(
                    self.lr_at,
                    self.total_steps,
                    self.out_dir / LR_PLOT_FILE,
                    warmup_steps=min(self.config.warmup_steps, self.total_steps),
                )
            except OSError as exc:  # a picture is not worth stopping for; a full disk stops the first save
                self.log(f"note: {LR_PLOT_FILE} not drawn: {exc}")
        end = self.total_steps if stop_after is None else min(stop_after, self.total_steps)
        self.model.train()
        progress = Progress(
            self.total_steps, self.log, self.progress_interval_s, done=self.step, enabled=self.comm.is_root
        )
        started = time.perf_counter() - self.elapsed_s
        try:
            if self.step and self._eval_due() and (not self.history or self.history[-1]["step"] != self.step):
                self._evaluate_and_save(progress)  # an interrupt cut this step's evaluation short: do it now
            with stop_together(self.comm, self._signals) as stop_if_signalled:  # data-parallel: all stop at one step
                while self.step < end:
                    loss = self.train_step()
                    self.elapsed_s = time.perf_counter() - started
                    progress.step(loss, tok_s=f"{self.tokens_seen / max(self.elapsed_s, 1e-9):,.0f}")
                    if self._eval_due():
                        self._evaluate_and_save(progress)
                    stop_if_signalled()
        except KeyboardInterrupt as interrupt:
            progress.close()
            if self.step and self._saved_step != self.step:
                self.save()  # (a second Ctrl-C / SIGTERM is ignored while it writes)
            self.log(
                f"interrupted: saved step {self.step} to {self.out_dir}"
                + (f"; {self.resume_hint}" if self.resume_hint else "")
            )
            interrupt.reported = True  # the one line a user sees: the command line adds none
            raise
        progress.close()
        if self._saved_step != self.step:
            self.save()  # stopped between evaluations: a checkpoint exactly here, no extra log record
        return self.history

    def _eval_due(self, step: int | None = None) -> bool:
        """Whether an evaluation follows ``step`` (default: the step just finished)."""
        step = self.step if step is None else step
        return step % self.config.eval_interval == 0 or step == self.total_steps

    def _evaluate_and_save(self, progress: Progress) -> None:
        train_loss, val_loss = self.evaluate()
        record = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "lr": self.lr_at(self.step - 1),
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if self._grad_norms:
            self.grad_norm_history.append({"step": self.step, "grad_norms": self._grad_norms})
            self._grad_norms = None
        self.history.append(record)
        if self.best["val_loss"] is None or val_loss < self.best["val_loss"]:
            self.best = {"step": self.step, "val_loss": val_loss}
        self.save()
        rate = self.tokens_seen / max(self.elapsed_s, 1e-9)
        line = (
            f"step {self.step:>6}/{self.total_steps}  train {train_loss:.4f}  val {val_loss:.4f}  "
            f"lr {record['lr']:.2e}  {rate:,.0f} tok/s  {self.elapsed_s:.1f}s"
        )
        for message in (line, self._overfitting_note()):
            if message and progress.enabled:
                progress.write(message)

    def _overfitting_note(self) -> str | None:
        """A note, once, when validation loss has stayed above its best for ``patience`` evaluations."""
        since_best = [r for r in self.history if r["step"] > (self.best["step"] or 0)]
        if self._warned_overfitting or self.best["step"] is None or len(since_best) < self.patience:
            return None
        first, last = self.history[0], self.history[-1]
        losses = (last["val_loss"], self.best["val_loss"], last["train_loss"], first["train_loss"])
        if any(loss is None for loss in losses):  # a NaN of an earlier evaluation, read back from JSON as null
            return None
        if last["val_loss"] < self.best["val_loss"] * 1.01 or last["train_loss"] >= first["train_loss"]:
            return None  # a plateau, or training itself going wrong: not overfitting
        self._warned_overfitting = True
        return (
            f"note: validation loss has risen for {len(since_best)} evaluations (best {self.best['val_loss']:.4f} "
            f"at step {self.best['step']}, now {last['val_loss']:.4f}) while training loss fell to "
            f"{last['train_loss']:.4f}: the model is memorising its training text. {self.out_dir} keeps the "
            f"best model. Next time: more text, a smaller model (--preset tiny), more --dropout (0.1-0.2), "
            f"fewer --max-steps, or a lower --lr"
        )

    def _write_log(self) -> None:
        with atomic_write(self.out_dir / LOG_FILE, "w") as f:
            for record in self.history:
                f.write(json_text(record) + "\n")  # strict JSON: NaN as null
        if self.grad_norm_history:
            with atomic_write(self.out_dir / GRAD_LOG_FILE, "w") as f:
                for record in self.grad_norm_history:
                    f.write(json_text(record) + "\n")  # strict JSON: NaN as null
            plot_grad_norms(self.grad_norm_history, self.out_dir / GRAD_PLOT_FILE)
        if self.history:
            plot_losses(
                [r["step"] for r in self.history],
                [r["tokens_seen"] for r in self.history],
                [r["train_loss"] for r in self.history],
                [r["val_loss"] for r in self.history],
                self.out_dir / PLOT_FILE,
            )


def check_trainer_state(checkpoint: Checkpoint) -> None:
    """The trainer's part of a checkpoint has every field ``load_state`` reads, of the right kind; a
    CheckpointError names trainer_state.json and the field otherwise."""
    from tinygrad_llm.checkpoint import TRAINER_JSON, CheckpointError

    file = checkpoint.path / TRAINER_JSON
    state = checkpoint.trainer_state
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(state).__name__}")
    kinds = {"step": int, "tokens_seen": int, "elapsed_s": (int, float), "data": dict, "rng": dict, "history": list}
    for field, kind in kinds.items():
        if field not in state:
            raise CheckpointError(f"{file}: missing field {field!r} (damaged, or not written by this trainer)")
        if not isinstance(state[field], kind) or isinstance(state[field], bool):
            raise CheckpointError(
                f"{file}: field {field!r} is {state[field]!r:.60}, expected {getattr(kind, '__name__', 'a number')}"
            )
    if state["step"] != checkpoint.step or state["step"] < 0:
        raise CheckpointError(
            f"{file}: field 'step' is {state['step']}, the checkpoint's manifest says {checkpoint.step}"
        )
    if not all(isinstance(r, dict) and "step" in r for r in state["history"]):
        raise CheckpointError(f"{file}: field 'history' should hold one object per evaluation")


def read_log(out_dir: str | os.PathLike) -> list[dict]:
    """The records of a run's log.jsonl."""
    path = Path(out_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
