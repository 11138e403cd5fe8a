"""Operations that move, select or join elements: reshape, transpose, indexing, concatenate, stack,
split, where, masked_fill, and moving between devices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.functional._common import as_tensor, raw, sum_to
from tinygrad_llm.tensor import Function, Tensor, is_grad_enabled


class Reshape(Function):
    def __init__(self, shape: tuple):
        self.shape = shape

    def forward(self, x: Array) -> Array:
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy: Array) -> Array:
        return gy.reshape(self.x_shape)


class Transpose(Function):
    def __init__(self, axes: tuple):
        self.axes = axes

    def forward(self, x: Array) -> Array:
        return x.transpose(self.axes)

    def backward(self, gy: Array) -> Array:
        return gy.transpose(np.argsort(self.axes))  # the inverse permutation


class GetItem(Function):
    """x[key] for basic keys (ints, slices, None, Ellipsis) and advanced ones (integer / boolean arrays)."""

    def __init__(self, key):
        self.key = key

    def forward(self, x: Array) -> Array:
        self.x_shape, self.x_dtype = x.shape, x.dtype
        return x[self.key]

    def backward(self, gy: Array) -> Array:
        gx = self.xp.zeros(self.x_shape, dtype=self.x_dtype)
        if _is_basic(self.key):
            gx[self.key] = gy  # basic indexing selects each element at most once
        else:
            backend.scatter_add(gx, self.key, gy)  # an element picked k times receives k gradients
        return gx


def _is_basic(key) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, (int, slice, np.integer)) for k in items)


class Concatenate(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs: Array) -> Array:
        self.sizes = [x.shape[self.axis] for x in xs]
        return self.xp.concatenate(xs, axis=self.axis)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(self.xp.split(gy, bounds, axis=self.axis))


class Stack(Function):
    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs: Array) -> Array:
        return self.xp.stack(xs, axis=self.axis)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        moved = self.xp.moveaxis(gy, self.axis, 0)
        return tuple(moved[i] for i in range(moved.shape[0]))


class Where(Function):
    """where(condition, a, b): a where condition holds, else b; condition is a fixed boolean array."""

    def __init__(self, condition):
        self.condition = condition

    def forward(self, a: Array, b: Array) -> Array:
        self.a_shape, self.b_shape = a.shape, b.shape
        return self.xp.where(self.condition, a, b)

    def backward(self, gy: Array) -> tuple[Array | None, ...]:
        c = self.condition
        ga = sum_to(self.xp.where(c, gy, 0), self.a_shape) if self.needs_grad[0] else None
        gb = sum_to(self.xp.where(c, 0, gy), self.b_shape) if self.needs_grad[1] else None
        return ga, gb


class MaskedFill(Function):
    """x with ``value`` wherever ``mask`` (broadcast against x) is True."""

    def __init__(self, mask, value: float):
        self.mask, self.value = mask, value

    def forward(self, x: Array) -> Array:
        self.x_shape = x.shape
        return self.xp.where(self.mask, self.xp.asarray(self.value, dtype=x.dtype), x)

    def backward(self, gy: Array) -> Array:
        return sum_to(self.xp.where(self.mask, 0, gy), self.x_shape)  # filled places do not depend on x


class ToDevice(Function):
    def __init__(self, device: str):
        self.device = device

    def forward(self, x: Array) -> Array:
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, gy: Array) -> Array:
        return backend.to_device(gy, self.source)

    def __call__(self, x):
        # the only operation whose output lives elsewhere than its input: skip the same-device check
        y = self.forward(x.data)
        if x.requires_grad and is_grad_enabled():
            self.inputs, self.needs_grad = (x,), (True,)
            return Tensor._from_op(y, self)
        return Tensor._from_op(y, None)


# ---- user-facing functions -------------------------------------------------------------------------


def reshape(x: Tensor, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    known = [n for n in shape if n != -1]
    total = int(np.prod(known)) if known else 1
    if shape.count(-1) > 1 or (-1 not in shape and total != x.size) or (-1 in shape and (total == 0 or x.size % total)):
        raise ValueError(f"reshape: cannot view a tensor of shape {x.shape} ({x.size} elements) as {shape}")
    if tuple(shape) == x.shape:
        return x
    return Reshape(tuple(shape))(x)


def transpose(x: Tensor, *axes) -> Tensor:
    """Permute the axes (reverse them when none are given), as numpy.transpose."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if not axes:
        axes = tuple(reversed(range(x.ndim)))
    if (
        len(axes) != x.ndim
        or any(not -x.ndim <= a < x.ndim for a in axes)
        or sorted(a % x.ndim for a in axes) != list(range(x.ndim))
    ):
        raise ValueError(f"transpose: {axes} is not a permutation of the axes of a tensor of shape {x.shape}")
    return Transpose(tuple(a % x.ndim for a in axes))(x)


def swapaxes(x: Tensor, axis1: int, axis2: int) -> Tensor:
    for a in (axis1, axis2):
        if not -x.ndim <= a < x.ndim:
            raise ValueError(f"swapaxes: axis {a} is out of range for a tensor of shape {x.shape}")
    axes = list(range(x.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose(tuple(axes))(x)


def getitem(x: Tensor, key: Any) -> Tensor:
    return GetItem(_raw_key(key, x.data))(x)


def _raw_key(key, data):
    """Index arrays (Tensors, lists, numpy arrays) as arrays of the data's backend."""
    xp = backend.get_array_module(data)

    def convert(k: Any) -> Any:
        if k is None or k is Ellipsis or isinstance(k, (int, slice, np.integer)):
            return k
        k = raw(k, xp)
        if k.size == 0 and k.dtype.kind == "f":  # an empty list selects nothing, as in NumPy
            k = k.astype(np.intp)
        return k

    return tuple(convert(k) for k in key) if isinstance(key, tuple) else convert(key)


def concatenate(tensors: Iterable[Tensor | Array], axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    return Concatenate(axis)(*[as_tensor(t, tensors[0]) for t in tensors])


def stack(tensors: Iterable[Tensor | Array], axis: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    if len({tuple(t.shape) for t in tensors}) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {[tuple(t.shape) for t in tensors]}")
    return Stack(axis)(*[as_tensor(t, tensors[0]) for t in tensors])


def split(x: Tensor, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Tensor]:
    """Split along ``axis`` as numpy.split: a number of equal sections, or the indices to cut at."""
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"split: axis {axis} is out of range for a tensor of shape {x.shape}")
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(
                f"split: axis {axis} of length {n} does not divide into {indices_or_sections} equal sections"
            )
        step = n // indices_or_sections
        bounds = [i * step for i in range(indices_or_sections + 1)]
    else:
        bounds = [0, *indices_or_sections, n]
    lead = (slice(None),) * (axis % x.ndim)
    return [getitem(x, lead + (slice(start, stop),)) for start, stop in zip(bounds[:-1], bounds[1:])]


def where(condition: Tensor | Array | list, a: Tensor | Array | float, b: Tensor | Array | float) -> Tensor:
    """Elements of a where condition is True, else of b (a and b broadcast; both differentiable)."""
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    condition = raw(condition, backend.get_array_module(like.data))
    if condition.dtype != bool:
        raise TypeError(f"where: condition must be boolean, got dtype {condition.dtype}")
    return Where(condition)(a, b)


def masked_fill(x: Tensor, mask: Tensor | Array | list, value: float) -> Tensor:
    """x with ``value`` where ``mask`` is True; mask broadcasts against x (e.g. a causal (T, T) mask)."""
    mask = raw(mask, backend.get_array_module(x.data))
    if mask.dtype != bool:
        raise TypeError(f"masked_fill: mask must be boolean, got dtype {mask.dtype}")
    try:
        out_shape = np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        raise ValueError(
            f"masked_fill: mask of shape {mask.shape} does not broadcast to the tensor's shape {x.shape}"
        ) from None
    if out_shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} would grow the tensor's shape {x.shape}")
    return MaskedFill(mask, value)(x)


def to(x: Tensor, device: str) -> Tensor:
    """x on ``device`` ('cpu' or 'cuda'); gradients flow back to the original device."""
    device = backend.check_device(device)
    if x.device == device:
        return x
    return ToDevice(device)(x)
