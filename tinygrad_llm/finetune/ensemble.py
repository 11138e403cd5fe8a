"""Several classifiers trained alike from different seeds, answering together (a deep ensemble,
Lakshminarayanan et al. 2017): the class probabilities of the members, averaged.

    members = [train_one(seed) for seed in (123, 1123, 2123)]   # each a GPT (or BERT) with a class head
    ensemble = ClassifierEnsemble(members)
    logits = ensemble(ids)                                       # (B, T) -> (B, classes): log mean probability

Why: a model trained from scratch on a thousand messages carries its seed's luck, its initialisation and
the order of its batches; which messages it gets wrong differs from seed to seed more than how many. The
mean of three members' probabilities is wrong only where most of them are, so it scores steadier, and
usually better, than any one of them (benchmarks/RESULTS.md measures it on the spam task).

The output is the logarithm of the mean probability, a valid row of logits: its softmax is the mean
probability, its argmax the ensemble's class, and its cross-entropy -log of the mean probability of the
label. ``calc_accuracy_loader``, ``calc_loss_loader`` and ``classify_text`` take an ensemble as they take
one model. On disk the members are one ``model.safetensors`` (``members.0.…``, ``members.1.…``) beside one
config.json, with ``"ensemble_size"`` in finetune.json (finetune.io).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.finetune.classifier import last_token_logits
from tinygrad_llm.nn import Module, ModuleList
from tinygrad_llm.tensor import Tensor

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array


class ClassifierEnsemble(Module):
    """Members with one configuration and one set of classes: ids (B, T) -> (B, classes), log of the members'
    mean class probability at the position each member reads (the last token; [CLS] for BERT)."""

    def __init__(self, members: Iterable[Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"ClassifierEnsemble: needs at least 2 members, got {len(members)}")
        self.members = ModuleList(members)
        self.config = members[0].config

    def forward(self, ids: Array) -> Tensor:
        log_probs = F.stack([F.log_softmax(last_token_logits(member, ids), axis=-1) for member in self.members])
        # log mean_k p_k = logsumexp_k(log p_k) - log K, the largest term subtracted first: exp never overflows
        largest = Tensor(backend.get_array_module(log_probs.data).max(log_probs.data, axis=0))  # (B, classes)
        scaled_sum = (log_probs - largest).exp().sum(axis=0)  # (K, B, C) -> (B, C): sum_k p_k / exp(largest)
        return scaled_sum.log() + largest - math.log(len(self.members))

    def extra_repr(self) -> str:
        return f"{len(self.members)} members, mean class probability"
