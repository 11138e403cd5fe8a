"""Direct preference optimization (DPO), as the book's chapter-7 bonus notebook codes it.

    reference_model = copy of policy_model, in eval mode (never trained)
    precompute_reference_logprobs(reference_model, train_set)            # optional: the reference runs once
    tracking = train_model_dpo_simple(policy_model, reference_model, train_loader, val_loader, optimizer,
                                      num_epochs=1, beta=0.1, eval_freq=5, eval_iter=5)    # the book's loop
    tracking = train_model_dpo(..., parallel=DataParallel(comm, policy_model, optimizer))  # the CLI's

For each record, the log-probability a model gives the chosen and the rejected response (the tokens the
batch masks select, averaged over them as the book does, or summed as the DPO paper does) is compared with
the same quantity under the frozen reference model:

    loss = -log sigmoid(beta * ((pi_chosen - pi_rejected) - (ref_chosen - ref_rejected)))

At step 0 the policy is the reference, the argument is 0 and the loss is ln 2 = 0.693. The "rewards" the
book tracks are pi - ref for the chosen and for the rejected responses (without beta), and their
difference is the reward margin: positive once the policy prefers the chosen answers more than the
reference did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.tensor import Tensor, no_grad
from tinygrad_llm.train.simple import generate_and_print_sample
from tinygrad_llm.train.step import train_step

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.finetune.preference import PreferenceDataset
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tokenizer.base import Tokenizer
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.progress import Progress

    Log = Callable[[str], object]

IGNORE_INDEX = -100


def compute_logprobs(
    logits: Tensor, labels: Array, selection_mask: Array | None = None, average: bool = True
) -> Tensor:
    """Per-sequence log-probability of ``labels`` under ``logits``: (B, L, V) and (B, L) -> (B,).

    Position t's logits predict token t + 1 (the book drops the last logit and the first label). With a
    ``selection_mask`` (B, L), only the labels where it is True count (the response tokens); ``average``
    divides by their number (the book), otherwise the log-probabilities are summed (the DPO paper). A row
    with no selected token gets 0.
    """
    # The targets are made where the labels are (on the host for a loader's batch): the loss checks their
    # range there and moves them to the logits' device, with no wait for a GPU.
    labels = labels.data if isinstance(labels, Tensor) else labels
    xp = backend.get_array_module(labels) if hasattr(labels, "dtype") else np
    labels = xp.asarray(labels)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"compute_logprobs: labels of shape {labels.shape} do not match logits {logits.shape}")
    targets = xp.full(labels.shape, IGNORE_INDEX, dtype=np.int64)  # (B, L): position t -> token t + 1
    targets[:, :-1] = labels[:, 1:]
    if selection_mask is not None:
        mask = selection_mask.data if isinstance(selection_mask, Tensor) else selection_mask
        if backend.get_array_module(mask) is not xp:
            mask = backend.to_device(mask, "cpu" if xp is np else "cuda")
        mask = xp.asarray(mask)
        selected = mask[:, 1:].astype(bool)  # the mask of the predicted tokens, as the book's mask[:, 1:]
        targets[:, :-1] = xp.where(selected, targets[:, :-1], IGNORE_INDEX)
    # -cross_entropy is log softmax(logits)[target], and 0 where the target is ignored
    token_logprobs = -F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")  # (B, L)
    total = token_logprobs.sum(axis=-1)  # (B, L) -> (B,)
    if not average:
        return total
    counts = (targets != IGNORE_INDEX).sum(axis=-1)  # (B,)
    return total / xp.maximum(counts, 1).astype(logits.dtype)


def compute_dpo_loss(
    model_chosen_logprobs: Tensor,
    model_rejected_logprobs: Tensor,
    reference_chosen_logprobs: Tensor | Array | list[float],
    reference_rejected_logprobs: Tensor | Array | list[float],
    beta: float = 0.1,
) -> tuple[Tensor, float, float]:
    """(loss, chosen_rewards, rejected_rewards): the batch-mean DPO loss (a Tensor) and the mean rewards
    (floats, not differentiated), from per-sequence log-probabilities (B,) of the policy and the reference."""
    loss, chosen, rejected = dpo_loss_on_device(
        model_chosen_logprobs, model_rejected_logprobs, reference_chosen_logprobs, reference_rejected_logprobs, beta
    )
    chosen, rejected = backend.host_floats([chosen, rejected])
    return loss, chosen, rejected


def dpo_loss_on_device(
    model_chosen_logprobs: Tensor,
    model_rejected_logprobs: Tensor,
    reference_chosen_logprobs: Tensor | Array | list[float],
    reference_rejected_logprobs: Tensor | Array | list[float],
    beta: float = 0.1,
) -> tuple[Tensor, Array, Array]:
    """``compute_dpo_loss`` with the rewards left where the policy's log-probabilities are (float64 0-d
    arrays): a training step or an evaluation reads them later, with its other numbers (one wait for a GPU)."""
    reference_chosen = _float64_like(reference_chosen_logprobs, model_chosen_logprobs)
    reference_rejected = _float64_like(reference_rejected_logprobs, model_chosen_logprobs)
    dtype = model_chosen_logprobs.dtype
    model_logratios = model_chosen_logprobs - model_rejected_logprobs  # (B,)
    logits = model_logratios - (reference_chosen - reference_rejected).astype(dtype)  # (B,): minus a constant
    losses = -F.logsigmoid(logits * beta)  # DPO, eq. 7 of the paper
    chosen_rewards = (_float64_like(model_chosen_logprobs, model_chosen_logprobs) - reference_chosen).mean()
    rejected_rewards = (_float64_like(model_rejected_logprobs, model_chosen_logprobs) - reference_rejected).mean()
    return losses.mean(), chosen_rewards, rejected_rewards


def _float64_like(x, like: Tensor) -> Array:
    """Log-probabilities (B,) (a Tensor, an array on any device or a list) as a float64 array on ``like``'s
    device, not differentiated."""
    x = x.data if isinstance(x, Tensor) else x
    if not hasattr(x, "dtype"):
        x = np.asarray(x, dtype=np.float64)
    if backend.get_array_module(x) is not backend.get_array_module(like.data):
        x = backend.to_device(x, backend.device_of(like.data))
    return x.astype(np.float64)


def _values(x) -> np.ndarray:
    """A (B,) float64 NumPy copy of log-probabilities (a Tensor, an array on any device or a list)."""
    if isinstance(x, Tensor):
        x = x.data
    return np.asarray(backend.to_numpy(x) if hasattr(x, "dtype") else x, dtype=np.float64)


def sequence_logprobs(model: Module, batch: dict, key: str, average: bool = True, device: str | None = None) -> Tensor:
    """Log-probabilities (B,) of the ``key`` ("chosen"/"rejected") sequences of a batch under ``model``, on
    the model's device (``device``, the book's argument, is accepted for its signature). The ids stay where
    the batch has them: the model and the loss check them there (on the host: no wait for a GPU)."""
    ids = batch[key]
    return compute_logprobs(model(ids), ids, batch[f"{key}_mask"], average)


def compute_dpo_loss_batch(
    batch: dict,
    policy_model: Module,
    reference_model: Module,
    beta: float = 0.1,
    average: bool = True,
    device: str | None = None,
) -> tuple[Tensor, float, float]:
    """The DPO loss of one batch dict (see ``PreferenceDataset``): the policy runs with gradients; the
    reference's log-probabilities come from the batch when precomputed, else from ``reference_model``
    without gradients. Returns (loss Tensor, chosen_rewards, rejected_rewards)."""
    loss, chosen, rejected = dpo_loss_batch_on_device(batch, policy_model, reference_model, beta, average, device)
    chosen, rejected = backend.host_floats([chosen, rejected])
    return loss, chosen, rejected


def dpo_loss_batch_on_device(
    batch: dict,
    policy_model: Module,
    reference_model: Module,
    beta: float = 0.1,
    average: bool = True,
    device: str | None = None,
) -> tuple[Tensor, Array, Array]:
    """``compute_dpo_loss_batch`` with the rewards left on the policy's device (``dpo_loss_on_device``)."""
    policy_chosen = sequence_logprobs(policy_model, batch, "chosen", average, device)
    policy_rejected = sequence_logprobs(policy_model, batch, "rejected", average, device)
    if "reference_chosen_logprobs" in batch:
        reference_chosen, reference_rejected = batch["reference_chosen_logprobs"], batch["reference_rejected_logprobs"]
    else:
        if reference_model is None:
            raise ValueError(
                "compute_dpo_loss_batch: no reference model and no precomputed reference log-probabilities in the batch"
            )
        with no_grad():
            reference_chosen = sequence_logprobs(reference_model, batch, "chosen", average, device)
            reference_rejected = sequence_logprobs(reference_model, batch, "rejected", average, device)
    return dpo_loss_on_device(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)


def compute_dpo_loss_loader(
    data_loader: Iterable,
    policy_model: Module,
    reference_model: Module,
    beta: float = 0.1,
    num_batches: int | None = None,
    average: bool = True,
    device: str | None = None,
) -> tuple[float, float, float]:
    """(loss, chosen_rewards, rejected_rewards) averaged over the first ``num_batches`` batches (all when None),
    without gradients; NaNs for an empty loader, as the book. One copy to the host (one wait for a GPU)."""
    sums = _dpo_sums(data_loader, policy_model, reference_model, beta, num_batches, average, device)
    return tuple(backend.host_floats(sums)) if sums else (float("nan"), float("nan"), float("nan"))


def _dpo_sums(data_loader, policy_model, reference_model, beta, num_batches, average, device) -> list:
    """[mean loss, mean chosen reward, mean rejected reward] over the loader's first ``num_batches`` batches,
    as 0-d float64 arrays on the policy's device ([] for an empty loader): summed there, read by the caller."""
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    if n == 0:
        return []
    sums = None
    with no_grad():
        for i, batch in enumerate(data_loader):
            if i >= n:
                break
            loss, chosen, rejected = dpo_loss_batch_on_device(
                batch, policy_model, reference_model, beta, average, device
            )
            values = [loss.data.astype(np.float64), chosen, rejected]
            sums = values if sums is None else [total + value for total, value in zip(sums, values)]
    return [total / n for total in sums]


def evaluate_dpo_loss_loader(
    policy_model: Module,
    reference_model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    beta: float = 0.1,
    eval_iter: int | None = 5,
    average: bool = True,
    device: str | None = None,
) -> dict:
    """{train_loss, train_chosen_reward, train_rejected_reward, val_...} over ``eval_iter`` batches of each
    loader (all when None), the policy in eval mode (dropout off) and then back in its previous mode. The six
    numbers come to the host in one copy (one wait for a GPU)."""
    was_training = policy_model.training
    policy_model.eval()
    splits = {
        split: _dpo_sums(loader, policy_model, reference_model, beta, eval_iter, average, device)
        for split, loader in (("train", train_loader), ("val", val_loader))
    }
    policy_model.train(was_training)
    on_device = [value for sums in splits.values() for value in sums]
    host = iter(backend.host_floats(on_device) if on_device else [])
    result = {}
    for split, sums in splits.items():
        loss, chosen, rejected = [next(host) for _ in sums] if sums else [float("nan")] * 3
        result.update(
            {
                f"{split}_loss": loss,
                f"{split}_chosen_reward": chosen,
                f"{split}_rejected_reward": rejected,
                f"{split}_reward_margin": chosen - rejected,
            }
        )
    return result


def precompute_reference_logprobs(
    reference_model: Module,
    dataset: PreferenceDataset,
    batch_size: int = 8,
    average: bool = True,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen reference model once over ``dataset`` (a PreferenceDataset) in eval mode and attach its
    per-record log-probabilities to it (``dataset.set_reference_logprobs``): later batches carry them, and
    training needs no reference forward pass. Returns (chosen (N,), rejected (N,)).

    Equal to running the reference per batch: the model is causal, so the padding a batch adds after a
    sequence does not change the log-probabilities of its tokens.
    """
    was_training = reference_model.training
    reference_model.eval()
    chosen, rejected = np.empty(len(dataset)), np.empty(len(dataset))
    with no_grad():
        for start in range(0, len(dataset), batch_size):
            indices = np.arange(start, min(start + batch_size, len(dataset)))
            batch = dataset.get_batch(indices)
            chosen[indices] = _values(sequence_logprobs(reference_model, batch, "chosen", average, device))
            rejected[indices] = _values(sequence_logprobs(reference_model, batch, "rejected", average, device))
    reference_model.train(was_training)
    dataset.set_reference_logprobs(chosen, rejected)
    return chosen, rejected


def train_model_dpo_simple(
    policy_model: Module,
    reference_model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    num_epochs: int,
    beta: float,
    eval_freq: int,
    eval_iter: int,
    start_context: str | None = None,
    tokenizer: Tokenizer | None = None,
    average: bool = True,
    device: str | None = None,
    log: Log | None = print,
) -> dict:
    """The book's DPO loop: a step per batch; every ``eval_freq`` steps the train/val loss and rewards over
    ``eval_iter`` batches; after each epoch a sample for ``start_context`` when a tokenizer is given.

    Returns the book's tracking dict: train_losses, train_chosen_rewards, train_rejected_rewards, val_losses,
    val_chosen_rewards, val_rejected_rewards (one entry per evaluation) and tokens_seen, plus steps.

    The step is the book's four lines, one process, fp32. The command line's loop (``tinygrad-llm
    finetune-dpo``: ``train_model_dpo``, train/step.py) adds data parallelism over processes.
    """
    tracking = _new_tracking()
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        policy_model.train()
        for batch in train_loader:
            optimizer.zero_grad()  # reset the gradients of the previous step
            loss, _, _ = dpo_loss_batch_on_device(batch, policy_model, reference_model, beta, average, device)
            loss.backward()  # the gradients of the loss
            optimizer.step()  # update the weights with them
            _check_finite(loss.item(), global_step + 1)  # (the rewards stay on the device: one copy per step)
            tokens_seen += batch["chosen"].size
            global_step += 1
            if global_step % eval_freq == 0:
                _evaluate(
                    tracking,
                    policy_model,
                    reference_model,
                    train_loader,
                    val_loader,
                    beta,
                    eval_iter,
                    average,
                    device,
                    log,
                    epoch,
                    global_step,
                    tokens_seen,
                )
        if tokenizer is not None and start_context:
            generate_and_print_sample(policy_model, tokenizer, device, start_context)
    return tracking


def train_model_dpo(
    policy_model: Module,
    reference_model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    num_epochs: int,
    beta: float,
    eval_freq: int,
    eval_iter: int,
    average: bool = True,
    device: str | None = None,
    log: Log | None = print,
    parallel: DataParallel | None = None,
    bar: Progress | None = None,
) -> dict:
    """The loop of ``tinygrad-llm finetune-dpo``: ``train_model_dpo_simple`` (same evaluations and tracking
    dict) on the fast step of train/step.py, data-parallel with ``parallel`` (a
    ``train.parallel.DataParallel``: each process trains on its rows of the loaders' batches and evaluates on
    the whole batches, so every process logs the same numbers). ``bar``: the job's progress
    (``train.progress.Progress``), stepped after every step; the evaluations' lines then go above it."""
    if bar is not None and bar.enabled:
        log = bar.write

    def loss_batch(batch: dict, _targets: None, model: Module, device: str | None) -> Tensor:
        return dpo_loss_batch_on_device(batch, model, reference_model, beta, average, device)[0]

    tracking = _new_tracking()
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        policy_model.train()
        for batch in train_loader:
            tokens_seen += batch["chosen"].size
            loss = train_step(
                policy_model, optimizer, [(batch, None)], device, parallel=parallel, loss_batch=loss_batch
            )
            _check_finite(loss, global_step + 1)  # (a float: the step's one copy to the host)
            if bar is not None:
                bar.step(loss)
            global_step += 1
            if global_step % eval_freq == 0:
                _evaluate(
                    tracking,
                    policy_model,
                    reference_model,
                    train_loader,
                    val_loader,
                    beta,
                    eval_iter,
                    average,
                    device,
                    log,
                    epoch,
                    global_step,
                    tokens_seen,
                )
    return tracking


def _new_tracking() -> dict:
    return {
        "train_losses": [],
        "train_chosen_rewards": [],
        "train_rejected_rewards": [],
        "val_losses": [],
        "val_chosen_rewards": [],
        "val_rejected_rewards": [],
        "tokens_seen": [],
        "steps": [],
    }


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(f"DPO loss became {loss} at step {step}: lower the learning rate")


def _evaluate(
    tracking,
    policy_model,
    reference_model,
    train_loader,
    val_loader,
    beta,
    eval_iter,
    average,
    device,
    log,
    epoch,
    global_step,
    tokens_seen,
) -> None:
    """The loops' evaluation: the losses and rewards into ``tracking``, and a line to ``log``."""
    res = evaluate_dpo_loss_loader(
        policy_model, reference_model, train_loader, val_loader, beta, eval_iter, average, device
    )
    for split in ("train", "val"):
        tracking[f"{split}_losses"].append(res[f"{split}_loss"])
        tracking[f"{split}_chosen_rewards"].append(res[f"{split}_chosen_reward"])
        tracking[f"{split}_rejected_rewards"].append(res[f"{split}_rejected_reward"])
    tracking["tokens_seen"].append(tokens_seen)
    tracking["steps"].append(global_step)
    if log:
        log(
            f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {res['train_loss']:.3f}, "
            f"Val loss {res['val_loss']:.3f}, Train reward margins {res['train_reward_margin']:.3f}, "
            f"Val reward margins {res['val_reward_margin']:.3f}"
        )
