"""What every operation shares: undoing broadcasting, and turning arguments into tensors."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from tinygrad_llm import backend
from tinygrad_llm.backend import Array
from tinygrad_llm.tensor import Tensor


def sum_to(x: Array, shape: tuple) -> Array:
    """Sum ``x`` down to ``shape``: the gradient of broadcasting an array of ``shape`` up to ``x.shape``.

    Leading axes that broadcasting added are summed away; axes of length 1 in ``shape`` are summed with
    keepdims. The one place where broadcasting is undone.
    """
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    y = x.sum(axis=axes, keepdims=True)
    return y.reshape(shape)


def as_tensor(value: Any, like: Tensor) -> Tensor:
    """A Tensor for an operand: Tensors pass through, Python numbers take ``like``'s float dtype."""
    if isinstance(value, Tensor):
        return value
    xp = backend.get_array_module(like.data)
    if isinstance(value, (int, float, bool)) and like.data.dtype.kind == "f":
        return Tensor._from_op(xp.asarray(value, dtype=like.data.dtype), None)
    if backend.get_array_module(value) is not xp:
        value = backend.to_device(value, backend.device_of(like.data))
    return Tensor._from_op(xp.asarray(value), None)


def raw(value: Any, xp: ModuleType) -> Array:
    """The raw array of a Tensor or array-like (for integer and boolean arguments: ids, masks)."""
    if isinstance(value, Tensor):
        value = value.data
    if backend.get_array_module(value) is not xp:
        value = backend.to_device(value, "cpu" if xp.__name__ == "numpy" else "cuda")
    return xp.asarray(value)


def first_out_of_range(ids: Array, upper: int, ignore: int | None = None) -> tuple[int | None, int]:
    """(bad, count): an id of ``ids`` outside [0, upper) (the largest if any is too large, else the
    smallest) or None, and how many ids are not ``ignore``. Ids equal to ``ignore`` are left out.

    On a GPU array every value that comes back to the host is a copy that waits for all queued work:
    min, max and count come back together, in one copy. Check NumPy ids before moving them (no wait)."""
    xp = backend.get_array_module(ids)
    if ids.size == 0:
        return None, 0
    if ignore is None:
        stats = xp.stack([ids.min(), ids.max(), xp.asarray(ids.size, dtype=ids.dtype)])
    else:
        keep = ids != ignore
        kept = xp.where(keep, ids, 0)  # ignored entries become 0, always in range
        stats = xp.stack([kept.min(), kept.max(), keep.sum().astype(ids.dtype)])
    lo, hi, count = stats.tolist()  # the one device-to-host copy
    bad = hi if hi >= upper else (lo if lo < 0 else None)
    return bad, int(count)


def normalize_axes(axis: int | tuple[int, ...] | list[int] | None, ndim: int, op: str = "reduction") -> tuple[int, ...]:
    """axis (None, int or tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: axis {axis} repeats an axis")
    return tuple(sorted(out))


def shapes(*tensors: Tensor) -> str:
    return " and ".join(str(tuple(t.shape)) for t in tensors)
