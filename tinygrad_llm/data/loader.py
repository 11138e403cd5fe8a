"""Batches of (inputs, targets) from a dataset, optionally shuffled with a seed, resumable mid-epoch.

    loader = DataLoader(dataset, batch_size=8, shuffle=True, seed=123)
    for epoch in range(num_epochs):
        for inputs, targets in loader:            # (B, T) int64 arrays, the model takes them as they are
            ...
            state = loader.state_dict()           # JSON-able: save it with the checkpoint

    loader.load_state_dict(state)                 # a new process: the next pass yields exactly the batches
                                                  # the interrupted run had not yet yielded

Each pass over the loader is one epoch; the order of epoch ``e`` is a permutation drawn from a generator seeded
with (seed, e), so it depends only on the seed and the epoch number. The resumable state is therefore three
numbers: the seed, the epoch, and how many of its batches were already yielded.

A pass started while another one is still running (evaluating on the training loader inside the training
loop, as the book's ``evaluate_model`` does) is a side pass: it walks the running epoch's order from the start
and leaves the state alone, so evaluation never disturbs training or its resume point.
"""

from __future__ import annotations

import weakref

import numpy as np

from tinygrad_llm.data.dataset import check_positive_int


class DataLoader:
    """Batches from ``dataset`` (``len()`` and ``dataset[i] -> (input, target)``; a ``get_batch(indices)``
    method is used when present). ``seed=None`` picks a fresh random seed, recorded in ``state_dict()``."""

    def __init__(
        self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = True, seed: int | None = None
    ):
        self.dataset = dataset
        self.batch_size = check_positive_int(batch_size, "batch_size", "DataLoader")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        n = len(dataset)
        if n == 0:
            raise ValueError("DataLoader: the dataset is empty")
        if drop_last and self.batch_size > n:
            raise ValueError(
                f"DataLoader: batch_size={self.batch_size} but the dataset has only {n} windows, so "
                "drop_last=True would yield no batch at all; lower batch_size (or max_length/stride), "
                "use more text, or pass drop_last=False"
            )
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % (1 << 63)
        self.seed = int(seed)
        self._next_epoch = 0  # the epoch the next (main) pass runs
        self._resume_position = 0  # batches of that epoch to skip (set by load_state_dict)
        self._running = None  # weak reference to the main pass while it runs

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The dataset indices of epoch ``epoch`` in the order they are batched."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _main_pass(self):
        running = self._running() if self._running is not None else None
        return running if running is not None and not running.finished else None

    def __iter__(self):
        running = self._main_pass()
        if running is not None:  # a side pass (e.g. evaluation inside the training loop)
            return _Pass(self, running.epoch, 0)
        main = _Pass(self, self._next_epoch, self._resume_position)
        self._next_epoch += 1
        self._resume_position = 0
        self._running = weakref.ref(main)
        return main

    def state_dict(self) -> dict:
        """Where the next batch comes from: {"epoch", "position" (batches of that epoch already yielded),
        "seed", ...}; plain JSON-able data."""
        running = self._main_pass()
        if running is not None and running.position < len(self):
            epoch, position = running.epoch, running.position
        elif running is not None:  # its last batch is out: the next pass starts the next epoch
            epoch, position = running.epoch + 1, 0
        else:
            epoch, position = self._next_epoch, self._resume_position
        return {
            "epoch": epoch,
            "position": position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "num_windows": len(self.dataset),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next pass yields the rest of epoch ``state["epoch"]``."""
        for key, value in (
            ("shuffle", self.shuffle),
            ("batch_size", self.batch_size),
            ("drop_last", self.drop_last),
            ("num_windows", len(self.dataset)),
        ):
            if key in state and state[key] != value:
                raise ValueError(
                    f"DataLoader.load_state_dict: the state has {key}={state[key]!r} but this loader "
                    f"has {key}={value!r}; resuming would not reproduce the same batches"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(
                f"DataLoader.load_state_dict: epoch {epoch}, position {position} out of range "
                f"(0 <= position <= {len(self)} batches per epoch)"
            )
        if position == len(self):  # that epoch is complete: the next pass starts the following one
            epoch, position = epoch + 1, 0
        self.seed = int(state["seed"])
        self._next_epoch, self._resume_position = epoch, position
        self._running = None

    def __repr__(self) -> str:
        return (
            f"DataLoader({len(self.dataset)} windows, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, {len(self)} batches per epoch)"
        )


class _Pass:
    """One pass over an epoch's order, starting at batch ``position``."""

    def __init__(self, loader: DataLoader, epoch: int, position: int):
        self.loader, self.epoch, self.position = loader, epoch, position
        self.order = loader.epoch_order(epoch)
        self.finished = False

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        loader = self.loader
        if self.position >= len(loader):
            self.finished = True
            raise StopIteration
        start = self.position * loader.batch_size
        indices = self.order[start : start + loader.batch_size]
        self.position += 1
        dataset = loader.dataset
        if hasattr(dataset, "get_batch"):
            return dataset.get_batch(indices)
        inputs, targets = zip(*(dataset[int(i)] for i in indices))
        return np.stack(inputs).astype(np.int64, copy=False), np.stack(targets).astype(np.int64, copy=False)
