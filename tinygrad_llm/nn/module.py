"""Module, Parameter, ModuleList, Sequential: the containers every layer and model is built from.

A ``Module`` registers what is assigned to it: ``self.weight = Parameter(...)`` becomes a parameter,
``self.att = MultiHeadAttention(...)`` a submodule, so ``parameters()``, ``state_dict()``, ``train()``
and ``to(device)`` reach everything without the model listing it (as ``torch.nn.Module``)::

    class TwoLayer(Module):
        def __init__(self):
            super().__init__()
            self.fc1 = Linear(4, 8)
            self.fc2 = Linear(8, 2)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

    TwoLayer().state_dict().keys()  # fc1.weight, fc1.bias, fc2.weight, fc2.bias
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.tensor import Tensor, module_scope


class Parameter(Tensor):
    """A Tensor a Module learns: always ``requires_grad=True``, always floating point."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True, dtype=None, device: str | None = None):
        super().__init__(data, dtype=dtype, device=device)
        if self.data.dtype.kind != "f":
            raise TypeError(
                f"Parameter: expected floating-point data, got dtype {self.data.dtype} for shape {self.data.shape}"
            )
        self.requires_grad_(requires_grad)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


class Module:
    """Base class of every layer and model: parameters, submodules, state_dict, train/eval, devices.

    Subclasses call ``super().__init__()`` first, assign Parameters and Modules as attributes, and
    define ``forward``; calling the module calls ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # --- registration ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        kind = None  # the registry this value belongs in
        if isinstance(value, Parameter):
            kind = self._parameters
        elif isinstance(value, Module):
            kind = self._modules
        for registry in (self._parameters, self._modules, self._buffers):
            if registry is not kind:
                registry.pop(name, None)
        if kind is not None:
            kind[name] = value  # a re-assigned name keeps its place in the order
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Array) -> None:
        """A raw array the module needs but does not learn (a causal mask): moved by ``to``, not saved."""
        setattr(self, name, array)
        self._buffers[name] = True

    def __call__(self, *args, **kwargs):
        with module_scope(self):  # operations recorded inside forward remember this module (tinygrad_llm.graph)
            return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # --- traversal ------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for this module and every submodule, each module once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            for child_name, child in module._modules.items():
                stack.append((f"{name}.{child_name}" if name else child_name, child))

    def modules(self) -> list[Module]:
        return [m for _, m in self.named_modules()]

    def children(self) -> list[Module]:
        return list(self._modules.values())

    def _all_named_parameters(self, prefix: str = ""):
        """Every (name, parameter) pair in definition order, a tied parameter once per name."""
        for name, p in self._parameters.items():
            yield (f"{prefix}{name}", p)
        for name, child in self._modules.items():
            yield from child._all_named_parameters(f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a parameter shared by two modules (tied weights) comes once,
        under the first name it is reached by."""
        seen = set()
        for name, p in self._all_named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self) -> list:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalars in the parameters, tied weights counted once."""
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{dotted name: raw array} for every parameter (tied weights under their first name only).

        The arrays are the parameters' own storage, not copies (as torch): copy before mutating.
        """
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> dict:
        """Copy arrays into the parameters, in place (dtype and device kept: the parameter's own).

        ``strict`` requires the names to match exactly (a tied weight may come under any of its names);
        shapes must always match. Returns {"missing_keys": [...], "unexpected_keys": [...]}.
        """
        all_names = dict(self._all_named_parameters())
        unexpected = [k for k in state_dict if k not in all_names]
        missing = [
            name
            for name, p in self.named_parameters()
            if not any(alias in state_dict for alias, q in all_names.items() if q is p)
        ]
        if strict and (unexpected or missing):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"{type(self).__name__}.load_state_dict: " + "; ".join(parts))
        for key, value in state_dict.items():
            p = all_names.get(key)
            if p is None:
                continue
            value = value.data if isinstance(value, Tensor) else value
            shape = tuple(getattr(value, "shape", np.shape(value)))
            if shape != tuple(p.shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {key!r} has shape {shape} in the "
                    f"state dict but the model's parameter has shape {tuple(p.shape)}"
                )
        for key, value in state_dict.items():
            p = all_names.get(key)
            if p is None:
                continue
            value = value.data if isinstance(value, Tensor) else value
            value = backend.to_device(value, p.device) if hasattr(value, "dtype") else value
            p.data[...] = backend.get_array_module(p.data).asarray(value, dtype=p.dtype)
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # --- modes and placement --------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active); ``train(False)`` is ``eval()``. Returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode: dropout is the identity. Returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str | None = None, dtype: Any = None) -> "Module":
        """Move (``device``) and/or cast (``dtype``) every parameter and buffer in place. Parameters keep
        their identity, so tied weights stay tied and optimizers holding them stay valid."""
        if device is not None:
            device = backend.check_device(device)
        for p in self.parameters():
            if device is not None:
                p.data = backend.to_device(p.data, device)
                if p.grad is not None:
                    p.grad = backend.to_device(p.grad, device)
            if dtype is not None and p.data.dtype != np.dtype(dtype):
                p.data = p.data.astype(dtype)
                p.grad = None
        if device is not None:
            for module in self.modules():
                for name in module._buffers:
                    object.__setattr__(module, name, backend.to_device(getattr(module, name), device))
        return self

    def double(self) -> "Module":
        """Cast to float64 (for gradient checks)."""
        return self.to(dtype=np.float64)

    def float(self) -> "Module":
        return self.to(dtype=np.float32)

    @property
    def device(self) -> str:
        """The device of the first parameter ('cpu' for a module without parameters)."""
        params = self.parameters()
        return params[0].device if params else "cpu"

    # --- printing -------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        if not self._modules:
            return f"{type(self).__name__}({extra})"
        lines = [f"{type(self).__name__}("] + ([f"  {extra}"] if extra else [])
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered as submodules named "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return type(self)(items[index])
        return items[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


class Sequential(ModuleList):
    """Modules applied one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for module in self:
            x = module(x)
        return x
