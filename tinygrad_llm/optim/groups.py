"""Which parameters get weight decay: the weight matrices of linear layers, nothing else (minGPT's rule).

Weight decay pulls weights towards 0. It regularises the matrices that mix features (attention
projections, feed-forward layers, the output head); it is not applied to

- biases and LayerNorm scale/shift: they set offsets and scales, and pulling a scale towards 0 fights
  the normalisation rather than limiting capacity;
- embeddings: each row gets a gradient only when its token appears, yet decay would shrink every row
  at every step, eroding the rows of rare tokens.

The rule, exactly:

    decayed  ⇔  the parameter is the 2-D ``weight`` of a linear layer

decided by module type when a model is given (a module whose class is or derives from a class named
``Linear``; a weight tied to an ``Embedding``'s, as GPT-2's output head, counts as an embedding), and by
name when ``(name, parameter)`` pairs are given: 2-D or more, and the name does not
mark an embedding (a module name containing ``emb``, or Hugging Face GPT-2's ``wte``/``wpe``). Biases and
LayerNorm parameters are 1-D, so the name rule excludes them by their shape. Frozen parameters
(``requires_grad`` False) are left out of both groups. minGPT excludes embeddings the same way; nanoGPT
instead decays every 2-D parameter, embeddings included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.nn.module import Parameter

EMBEDDING_NAME_MARKERS = ("emb", "wte", "wpe")


def is_decayed_by_name(name: str, param: Parameter) -> bool:
    """The name rule: an n-D (n >= 2) parameter whose owning module's name does not mark an embedding."""
    if param.data.ndim < 2:
        return False  # biases, LayerNorm scale and shift
    module_name = name.rpartition(".")[0].lower()
    last_module = module_name.rpartition(".")[2]
    return not any(marker in last_module for marker in EMBEDDING_NAME_MARKERS)


def param_groups_for_weight_decay(named_parameters: Iterable[tuple[str, Parameter]], weight_decay: float) -> list[dict]:
    """Two parameter groups for an optimiser: ``[{decayed, weight_decay}, {the rest, 0.0}]``.

    ``named_parameters``: a model (a Module: its ``named_modules()`` decide by type when it has them,
    else its ``named_parameters()`` by name) or an iterable of ``(name, parameter)`` pairs. The groups
    carry the names (``param_names``) so optimiser errors and saved states can name parameters.
    A parameter shared by two modules (tied weights) appears once.
    """
    decayed_ids = None
    if hasattr(named_parameters, "named_parameters"):
        model = named_parameters
        if hasattr(model, "named_modules"):
            modules = [module for _, module in model.named_modules()]
            decayed_ids = {id(m.weight) for m in modules if _is_a(m, "Linear") and _weight_ndim(m) >= 2}
            decayed_ids -= {id(m.weight) for m in modules if _is_a(m, "Embedding") and _weight_ndim(m)}
        named_parameters = model.named_parameters()
    decay, no_decay, seen = [], [], set()
    for name, p in named_parameters:
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        decided = id(p) in decayed_ids if decayed_ids is not None else is_decayed_by_name(name, p)
        (decay if decided else no_decay).append((name, p))
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def _is_a(module, class_name: str) -> bool:
    """Whether the module's class is, or derives from, a class called ``class_name`` (nn.Linear, ...)."""
    return any(cls.__name__ == class_name for cls in type(module).__mro__)


def _weight_ndim(module) -> int:
    weight = getattr(module, "weight", None)
    return 0 if weight is None else weight.data.ndim
