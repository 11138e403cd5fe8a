"""The optimiser base class: parameter groups, ``zero_grad``, and state that can be saved and restored.

As in PyTorch, an optimiser holds ``param_groups`` (a list of dicts: ``"params"`` plus hyperparameters
such as ``"lr"`` and ``"weight_decay"``) and ``state`` (per parameter: arrays such as Adam's moments and
a ``"step"`` count). A parameter is anything with ``.data`` (a numpy or cupy array), ``.grad`` (an array
of the same shape, or None) and ``.requires_grad`` — a ``Tensor`` or ``Parameter``.

The constructor accepts, as ``torch.optim`` does:

    AdamW(model.parameters())                       # an iterable of parameters
    AdamW(model.named_parameters())                 # (name, parameter) pairs: names kept for messages
    AdamW([{"params": decay, "weight_decay": 0.1},  # parameter groups, each overriding the defaults
           {"params": no_decay, "weight_decay": 0.0}])

``step()`` updates ``param.data`` in place and skips parameters whose ``.grad`` is None or whose
``requires_grad`` is False: such parameters get no state.
"""

from __future__ import annotations

import math

from tinygrad_llm import backend


class Optimizer:
    """Base class: subclasses set ``defaults`` and implement ``step()`` (and ``_check_group``)."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict = {}  # parameter -> dict of arrays and counters (keyed by identity)
        groups = _as_param_groups(params)
        for group in groups:
            self.add_param_group(group)

    # --- parameter groups ---------------------------------------------------------------------
    def add_param_group(self, group: dict) -> None:
        """Add a group: ``{"params": [...], **overrides}``; missing hyperparameters come from ``defaults``."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {type(group).__name__}")
        params, names = _split_names(group["params"], where=f"parameter group {len(self.param_groups)}")
        if "param_names" in group and names is None:
            names = list(group["param_names"])
        unknown = set(group) - set(self.defaults) - {"params", "param_names", "initial_lr"}
        if unknown:
            raise ValueError(
                f"parameter group {len(self.param_groups)}: unknown options {sorted(unknown)}; "
                f"{type(self).__name__} takes {sorted(self.defaults)}"
            )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"parameter {_describe(p, names, i)} appears in more than one parameter group")
            seen.add(id(p))
        new_group = {**self.defaults, **{k: v for k, v in group.items() if k not in ("params", "param_names")}}
        new_group["params"] = params
        if names is not None:
            new_group["param_names"] = names
        self._check_group(new_group, len(self.param_groups))
        self.param_groups.append(new_group)

    def _check_group(self, group: dict, index: int) -> None:
        """Validate a group's hyperparameters (subclasses extend this)."""
        check_lr(group["lr"], f"parameter group {index}: lr")

    # --- the update ---------------------------------------------------------------------------
    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients before the next backward (None by default, as PyTorch 2)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def _params_to_update(self, group: dict):
        """(index, parameter, grad) for every parameter of ``group`` that takes part in this step."""
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            if p.grad is None or not p.requires_grad:
                continue  # frozen, or not used by this loss: no update and no state
            grad = p.grad
            if grad.shape != p.data.shape:
                raise ValueError(
                    f"{type(self).__name__}: gradient of shape {tuple(grad.shape)} for parameter "
                    f"{_describe(p, names, i)} of shape {tuple(p.data.shape)}"
                )
            if grad.dtype != p.data.dtype:
                grad = grad.astype(p.data.dtype)
            yield i, p, grad

    # --- saving and restoring -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}`` as PyTorch.

        Parameters are numbered in order across groups. The arrays are the live state (not copies),
        on the parameters' device; ``tinygrad_llm.checkpoint`` moves them to the CPU when saving.
        """
        index_of, groups = {}, []
        for group in self.param_groups:
            packed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index_of[id(p)] = len(index_of)
                packed["params"].append(index_of[id(p)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index_of[id(p)]] = dict(self.state[p])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what ``state_dict()`` returned (arrays are copied onto each parameter's device).

        The groups must have the same sizes and the state arrays the parameters' shapes; hyperparameters
        (lr, betas, weight decay, ...) are taken from ``state_dict``, as PyTorch does.
        """
        saved_groups = state_dict.get("param_groups")
        if not isinstance(saved_groups, list) or "state" not in state_dict:
            raise ValueError(
                "optimizer state: expected a dict with 'state' and 'param_groups' (what Optimizer.state_dict() returns)"
            )
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"optimizer state has {len(saved_groups)} parameter groups, "
                f"this {type(self).__name__} has {len(self.param_groups)}"
            )
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"optimizer state: parameter group {gi} has {len(saved['params'])} parameters, "
                    f"this optimizer's has {len(group['params'])}"
                )
            saved_names, names = saved.get("param_names"), group.get("param_names")
            if saved_names is not None and names is not None and list(saved_names) != list(names):
                diff = next(i for i, (a, b) in enumerate(zip(saved_names, names)) if a != b)
                raise ValueError(
                    f"optimizer state: parameter group {gi} entry {diff} is {saved_names[diff]!r} "
                    f"in the saved state but {names[diff]!r} here"
                )
        saved_state = {int(k): v for k, v in state_dict["state"].items()}  # JSON turns int keys into str
        new_state = {}
        for saved, group in zip(saved_groups, self.param_groups):
            names = group.get("param_names")
            for i, (index, p) in enumerate(zip(saved["params"], group["params"])):
                entry = saved_state.get(int(index))
                if entry is None:
                    continue
                new_state[p] = {
                    key: self._restore_value(value, p, _describe(p, names, i), key) for key, value in entry.items()
                }
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key in ("params", "param_names"):
                    continue
                group[key] = tuple(value) if isinstance(self.defaults.get(key), tuple) else value
        self.state = new_state

    @staticmethod
    def _restore_value(value, p, name: str, key: str):
        if not hasattr(value, "shape"):
            return value  # counters such as "step"
        if value.ndim == 0:
            return value.item()
        if tuple(value.shape) != tuple(p.data.shape):
            raise ValueError(
                f"optimizer state {key!r} of parameter {name} has shape {tuple(value.shape)}, "
                f"the parameter has shape {tuple(p.data.shape)}"
            )
        array = backend.to_device(value, backend.device_of(p.data))
        return array.copy() if array is value else array  # never alias the caller's arrays

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            options = ", ".join(f"{k}={v}" for k, v in group.items() if k not in ("params", "param_names"))
            lines.append(f"  group {i}: {len(group['params'])} parameters, {options}")
        return "\n".join(lines + [")"])


def check_lr(lr: float, what: str = "lr") -> float:
    """A learning rate must be a finite number >= 0."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {lr!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {lr!r}")
    return value


def check_nonnegative(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return value


def _is_parameter(x) -> bool:
    return hasattr(x, "data") and hasattr(x, "grad") and hasattr(x, "requires_grad")


def _as_param_groups(params) -> list[dict]:
    if _is_parameter(params):  # a Tensor is iterable (over its rows): refuse it rather than slice it
        raise TypeError(
            "params must be an iterable of parameters, (name, parameter) pairs or parameter "
            "groups, got a single tensor: wrap it in a list"
        )
    if isinstance(params, dict):
        raise TypeError(
            "params must be an iterable of parameters or of parameter-group dicts, got a dict "
            "(for a state dict, pass model.named_parameters() instead)"
        )
    items = list(params)
    if not items:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(item, dict) for item in items):
        return items
    if any(isinstance(item, dict) for item in items):
        raise TypeError("params mixes parameter-group dicts with parameters: use one or the other")
    return [{"params": items}]


def _split_names(params, where: str):
    """A list of parameters and a list of names (None when none were given)."""
    if _is_parameter(params):
        params = [params]
    items = list(params)
    if not items:
        raise ValueError(f"{where}: empty parameter list")
    named = [isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in items]
    if all(named):
        names, tensors = [n for n, _ in items], [p for _, p in items]
    elif any(named):
        raise TypeError(f"{where}: mixes (name, parameter) pairs with bare parameters")
    else:
        names, tensors = None, items
    for i, p in enumerate(tensors):
        if not _is_parameter(p):
            raise TypeError(
                f"{where}: entry {i} is a {type(p).__name__}, expected a parameter "
                "(an object with .data, .grad and .requires_grad)"
            )
        if p.data.dtype.kind != "f":
            raise TypeError(
                f"{where}: parameter {_describe(p, names, i)} has dtype {p.data.dtype}; "
                "only floating-point parameters can be optimised"
            )
    return tensors, names


def _describe(p, names, i: int) -> str:
    label = repr(names[i]) if names is not None else f"#{i}"
    return f"{label} (shape {tuple(p.data.shape)})"
