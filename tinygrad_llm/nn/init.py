"""Initialisers: fill a Parameter's array in place from the library's seeded generator.

They draw on the CPU from ``backend.get_generator("cpu")`` (so ``tinygrad_llm.manual_seed`` makes a model
reproducible whatever the device) and copy the result to the parameter's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tinygrad_llm import backend

if TYPE_CHECKING:
    from tinygrad_llm.tensor import Tensor

_skip = False  # inside skip_init(): uniform_/normal_ leave parameters as allocated


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Modules built inside keep their freshly allocated (np.empty: arbitrary) values instead of random
    draws: for a model whose every parameter is about to be overwritten by loaded weights
    (``GPTModel.from_pretrained``), where drawing 1.5B random numbers would be wasted time and memory."""
    global _skip
    previous, _skip = _skip, True
    try:
        yield
    finally:
        _skip = previous


def _fill(param, values) -> None:
    param.data[...] = backend.to_device(values.astype(param.dtype, copy=False), param.device)


def uniform_(param: Tensor, low: float, high: float) -> Tensor:
    """Fill with U(low, high)."""
    if _skip:
        return param
    gen = backend.get_generator("cpu")
    _fill(param, gen.uniform(low, high, size=param.shape))
    return param


def normal_(param: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with N(mean, std^2)."""
    if _skip:
        return param
    gen = backend.get_generator("cpu")
    _fill(param, gen.standard_normal(size=param.shape, dtype="float32") * std + mean)
    return param


def zeros_(param: Tensor) -> Tensor:
    param.data[...] = 0
    return param


def ones_(param: Tensor) -> Tensor:
    param.data[...] = 1
    return param


def linear_bound(fan_in: int) -> float:
    """torch.nn.Linear's default bound, 1/sqrt(fan_in), for both weight and bias.

    (kaiming_uniform_ with a = sqrt(5) gives gain sqrt(2 / (1 + 5)) = sqrt(1/3) and bound
    gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).)
    """
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
