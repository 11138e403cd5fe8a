"""gradcheck: compare the analytic gradients of a function with float64 central differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.tensor import Tensor

ELEMENTWISE_LIMIT = 512  # inputs up to this size are checked element by element, larger along directions
N_DIRECTIONS = 8


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor | Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    seed: int = 0,
) -> bool:
    """Check ``fn(*inputs)``'s backward against central differences, in float64.

    The output (any shape) is reduced with a fixed random cotangent ``r`` to ``L = sum(fn(*inputs) * r)``,
    so every output element is tested. Inputs with at most 512 elements are perturbed one element at a
    time; larger ones along 8 random unit directions ``v``, comparing ``grad . v`` with
    ``(L(x + eps v) - L(x - eps v)) / 2 eps``.

    Returns True, or raises AssertionError naming the input, the worst element, and both values.
    """
    inputs = list(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; finite differences need float64")
    rng = np.random.default_rng(seed)

    out = fn(*inputs)
    xp = backend.get_array_module(out.data)
    cotangent = xp.asarray(rng.standard_normal(out.shape))
    for i in checked:
        inputs[i].grad = None
    (out * Tensor(cotangent, dtype=np.float64)).sum().backward()
    analytic = {i: (inputs[i].grad if inputs[i].grad is not None else xp.zeros(inputs[i].shape)) for i in checked}

    def loss() -> float:
        from tinygrad_llm.tensor import no_grad

        with no_grad():
            return float((fn(*inputs).data * cotangent).sum())

    for i in checked:
        x = inputs[i].data
        original = x.copy()
        if x.size <= ELEMENTWISE_LIMIT:
            numeric = np.zeros(x.shape)
            for j in np.ndindex(x.shape):  # write x itself: x may be a non-contiguous view (x.T)
                x[j] = original[j] + eps
                plus = loss()
                x[j] = original[j] - eps
                minus = loss()
                x[j] = original[j]
                numeric[j] = (plus - minus) / (2 * eps)
            got = backend.to_numpy(analytic[i])
            _compare(i, got, numeric, atol, rtol, "element")
        else:
            got_dirs, want_dirs = [], []
            for _ in range(N_DIRECTIONS):
                v = rng.standard_normal(x.shape)
                v /= np.linalg.norm(v)
                v_dev = xp.asarray(v)
                x[...] = original + eps * v_dev
                plus = loss()
                x[...] = original - eps * v_dev
                minus = loss()
                x[...] = original
                want_dirs.append((plus - minus) / (2 * eps))
                got_dirs.append(float((analytic[i] * v_dev).sum()))
            _compare(i, np.array(got_dirs), np.array(want_dirs), atol, rtol, "direction")
    return True


def _compare(index: int, analytic, numeric, atol: float, rtol: float, unit: str) -> None:
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    error = np.where(np.isfinite(error), error, np.inf)  # a NaN or infinite gradient fails, never passes
    if error.size and error.max() > 0:
        worst = np.unravel_index(int(np.argmax(error)), error.shape)
        raise AssertionError(
            f"gradcheck: input {index}, {unit} {tuple(int(w) for w in worst)}: analytic {analytic[worst]:.8g} "
            f"vs numeric {numeric[worst]:.8g} (|diff| {abs(analytic[worst] - numeric[worst]):.3g} > "
            f"atol {atol} + rtol {rtol} * |numeric|)"
        )
