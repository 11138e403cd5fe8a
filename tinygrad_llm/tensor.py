"""Tensor, the Function protocol, and reverse-mode differentiation.

A ``Tensor`` wraps one raw array (``numpy.ndarray`` or ``cupy.ndarray``). Every differentiable
operation is a ``Function`` subclass (they live in ``tinygrad_llm.functional``) with ``forward`` and
``backward`` side by side, both on raw arrays::

    class Exp(Function):
        def forward(self, x):
            self.y = self.xp.exp(x)
            return self.y

        def backward(self, gy):
            return gy * self.y  # d/dx e^x = e^x

Calling a Function on tensors runs ``forward`` and, when some input requires a gradient and grad mode
is on, records the Function as the output's creator. ``Tensor.backward`` walks those records in reverse
topological order (iteratively, so a chain of any length works), hands each Function the gradient of its
output, and accumulates what it returns into its inputs. ``grad(outputs, inputs)`` makes the same walk and
returns the inputs' gradients instead of adding them into ``.grad``.

The operators and methods of Tensor (``+``, ``@``, ``sum``, ``reshape``, indexing, ...) are installed by
``tinygrad_llm.functional``, which holds every operation, as DeZero's ``setup_variable`` does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from tinygrad_llm import backend


class _ThreadState(threading.local):
    """What a thread's operations see (as in PyTorch, grad mode is per thread; a new thread starts recording).

    grad_enabled: whether operations are recorded for backward (no_grad() turns it off).
    module_path: the modules whose forward is running, outermost first: Module.__call__ pushes itself, and
    every recorded Function keeps the tuple, so tinygrad_llm.graph can group the operations by module.
    """

    grad_enabled = True
    module_path: tuple = ()


_state = _ThreadState()


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block no operation is recorded (on this thread): outputs never require a gradient."""
    previous, _state.grad_enabled = _state.grad_enabled, False
    try:
        yield
    finally:
        _state.grad_enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Re-enable recording inside a ``no_grad`` block."""
    previous, _state.grad_enabled = _state.grad_enabled, True
    try:
        yield
    finally:
        _state.grad_enabled = previous


def is_grad_enabled() -> bool:
    return _state.grad_enabled


class Function:
    """One differentiable operation: ``forward(*arrays) -> array`` and ``backward(gy) -> grads``.

    ``forward`` receives the raw arrays of the inputs (and the Function's own parameters, set in
    ``__init__``), keeps on ``self`` only what ``backward`` needs, and returns one array.
    ``backward`` receives the gradient of the output (an array of the output's shape) and returns one
    gradient per input, each of that input's shape, or None where no gradient is needed
    (``self.needs_grad[i]`` says which inputs want one). ``self.xp`` is numpy or cupy.
    """

    xp = np
    inputs: tuple = ()
    needs_grad: tuple = ()
    versions: tuple = ()  # each input's _version when recorded
    module_path: tuple = ()  # the modules running when it was recorded (outermost first)

    def __call__(self, *inputs: "Tensor") -> "Tensor":
        if backend.cupy_loaded():  # CuPy in use: arrays may live on either device
            self.xp = backend.get_array_module(inputs[0].data)
            _check_same_device(self, inputs)
        # else every array is a NumPy array (a CuPy array in a Tensor imports CuPy) and xp stays numpy
        try:
            y = self.forward(*[x.data for x in inputs])
        except (ValueError, IndexError) as exc:  # NumPy's broadcast/axis/index errors, with the operation's name
            if str(exc).startswith(self.name):
                raise
            described = ", ".join(f"{tuple(x.shape)} {x.dtype}" for x in inputs)
            kind = ValueError if isinstance(exc, ValueError) else IndexError
            raise kind(f"{self.name}: inputs of shapes {described}: {exc}") from None
        if _state.grad_enabled:
            needs_grad = tuple([x.requires_grad for x in inputs])
            if True in needs_grad:  # record the graph only when some input wants a gradient
                self.inputs = inputs
                self.needs_grad = needs_grad
                self.versions = tuple([x._version for x in inputs])  # backward checks none changed since
                self.module_path = _state.module_path
                return Tensor._from_op(y, self)
        return Tensor._from_op(y, None)

    def forward(self, *xs: Any) -> backend.Array:
        raise NotImplementedError

    def backward(self, gy: backend.Array) -> backend.Array | None | tuple[backend.Array | None, ...]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _numeric_array(data) -> np.ndarray:
    """A number or nested lists of numbers as a NumPy array; strings, None, ragged lists and other objects
    are refused here, with what was given, instead of failing later inside an operation."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise ValueError(f"Tensor: expected a number or nested lists of numbers of one shape ({exc})") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        shown = repr(data) if len(repr(data)) <= 40 else repr(data)[:37] + "..."
        raise TypeError(
            f"Tensor: expected numbers (bool, integer or float), got {shown} "
            f"({type(data).__name__}{' of ' + str(array.dtype) if array.dtype.kind != 'O' else ''})"
        )
    return array


@contextlib.contextmanager
def module_scope(module: Any) -> Iterator[None]:
    """Within this block the operations recorded on this thread remember ``module``, inside the modules already
    running (``Function.module_path``): ``Module.__call__`` runs ``forward`` in one, so that
    ``tinygrad_llm.graph`` can group the operations by module."""
    outer = _state.module_path
    _state.module_path = outer + (module,)
    try:
        yield
    finally:
        _state.module_path = outer


def _check_same_device(fn: Function, inputs) -> None:
    devices = {backend.device_of(x.data) for x in inputs}
    if len(devices) > 1:
        described = ", ".join(f"{backend.device_of(x.data)} {tuple(x.shape)}" for x in inputs)
        raise RuntimeError(
            f"{fn.name}: inputs are on different devices ({described}); move them to one device with .to(device)"
        )


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    Args:
        data: a number, nested list, numpy or cupy array, or Tensor.
        requires_grad: record operations on this tensor so ``backward`` can give it a ``.grad``.
        dtype: numpy dtype; float data defaults to float32 unless an array already is float64/float16.
        device: "cpu" or "cuda"; default from ``TINYGRAD_LLM_DEVICE``, or the device of an array given.
    """

    __slots__ = ("_data", "_version", "grad", "requires_grad", "_creator", "_retains_grad", "_hooks", "__weakref__")
    __array_priority__ = 100  # numpy_array + tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, device: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        python_data = not hasattr(data, "dtype")  # a number or (nested) lists: checked and converted here
        if python_data:
            data = _numeric_array(data)
        elif getattr(data.dtype, "kind", "f") not in _NUMERIC_KINDS:
            raise TypeError(f"Tensor: expected numbers (bool, integer or float), got an array of dtype {data.dtype}")
        if device is None and backend.device_of(data) == "cuda":
            device = "cuda"
        device = backend.check_device(device)
        xp = backend.xp_for(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
        elif python_data and data.dtype.kind == "f":
            dtype = np.dtype(backend.DEFAULT_FLOAT)  # Python floats become float32
        else:
            dtype = backend.result_dtype(data)
        data = backend.to_device(data, device) if hasattr(data, "dtype") else data
        self._data = xp.asarray(data, dtype=dtype)
        self._version = 0
        self.grad = None
        self._creator = None
        self._retains_grad = False
        self._hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _from_op(cls, data, creator: Function | None) -> "Tensor":
        """The fast constructor used by Functions: no conversion, no checks."""
        t = object.__new__(cls)
        t._data = data
        t._version = 0
        t.grad = None
        t._creator = creator
        t.requires_grad = creator is not None
        t._retains_grad = False
        t._hooks = None
        return t

    # --- attributes -----------------------------------------------------------------------------
    @property
    def data(self) -> backend.Array:
        """The raw array (numpy or cupy)."""
        return self._data

    @data.setter
    def data(self, array: backend.Array) -> None:
        # The version counter of PyTorch's saved tensors: ``t.data -= x`` changes the array in place (and hands
        # the same array back), so the operations that recorded t hold a changed array: backward refuses them.
        # A new array (``t.data = other``) leaves the recorded one as it was; ``t.data[...] = v`` is not seen.
        if array is self._data:
            self._version += 1
        self._data = array

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._creator is None

    @property
    def creator(self) -> Function | None:
        """The Function that produced this tensor (None for a leaf)."""
        return self._creator

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(backend.to_numpy(self.data), separator=", ", prefix="Tensor(")
        extras = [f"dtype={self.dtype}"]
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._creator is not None:
            extras.append(f"grad_fn={self._creator.name}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"Tensor({body}, {', '.join(extras)})"

    __hash__ = object.__hash__  # == is elementwise, so hash by identity

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        return int(self.item())

    # --- conversion -----------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a numpy array (a copy from the GPU; the array itself on the CPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> Any:
        if self.data.size != 1:
            raise ValueError(f"item(): tensor of shape {self.shape} has {self.data.size} elements, expected 1")
        return self.data.item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor._from_op(self.data, None)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind not in "fc":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.dtype} "
                f"for a tensor of shape {self.shape}"
            )
        if not requires_grad and self._creator is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach() instead")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this intermediate tensor after backward (leaves always keep theirs)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require a gradient")
        self._retains_grad = True

    def register_hook(self, fn: Callable[[backend.Array], Any]) -> None:
        """Call ``fn(grad)`` when this tensor's gradient is complete; a non-None return replaces it."""
        if not self.requires_grad:
            raise RuntimeError("register_hook() on a tensor that does not require a gradient")
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(fn)

    def __setitem__(self, index: Any, value: Any) -> None:
        """``t[index] = value`` in place, as PyTorch users write it inside ``no_grad()`` (to set weights, say).
        Not differentiable: a tensor that would record it (requires_grad, outside no_grad) refuses, as
        PyTorch's leaves do. The write counts as a change: backward through an operation that used ``t``
        before it refuses, instead of a gradient computed from the new values."""
        if self.requires_grad and _state.grad_enabled:
            raise RuntimeError(
                f"a tensor of shape {tuple(self.shape)} that requires grad is being used in an in-place "
                "operation (t[...] = v): write inside tinygrad_llm.no_grad(), or build a new tensor"
            )
        index = tuple(_raw(i) for i in index) if isinstance(index, tuple) else _raw(index)
        self._data[index] = _raw(value)
        self._version += 1

    def zero_grad(self) -> None:
        self.grad = None

    # --- differentiation ------------------------------------------------------------------------
    def backward(self, grad: Tensor | backend.Array | float | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``.grad`` of every leaf that requires a gradient.

        ``grad`` seeds the traversal (ones for a one-element tensor). The graph is released afterwards
        unless ``retain_graph``, so memory stays flat over thousands of steps.
        """
        _run_backward([self], [_seed(self, grad, "backward()")], retain_graph)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, returned; no ``.grad`` changes (as
    ``torch.autograd.grad``). The same walk as ``backward()``, hooks included.

    ``outputs`` and ``inputs``: a Tensor or a sequence of Tensors (inputs may be leaves or intermediate
    tensors). ``grad_outputs``: one gradient per output, as ``backward(grad)`` takes (None, or None for an
    output: ones, for a one-element output); with several outputs the result is the gradient of the sum of
    each output times its gradient. Returns a tuple of one Tensor per input, not requiring a gradient, or
    None for an input that no output depends on. The graph is released afterwards unless ``retain_graph``.
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor) or hasattr(grad_outputs, "shape"):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad(): {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    for x in inputs:
        if not x.requires_grad:
            raise RuntimeError(f"grad(): an input of shape {x.shape} does not require a gradient")
    seeds = [_seed(y, g, "grad()") for y, g in zip(outputs, grad_outputs)]
    found = {id(x): None for x in inputs}
    _run_backward(outputs, seeds, retain_graph, found)
    return tuple(None if found[id(x)] is None else Tensor._from_op(found[id(x)], None) for x in inputs)


def _seed(tensor: Tensor, grad, caller: str):
    """The gradient a walk starts from at ``tensor``: ``grad`` as an array of its shape, or ones."""
    if not tensor.requires_grad:
        raise RuntimeError(
            f"{caller}: this tensor does not require a gradient "
            "(no input had requires_grad=True, or it was computed under no_grad())"
        )
    xp = backend.get_array_module(tensor.data)
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"{caller} without a gradient needs a one-element tensor, got shape "
                f"{tensor.shape}: pass grad= of that shape, or reduce with .sum()/.mean()"
            )
        return xp.ones_like(tensor.data)
    grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=tensor.dtype)
    if grad.shape != tensor.shape:
        raise ValueError(f"{caller}: gradient of shape {grad.shape} for a tensor of shape {tensor.shape}")
    return grad


def _topological_order(*roots: Tensor) -> list:
    """Tensors reachable from the roots through creators, every tensor after all the tensors it feeds."""
    # Depth-first, iterative. A tensor is marked visited when it is expanded, not when it is pushed:
    # marking at push time could append a tensor shared by two paths before a tensor that feeds it.
    order, visited = [], set()
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)  # everything it depends on is already in order
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        creator = tensor._creator
        if creator is None:
            continue
        if creator.inputs is None:
            raise RuntimeError(
                f"backward() through {creator.name} a second time: its graph was released "
                "after the first backward; pass retain_graph=True to the first call"
            )
        for x in creator.inputs:
            if x.requires_grad and id(x) not in visited:
                stack.append((x, False))
    order.reverse()  # roots first
    return order


def _run_backward(roots: list, seeds: list, retain_graph: bool, found: dict | None = None) -> None:
    """The chain rule, tensor by tensor from the roots: each Function turns its output's gradient into its
    inputs' gradients, which add up over every use of an input before that input is reached. ``found``:
    None for backward() (leaves and retain_grad() tensors keep theirs in .grad); for grad(), {id: None} of
    the tensors wanted, which receive their gradients instead (.grad untouched)."""
    grads = _Gradients(roots, seeds)  # gradient flowing into each tensor, summed over its uses
    for tensor in _topological_order(*roots):  # roots first: every use of a tensor comes before the tensor
        g = grads.pop(tensor)
        if g is None:
            continue
        g = _run_hooks(tensor, g)
        if found is not None:
            if id(tensor) in found:
                found[id(tensor)] = grads.kept(g)  # grad(): returned, not stored
        elif tensor._creator is None or tensor._retains_grad:
            grads.store(tensor, g)  # a leaf (or retain_grad()): keep it in .grad
        creator = tensor._creator
        if creator is None:
            continue
        _check_versions(creator)
        input_grads = creator.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for x, gx, needed in zip(creator.inputs, input_grads, creator.needs_grad):
            if needed and gx is not None:
                grads.add(x, _checked(creator, x, gx))
        if not retain_graph:
            _release(creator)


class _Gradients:
    """The gradients of one backward pass, by tensor; sums over a tensor's uses are made in place where
    that is safe (the array was made here by a sum, not handed over by a Function that may keep it)."""

    def __init__(self, roots: list, seeds: list):
        self.pending = {}
        self.owned = set()  # ids of tensors whose pending gradient is a sum made here: safe to add into
        self.stored = {id(seed) for seed in seeds}  # arrays kept as a .grad (or the caller's): never alias them
        for root, seed in zip(roots, seeds):
            self.add(root, seed)

    def pop(self, tensor: Tensor) -> backend.Array | None:
        """The tensor's gradient, complete now that every use of it has been walked (None: it has none)."""
        return self.pending.pop(id(tensor), None)

    def add(self, x: Tensor, gx: backend.Array) -> None:
        key = id(x)
        previous = self.pending.get(key)
        if previous is None:
            self.pending[key] = gx
        elif key in self.owned:
            previous += gx  # in place; a 0-d result of NumPy is an immutable scalar, hence the store
            self.pending[key] = previous
        else:
            self.pending[key] = previous + gx
            self.owned.add(key)

    def store(self, tensor: Tensor, g: backend.Array) -> None:
        if tensor.grad is not None:
            tensor.grad += g  # accumulate across backward calls (gradient accumulation)
        else:
            tensor.grad = self.kept(g)

    def kept(self, g: backend.Array) -> backend.Array:
        """``g`` as an array the caller may keep: never memory shared with another kept gradient, the seed or
        an array a Function keeps."""
        if id(g) in self.stored or getattr(g, "base", None) is not None:
            g = g.copy()
        if isinstance(g, np.generic):  # NumPy returns scalars for 0-d results: .grad is an array
            g = np.asarray(g)
        self.stored.add(id(g))
        return g


def _run_hooks(tensor: Tensor, g):
    """Each hook registered on the tensor sees its complete gradient; one that returns an array replaces it."""
    for hook in tensor._hooks or ():
        replaced = hook(g)
        if replaced is not None:
            g = replaced.data if isinstance(replaced, Tensor) else replaced
            if g.shape != tensor.shape:
                raise RuntimeError(
                    f"register_hook: the hook returned a gradient of shape {g.shape} "
                    f"for a tensor of shape {tensor.shape}"
                )
    return g


def _raw(value: Any) -> Any:
    """A Tensor's array; anything else as it is (an index, a number)."""
    return value.data if isinstance(value, Tensor) else value


def _check_versions(creator: Function) -> None:
    """PyTorch's check, in its words: an input changed in place after the operation recorded it would get
    a gradient computed from the changed values, silently wrong."""
    for x, version in zip(creator.inputs, creator.versions):
        if x._version != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: [{x.dtype} tensor of shape {tuple(x.shape)}], an input of {creator.name}, is at "
                f"version {x._version}; expected version {version} instead. Hint: change it after backward "
                "(as optimizers do), or compute the forward again after the change"
            )


def _checked(creator: Function, x: Tensor, gx):
    """An input's gradient as backward returned it: its shape must be the input's; its dtype becomes it."""
    if gx.shape != x.data.shape:
        raise RuntimeError(
            f"{creator.name}.backward returned a gradient of shape {gx.shape} for an input of shape {x.data.shape}"
        )
    return gx if gx.dtype == x.data.dtype else gx.astype(x.data.dtype)


def _release(fn: Function) -> None:
    """Drop a Function's inputs and saved arrays so the graph behind it can be freed."""
    fn.__dict__.clear()
    fn.inputs = None
