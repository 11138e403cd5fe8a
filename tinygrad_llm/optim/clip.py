"""Gradient clipping by global L2 norm, as ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tinygrad_llm import backend, runtime

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tinygrad_llm.backend import Array
    from tinygrad_llm.nn.module import Parameter


def clip_grad_norm_(parameters: Iterable[Parameter], max_norm: float, error_if_nonfinite: bool = False) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``; return the norm.

    total_norm = √(Σ_p ‖g_p‖²) over every parameter with a gradient (None gradients are skipped).
    When total_norm > max_norm every gradient is multiplied by ``max_norm / (total_norm + 1e-6)``, as
    PyTorch (the 1e-6 guards a zero norm); otherwise they are left as they are. Returns the norm before
    clipping, as a Python float — log it to watch for spikes.

    Non-finite norm (an inf or NaN somewhere in the gradients): the gradients are left untouched and
    the non-finite norm is returned, so the caller can skip the step or stop with a clear message
    (PyTorch would scale them by 0 or NaN instead); ``error_if_nonfinite=True`` raises a RuntimeError.
    """
    total_norm = float(clip_grad_norm_on_device_(parameters, max_norm))  # the one device-to-host copy
    if not math.isfinite(total_norm) and error_if_nonfinite:
        raise RuntimeError(
            f"clip_grad_norm_: the total norm of the gradients is {total_norm}; some gradient has an inf or NaN"
        )
    return total_norm


def clip_grad_norm_on_device_(parameters: Iterable[Parameter], max_norm: float) -> Array | float:
    """``clip_grad_norm_`` without waiting for the GPU: the same clipping, the norm returned as a 0-d float64
    array on the gradients' device (0.0 without gradients), for a loop that reads it with other values at once.

    Whether to clip is decided on the device too: every gradient is multiplied by a 0-d factor in its own
    dtype, ``max_norm / (total_norm + 1e-6)`` where that is below 1 and the norm finite, else exactly 1 (which
    leaves every value as it is, bit for bit)."""
    if hasattr(parameters, "data") and hasattr(parameters, "grad"):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    max_norm = float(max_norm)
    if not max_norm > 0 or not math.isfinite(max_norm):
        raise ValueError(f"clip_grad_norm_: max_norm must be a finite number > 0, got {max_norm}")
    if not grads:
        return 0.0
    # The norm of the gradients' squared norms g.g (each a dot product in its dtype, as PyTorch's norm), all on
    # the gradients' device: no copy to the host here (each would stall a GPU). The dot is a BLAS call, so
    # through the thread policy: on a busy machine a parallel one waits a scheduler slice.
    xp = backend.get_array_module(grads[0])
    squares = xp.stack([runtime.matmul(g.ravel(), g.ravel()).astype(xp.float64) for g in grads])  # (n_params,)
    total_norm = xp.sqrt(squares.sum())
    clip_coef = max_norm / (total_norm + 1e-6)
    clip_coef = xp.where(xp.isfinite(total_norm) & (clip_coef < 1.0), clip_coef, 1.0)
    for g in grads:
        g *= clip_coef.astype(g.dtype)  # in the gradient's dtype, as a Python float would multiply
    return total_norm


def layer_of(name: str) -> str:
    """The layer a parameter name belongs to: ``trf_blocks.3.att.W_qkv.weight`` -> ``trf_blocks.3``,
    ``tok_emb.weight`` -> ``tok_emb`` (a numbered container keeps its number)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else name


def grad_norms_by_layer(named_parameters: Iterable[tuple[str, Parameter]]) -> dict:
    """{layer: L2 norm of the gradients of its parameters} in model order, parameters without a gradient
    left out (appendix D's ``find_highest_gradient``, per layer): the picture of where gradients grow or
    vanish through the depth of a network. The norms are computed on the gradients' device and copied to
    the host together: one wait for a GPU, not one per parameter."""
    squares = {}  # layer -> the squared norms of its parameters' gradients (0-d arrays on their device)
    for name, p in named_parameters:
        if p.grad is None:
            continue
        xp = backend.get_array_module(p.grad)
        norm = xp.linalg.norm(p.grad.ravel()).astype(xp.float64)
        squares.setdefault(layer_of(name), []).append(norm * norm)
    if not squares:
        return {}
    per_layer = [xp.stack(layer).sum() for layer in squares.values()]  # each layer's sum, in model order
    totals = backend.to_numpy(xp.stack(per_layer))  # the one device-to-host copy
    return {layer: math.sqrt(float(total)) for layer, total in zip(squares, totals)}
