"""Gradient clipping by global L2 norm, as ``torch.nn.utils.clip_grad_norm_``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tinygrad_llm import backend, runtime

if TYPE_CHECKING:
    from collections.abc import Iterable

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
    if hasattr(parameters, "data") and hasattr(parameters, "grad"):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    max_norm = float(max_norm)
    if not max_norm > 0 or not math.isfinite(max_norm):
        raise ValueError(f"clip_grad_norm_: max_norm must be a finite number > 0, got {max_norm}")
    if not grads:
        return 0.0
    # The norm of the gradients' squared norms g.g (each a dot product in its dtype, as PyTorch's norm), all on
    # the gradients' device: one device-to-host copy in all, not one per parameter (each stalls a GPU). The
    # dot is a BLAS call, so through the thread policy: on a busy machine a parallel one waits a scheduler slice.
    xp = backend.get_array_module(grads[0])
    squares = xp.stack([runtime.matmul(g.ravel(), g.ravel()).astype(xp.float64) for g in grads])  # (n_params,)
    total_norm = float(xp.sqrt(squares.sum()))  # the one sync
    if not math.isfinite(total_norm):
        if error_if_nonfinite:
            raise RuntimeError(
                f"clip_grad_norm_: the total norm of the gradients is {total_norm}; some gradient has an inf or NaN"
            )
        return total_norm
    clip_coef = max_norm / (total_norm + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g *= clip_coef
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
    vanish through the depth of a network."""
    squares = {}
    for name, p in named_parameters:
        if p.grad is None:
            continue
        norm = float(backend.get_array_module(p.grad).linalg.norm(p.grad.ravel()))
        layer = layer_of(name)
        squares[layer] = squares.get(layer, 0.0) + norm * norm
    return {layer: math.sqrt(s) for layer, s in squares.items()}
