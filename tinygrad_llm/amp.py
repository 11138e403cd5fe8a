"""Mixed precision for training loops: ``--precision fp32|tf32|fp16|bf16``, and dynamic loss scaling.

    precision = MixedPrecision("fp16", device="cuda")
    with precision.autocast():                       # matrix products in float16, the rest in float32
        loss = calc_loss_batch(inputs, targets, model)
    precision.backward(loss)                         # (loss * scale).backward()
    stepped = precision.step(optimizer, grad_clip=1.0)  # unscale, skip on inf/NaN, clip, step, adapt the scale

- fp32: everything in float32 (the default; on a GPU, CuPy's own setting: full float32 unless CUPY_TF32=1).
- tf32: float32 everywhere, but a GPU's float32 matrix products use TF32 tensor cores (10-bit mantissa
  inputs, float32 sums): ``backend.set_float32_matmul_precision("high")``. Nothing changes on the CPU.
- fp16 / bf16: the weights stay float32 (the "master" copy the optimizer updates) and every matrix product
  computes in float16 / bfloat16 (``backend.autocast``). bfloat16 has float32's range, so it needs no loss
  scaling; float16's smallest normal number is 6e-5, so small gradients would flush to zero: the loss is
  multiplied by a large scale before backward, the gradients divided by it before the update.

``GradScaler`` follows ``torch.amp.GradScaler``: scale 2^16 to start; a step whose gradients hold an inf or
NaN is skipped and the scale halved; after 2,000 steps in a row without one, the scale doubles.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend, runtime
from tinygrad_llm.optim import clip_grad_norm_on_device_
from tinygrad_llm.tensor import grad

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.optim import Optimizer
    from tinygrad_llm.tensor import Tensor

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


class GradScaler:
    """Dynamic loss scaling, as ``torch.amp.GradScaler`` (same defaults, same order of calls)::

    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)         # optional: before clipping, so the clip sees true gradients
    scaler.step(optimizer)             # skipped when a gradient is inf or NaN
    scaler.update()                    # back off on inf/NaN, grow after growth_interval clean steps
    """

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ):
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"GradScaler: init_scale must be a finite number > 0, got {init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval >= 1):
            raise ValueError(f"GradScaler: growth_interval must be a positive integer, got {growth_interval!r}")
        self.enabled = enabled
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._growth_tracker = 0  # clean steps in a row since the scale last changed
        # this step's verdict once unscale_ has looked (None: not yet): a 0-d array on the gradients' device
        # until someone reads it (found_inf, or read_found_inf with the loss), then a bool
        self._found_inf: bool | Array | None = None

    def get_scale(self) -> float:
        return self._scale if self.enabled else 1.0

    def scale(self, loss: Tensor) -> Tensor:
        """``loss * scale``: its gradients come out scaled, out of float16's underflow range."""
        return loss * self._scale if self.enabled else loss

    def unscale_(self, optimizer: Optimizer) -> None:
        """Divide every gradient by the scale, in place, and note on the gradients' device whether any is inf
        or NaN (no wait for a GPU: the verdict is copied to the host when ``found_inf`` is first read)."""
        if not self.enabled or self._found_inf is not None:
            return  # once per step, as torch (a second call would divide twice)
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self._found_inf = False
        if not grads:
            return
        xp = backend.get_array_module(grads[0])
        inv_scale = 1.0 / self._scale  # in double, then applied in each gradient's dtype (torch: float32)
        finite = []
        for g in grads:
            g *= g.dtype.type(inv_scale)
            finite.append(xp.isfinite(g).all())
        self._found_inf = xp.logical_not(xp.stack(finite).all())  # 0-d, on the device

    def step(self, optimizer: Optimizer) -> bool:
        """``optimizer.step()`` unless a gradient is inf or NaN; True when it stepped."""
        if not self.enabled:
            optimizer.step()
            return True
        self.unscale_(optimizer)
        if self.found_inf:
            return False
        optimizer.step()
        return True

    def update(self) -> None:
        """Adapt the scale to this step's verdict: back off after inf/NaN, grow after a run of clean steps."""
        if not self.enabled:
            return
        if self._found_inf is None:
            raise RuntimeError("GradScaler.update: call step() (or unscale_()) first, once per optimizer step")
        if self.found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                grown = self._scale * self.growth_factor
                if math.isfinite(grown):  # torch keeps the scale when growing would overflow
                    self._scale = grown
                self._growth_tracker = 0
        self._found_inf = None

    @property
    def found_inf(self) -> bool | None:
        """Whether this step's gradients held an inf or NaN (None before unscale_/step); the first read copies
        the verdict from the device (one copy per step)."""
        if self._found_inf is not None and not isinstance(self._found_inf, bool):
            self._found_inf = bool(self._found_inf)  # the one device-to-host copy
        return self._found_inf

    def unread_found_inf(self) -> Array | None:
        """This step's verdict while it is still on the device (a 0-d bool array), else None: a loop that
        copies it to the host with other values at once hands it back with ``read_found_inf``."""
        return None if self._found_inf is None or isinstance(self._found_inf, bool) else self._found_inf

    def read_found_inf(self, found_inf: bool) -> None:
        """The value of ``unread_found_inf()``, as the caller copied it to the host."""
        self._found_inf = bool(found_inf)

    def discard_step(self) -> None:
        """Forget this step's unscale_ (a step abandoned before its update: its gradients are zeroed)."""
        self._found_inf = None

    def state_dict(self) -> dict:
        """``{"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}``, as torch."""
        if not self.enabled:
            return {}
        return {
            "scale": self._scale,
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state: dict) -> None:
        if not self.enabled or not state:
            return
        self._scale = float(state["scale"])
        self.growth_factor, self.backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self.growth_interval, self._growth_tracker = int(state["growth_interval"]), int(state["_growth_tracker"])
        self._found_inf = None


class MixedPrecision:
    """What ``--precision`` sets up for a training loop on ``device``: the matrix products' dtype, TF32, and
    (fp16 only) a GradScaler. ``fp32`` makes every method the plain float32 step."""

    def __init__(self, precision: str = "fp32", device: str = "cpu"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.precision, self.device = precision, device
        self.compute_dtype = backend.low_precision_dtype(precision) if precision in backend.LOW_PRECISION else None
        if self.compute_dtype is not None and device == "cuda":
            _check_cupy_supports(self.compute_dtype)
        if device == "cuda" and precision == "tf32":  # process-wide; fp32 keeps CuPy's default (CUPY_TF32)
            backend.set_float32_matmul_precision("high")
        self.scaler = GradScaler(enabled=precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """A context in which the forward pass runs at this precision (a no-op for fp32/tf32)."""
        return backend.autocast(self.compute_dtype) if self.compute_dtype is not None else contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # an fp16 overflow is expected now and then: the
            self.scaler.scale(loss).backward()  # scaler skips that step (NumPy would also warn)

    def grad(self, loss: Tensor, inputs: Tensor | Sequence[Tensor]) -> tuple[Tensor | None, ...]:
        """``tinygrad_llm.grad`` of the loss as ``backward`` scales it: the inputs' gradients, .grad untouched."""
        with np.errstate(over="ignore", invalid="ignore"):
            return grad(self.scaler.scale(loss), inputs)

    def step(
        self, optimizer: Optimizer, parameters: Iterable[Tensor] | None = None, grad_clip: float | None = None
    ) -> bool:
        """Unscale (fp16), clip ``parameters`` (default: the optimizer's) to ``grad_clip``, step unless a
        gradient is inf or NaN (fp16), adapt the scale. Returns True when the parameters moved.
        A GPU is waited for once at most (fp16's verdict); ``unscale_and_clip`` + ``finish_step`` are the same
        in two halves, for a loop that reads the verdict together with its loss."""
        self.unscale_and_clip(optimizer, parameters, grad_clip)
        return self.finish_step(optimizer)

    def unscale_and_clip(
        self, optimizer: Optimizer, parameters: Iterable[Tensor] | None = None, grad_clip: float | None = None
    ) -> None:
        """The first half of ``step``, with no wait for a GPU: unscale (fp16), then clip to ``grad_clip`` on the
        gradients' device (after an inf/NaN gradient the clip leaves them as they are, and the step is skipped)."""
        self.scaler.unscale_(optimizer)
        if grad_clip:
            if parameters is None:
                parameters = [p for group in optimizer.param_groups for p in group["params"]]
            clip_grad_norm_on_device_(parameters, grad_clip)

    def finish_step(self, optimizer: Optimizer) -> bool:
        """The second half of ``step``: ``optimizer.step()`` unless a gradient was inf or NaN, adapt the scale."""
        stepped = self.scaler.step(optimizer)
        self.scaler.update()
        return stepped

    def state_dict(self) -> dict:
        return {"precision": self.precision, "grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state.get("grad_scaler") or {})


def _check_cupy_supports(dtype) -> None:
    """A clear error where this CuPy cannot multiply matrices of ``dtype`` (bfloat16 needs CuPy 14)."""
    cupy = backend.xp_for("cuda")
    try:  # the models' products, through the function they call: batched as attention's, folded as a linear's
        a = cupy.ones((2, 2, 2), dtype=dtype)
        runtime.matmul(a, a).astype(cupy.float32)
        runtime.matmul(a, a[0]).astype(cupy.float32)
    except (TypeError, ValueError, NotImplementedError, RuntimeError) as exc:  # RuntimeError: cuBLAS's errors
        raise RuntimeError(
            f"precision {dtype.name}: CuPy {cupy.__version__} cannot compute matrix products in "
            f"{dtype.name} ({exc}); use fp16, or CuPy 14 or newer for bf16"
        ) from None
