"""Chapter 6: a GPT as a text classifier, reading its prediction off the last token's output.

    model = GPTModel(config)                                   # pretrained, or from scratch
    add_classification_head(model, num_classes=2)             # out_head: Linear(emb_dim, 2)
    set_trainable(model, "last-block")                         # the book's recipe
    optimizer = AdamW(trainable_parameters(model), lr=5e-5, weight_decay=0.1)
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, device="cpu", num_epochs=5, eval_freq=50, eval_iter=5)
    classify_text("You are a winner ...", model, tokenizer, max_length=train_set.max_length)   # "spam"

Why the last token: with causal attention it is the only position that has attended to every token of
the message. The book pads with end-of-text to a fixed length and still reads the last position, so a
short message is followed by padding the last position also sees; that works, and is kept here as the book
has it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.amp import MixedPrecision
from tinygrad_llm.nn import Linear
from tinygrad_llm.optim.ema import ExponentialMovingAverage
from tinygrad_llm.tensor import Tensor, no_grad
from tinygrad_llm.train import losses as lm_losses
from tinygrad_llm.train import simple
from tinygrad_llm.train.step import train_step

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.nn.module import Module, Parameter
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.optim.schedules import LambdaLR
    from tinygrad_llm.tokenizer.base import Tokenizer
    from tinygrad_llm.train.parallel import DataParallel
    from tinygrad_llm.train.progress import Progress

TRAINABLE_CHOICES = ("last-block", "all", "head")


def add_classification_head(model: Module, num_classes: int = 2) -> Module:
    """Replace ``model.out_head`` by a new ``Linear(emb_dim, num_classes)`` (bias included, as the book's
    ``torch.nn.Linear(in_features=768, out_features=2)``), on the model's device. Returns the model."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"add_classification_head: num_classes must be an integer >= 2, got {num_classes!r}")
    head = Linear(model.config.emb_dim, int(num_classes))
    if model.device != "cpu":
        head.to(model.device)
    model.out_head = head
    return model


def set_trainable(model: Module, trainable: str = "last-block") -> Module:
    """Choose which parameters learn (the others get requires_grad False: no gradient, no optimizer state).

    "last-block": the book's recipe: the last transformer block, the final LayerNorm and the head;
    "last-N" (e.g. "last-2"): the last N blocks, the final LayerNorm and the head;
    "head": the output head only; "all": every parameter.
    """
    n_blocks = len(model.trf_blocks)
    if trainable == "all":
        blocks = n_blocks
    elif trainable == "head":
        blocks = None
    elif trainable == "last-block":
        blocks = 1
    elif trainable.startswith("last-") and trainable[5:].isdigit() and int(trainable[5:]) >= 1:
        blocks = min(int(trainable[5:]), n_blocks)
    else:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES} or 'last-N' (N >= 1), got {trainable!r}")
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
        p.grad = None
    to_train = [model.out_head]
    if blocks is not None:
        to_train += [model.final_norm] + [model.trf_blocks[i] for i in range(n_blocks - blocks, n_blocks)]
    for module in to_train:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def trainable_parameters(model: Module) -> list[tuple[str, Parameter]]:
    """(name, parameter) pairs of the parameters that learn, for an optimizer."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


# ---- loss and accuracy --------------------------------------------------------------------------------


def _raw(array):
    return array.data if isinstance(array, Tensor) else array


def last_token_logits(model: Module, input_batch: Array | Tensor) -> Tensor:
    """(B, T) ids -> (B, num_classes): the model's output at the last position. A model that already gives
    one row per sequence (BertForSequenceClassification, pooling [CLS]) is read as it is."""
    logits = model(input_batch)
    return logits if logits.ndim == 2 else logits[:, -1, :]  # (B, T, classes) -> (B, classes)


def calc_loss_batch(
    input_batch: Array | Tensor, target_batch: Array | Tensor, model: Module, device: str | None = None
) -> Tensor:
    """Cross-entropy of the last token's logits (B, classes) against the labels (B,), computed where the model
    is (``device``, the book's argument, is accepted for its signature). The ids and labels stay where the
    batch has them: the model and the loss check their range there (on the host: no wait for a GPU)."""
    return F.cross_entropy(last_token_logits(model, _raw(input_batch)), _raw(target_batch))


def calc_loss_loader(
    data_loader: Iterable, model: Module, device: str | None = None, num_batches: int | None = None
) -> float:
    """Average classification loss over the first ``num_batches`` batches (all when None); NaN when empty."""
    return lm_losses.calc_loss_loader(data_loader, model, device, num_batches, loss_batch=calc_loss_batch)


def calc_accuracy_loader(
    data_loader: Iterable, model: Module, device: str | None = None, num_batches: int | None = None
) -> float:
    """Share of correctly classified examples in the first ``num_batches`` batches (all when None).

    The model's mode is left as it is: call ``model.eval()`` first, as the book does, to turn dropout off.
    The right answers are counted on the model's device and copied to the host once (one wait for a GPU)."""
    return calc_accuracy_and_loss_loader(data_loader, model, device, num_batches, loss=False)[0]


def calc_accuracy_and_loss_loader(
    data_loader: Iterable,
    model: Module,
    device: str | None = None,
    num_batches: int | None = None,
    loss: bool = True,
) -> tuple[float, float]:
    """(``calc_accuracy_loader``, ``calc_loss_loader``) in one pass: one forward per batch, and the counts and
    losses summed on the model's device and copied to the host together (one wait for a GPU). NaNs when the
    loader is empty; ``loss`` False: the accuracy only (the loss NaN)."""
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    if n == 0:
        return float("nan"), float("nan")
    correct, total, seen = 0, 0.0, 0
    with no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= n:
                break
            logits = last_token_logits(model, _raw(input_batch))  # (B, classes)
            labels = _raw(target_batch)
            if loss:
                total = total + F.cross_entropy(logits, labels).data.astype(np.float64)
            xp = backend.get_array_module(logits.data)
            if backend.get_array_module(labels) is not xp:  # (a host batch: moved, no wait)
                labels = backend.to_device(labels, backend.device_of(logits.data))
            correct = correct + (logits.data.argmax(axis=-1) == labels).sum()
            seen += len(labels)
    correct, total = backend.host_floats([correct, total])  # the one copy
    return correct / seen, total / n if loss else float("nan")


def evaluate_model(
    model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    device: str | None,
    eval_iter: int,
    parallel: DataParallel | None = None,
) -> tuple[float, float]:
    """Mean classification loss over ``eval_iter`` batches of each loader, in eval mode."""
    return simple.evaluate_model(
        model, train_loader, val_loader, device, eval_iter, loss_batch=calc_loss_batch, parallel=parallel
    )


def _train_epoch(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    epoch: int,
    eval_freq: int,
    eval_iter: int,
    progress: dict,
    log,
    parallel=None,
    amp=None,
    scheduler=None,
    ema=None,
    bar: Progress | None = None,
) -> None:
    """One pass over ``train_loader`` with the fast step (train/step.py); every ``eval_freq`` steps the train/val
    loss into ``progress``. ``amp``: a ``MixedPrecision``; after each step ``scheduler.step()`` and
    ``ema.update(model)`` when given, and ``bar.step``."""
    model.train()
    for input_batch, target_batch in train_loader:
        progress["examples_seen"] += input_batch.shape[0]
        loss = train_step(model, optimizer, [(input_batch, target_batch)], device, amp, parallel, calc_loss_batch)
        if bar is not None:
            bar.step(loss)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update(model)
        progress["global_step"] += 1
        if progress["global_step"] % eval_freq == 0:
            train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter, parallel)
            progress["train_losses"].append(train_loss)
            progress["val_losses"].append(val_loss)
            if log:
                log(
                    f"Ep {epoch + 1} (Step {progress['global_step']:06d}): Train loss {train_loss:.3f}, "
                    f"Val loss {val_loss:.3f}"
                )


def _new_progress() -> dict:
    return {"train_losses": [], "val_losses": [], "examples_seen": 0, "global_step": -1}


def train_classifier_simple(
    model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    device: str | None,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    log: Callable[[str], object] | None = print,
) -> tuple[list[float], list[float], list[float], list[float], int]:
    """The book's loop: every ``eval_freq`` steps the train/val loss, after every epoch the train/val accuracy
    over ``eval_iter`` batches. Returns (train_losses, val_losses, train_accs, val_accs, examples_seen).

    The step is the book's four lines, one process, fp32. The command line's path (``tinygrad-llm
    finetune-classifier``: ``train_classifier``, batch parts on the cores: train/step.py) runs the same step
    1.6 times as fast (1.58x at the mini size, batch 12, on 2 idle cores: benchmarks/book_loop.py,
    2026-12-07; the same speed at --threads 1, where the batch is one part); it adds mixed precision and data
    parallelism.
    """
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # reset the gradients of the previous step
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # the gradients of the loss
            optimizer.step()  # update the weights with them
            examples_seen += input_batch.shape[0]
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                if log:
                    log(
                        f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"
                    )
        model.eval()
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter)
        model.train()
        if log:
            log(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)
    model.eval()
    return train_losses, val_losses, train_accs, val_accs, examples_seen


def train_classifier(
    model: Module,
    train_loader: Iterable,
    val_loader: Iterable,
    optimizer: Optimizer,
    device: str | None,
    max_epochs: int,
    patience: int | None = None,
    eval_freq: int = 50,
    eval_iter: int = 5,
    log: Callable[[str], object] | None = print,
    parallel: DataParallel | None = None,
    precision: str = "fp32",
    scheduler: LambdaLR | None = None,
    ema_decay: float | None = None,
    average_from: int | None = None,
    bar: Progress | None = None,
) -> dict:
    """The command line's loop (``tinygrad-llm finetune-classifier``): the book's ``train_classifier_simple`` on
    the fast step of train/step.py (batch parts on the cores; ``precision`` tf32/fp16/bf16 on a GPU, see
    tinygrad_llm.amp; ``parallel``: a ``train.parallel.DataParallel``, the loaders then yielding every
    process's rows), with model selection: after every epoch the accuracy and loss over the whole
    validation loader; the weights of the best epoch (highest accuracy, ties broken by lower loss) are kept
    in memory and put back at the end; training stops early once ``patience`` epochs in a row brought no
    better one (None: run all ``max_epochs``).

    ``scheduler``: stepped after every optimizer step (e.g. ``WarmupCosineLR``). ``ema_decay``: keep an
    exponential moving average of the weights (``optim.ExponentialMovingAverage``), updated after every step;
    the epochs are then scored, chosen and returned with the averaged weights, not the raw ones.

    ``average_from`` (an epoch, from 1): stochastic weight averaging instead of choosing an epoch (Izmailov et
    al. 2018, torch.optim.swa_utils): the weights at the end of every epoch from this one to the last are
    averaged with equal weight, and the model ends with that average. All ``max_epochs`` run (no
    ``patience``); the validation scores per epoch are the raw weights', for the record. Why: with 149
    validation messages one message moves the accuracy by 0.7 points, so the "best" epoch is partly chance;
    the average of the late epochs is steadier than any one of them.

    Returns {"epochs_run", "best_epoch" (None when averaging), "val_accuracy" (per epoch), "val_loss" (per
    epoch), "train_losses", "val_losses" (every eval_freq steps), "examples_seen"}. With ``parallel`` every
    process scores the whole validation set, so all choose the same epoch. ``bar``: the job's progress
    (``train.progress.Progress``), stepped after every optimizer step.
    """
    if average_from is not None:
        if not 1 <= average_from <= max_epochs:
            raise ValueError(
                f"train_classifier: average_from must be an epoch in [1, {max_epochs}], got {average_from}"
            )
        if patience is not None or ema_decay is not None:
            raise ValueError(
                "train_classifier: average_from averages the last epochs' weights; it does not combine "
                "with patience (choosing an epoch) or ema_decay (another average)"
            )
    progress = _new_progress()
    amp = MixedPrecision(precision, model.device)
    ema = ExponentialMovingAverage(model, ema_decay) if ema_decay is not None else None
    average = None  # with average_from: the equal-weight mean of the epochs' weights (decay 1)
    history = {"val_accuracy": [], "val_loss": []}
    best_key, best_state, best_epoch, since_best = None, None, 0, 0
    for epoch in range(max_epochs):
        _train_epoch(
            model,
            train_loader,
            val_loader,
            optimizer,
            device,
            epoch,
            eval_freq,
            eval_iter,
            progress,
            log,
            parallel,
            amp,
            scheduler,
            ema,
            bar,
        )
        model.eval()
        with ema.average_parameters(model) if ema is not None else contextlib.nullcontext():
            val_accuracy, val_loss = calc_accuracy_and_loss_loader(val_loader, model, device)
            key = (val_accuracy, -val_loss)
            improved = best_key is None or key > best_key
            if improved and average_from is None:  # a copy on the host: the model keeps training in place
                best_state = {name: backend.to_numpy(array).copy() for name, array in model.state_dict().items()}
        history["val_accuracy"].append(val_accuracy)
        history["val_loss"].append(val_loss)
        if improved:
            best_key, best_epoch, since_best = key, epoch + 1, 0
        else:
            since_best += 1
        if average_from is not None and epoch + 1 >= average_from:
            average = average or ExponentialMovingAverage(model, decay=1.0)  # the first update copies the weights
            average.update(model)
        if log:
            if average_from is not None:
                epochs = average.num_updates if average is not None else 0
                note = f" (in the average: {epochs} epoch{'s' if epochs != 1 else ''})" if epochs else ""
            else:
                note = " (best so far)" if improved else f" (best: epoch {best_epoch})"
            log(f"Epoch {epoch + 1}: validation accuracy {val_accuracy * 100:.2f}%, loss {val_loss:.3f}{note}")
        if patience is not None and since_best >= patience:
            if log:
                log(f"no better validation accuracy for {patience} epochs: stopping early")
            break
    if average is not None:
        average.copy_to(model)
    elif best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    chosen = (
        {"best_epoch": best_epoch}
        if average is None
        else {"best_epoch": None, "averaged_epochs": [average_from, max_epochs]}
    )
    return {
        "epochs_run": len(history["val_accuracy"]),
        **chosen,
        **history,
        "train_losses": progress["train_losses"],
        "val_losses": progress["val_losses"],
        "examples_seen": progress["examples_seen"],
    }


def class_probabilities(
    text: str,
    model: Module,
    tokenizer: Tokenizer,
    device: str | None = None,
    max_length: int | None = None,
    pad_token_id: int | None = None,
) -> np.ndarray:
    """The class probabilities (num_classes,) the classifier gives ``text``, encoded as it was trained: a GPT's
    ids truncated to ``max_length`` (and the context) and padded with ``pad_token_id`` (default end-of-text),
    the last position read; a BERT's ``[CLS] ids [SEP]`` padded with [PAD] (BertSpamDataset), [CLS] read."""
    from tinygrad_llm.model import BertConfig

    device = device or model.device
    if isinstance(model.config, BertConfig):  # the encoder: positions, not a context_length
        from tinygrad_llm.finetune.bert_classifier import BertSpamDataset

        positions = model.config.max_position_embeddings
        limit = positions if max_length is None else min(max_length, positions)
        input_ids = BertSpamDataset([text], [0], tokenizer, max_length=limit).input_ids  # (1, T)
    else:
        if pad_token_id is None:
            pad_token_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0
        context = model.config.context_length
        limit = context if max_length is None else min(max_length, context)
        ids = tokenizer.encode(text)[:limit] or [pad_token_id]
        if max_length is not None:
            ids += [pad_token_id] * (limit - len(ids))
        input_ids = np.asarray([ids], dtype=np.int64)  # (1, T)
    was_training = model.training
    model.eval()
    with no_grad():
        logits = last_token_logits(model, backend.to_device(input_ids, device))  # (1, classes)
    model.train(was_training)
    logits = backend.to_numpy(logits.data)[0].astype(np.float64)
    exp = np.exp(logits - logits.max())  # softmax
    return exp / exp.sum()


def classify_text(
    text: str,
    model: Module,
    tokenizer: Tokenizer,
    device: str | None = None,
    max_length: int | None = None,
    pad_token_id: int | None = None,
    class_names: Sequence[str] | None = ("not spam", "spam"),
) -> str:
    """The predicted class name of one text (the book's ``classify_review``): encode, truncate to
    ``max_length`` (and the context), pad with end-of-text to ``max_length``, read the last token's logits
    (BERT: ``[CLS]``'s; see ``class_probabilities``)."""
    predicted = int(class_probabilities(text, model, tokenizer, device, max_length, pad_token_id).argmax())
    if predicted >= len(class_names):
        return str(predicted)
    return class_names[predicted]


def classify_review(
    text: str,
    model: Module,
    tokenizer: Tokenizer,
    device: str | None = None,
    max_length: int | None = None,
    pad_token_id: int | None = None,
) -> str:
    """The book's chapter-6 name: "spam" or "not spam" for ``text`` (see ``classify_text``; the padding
    defaults to the tokenizer's end-of-text, which is the book's 50256 for GPT-2's tokenizer)."""
    return classify_text(text, model, tokenizer, device, max_length, pad_token_id, class_names=("not spam", "spam"))
