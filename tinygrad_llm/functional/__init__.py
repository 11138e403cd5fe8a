"""Every differentiable operation, as ``tinygrad_llm.functional`` (imported as ``F``).

Each operation is a ``Function`` class with ``forward`` and ``backward`` side by side, in one of:

    arithmetic   add sub mul div neg pow exp log sqrt tanh relu matmul cast
    reduction    sum mean max
    shape        reshape transpose swapaxes getitem concatenate stack split where masked_fill to
    activation   softmax causal_softmax masked_softmax log_softmax logsigmoid gelu dropout
    attention    causal_attention (scores, mask, softmax, dropout, @ values: one operation)
    layers       linear embedding layer_norm
    loss         cross_entropy
    optim_update adamw_update_ (in place on raw arrays; not differentiable)

A ``Function`` class is named after its operation (``Softmax``, ``MatMul``, ``CrossEntropy``); where a Module
of ``tinygrad_llm.nn`` already has that name, the class takes the suffix ``Function`` (``LinearFunction``,
``EmbeddingFunction``, ``LayerNormFunction``, ``GELUFunction``, ``DropoutFunction``), so that ``nn.Linear``
the layer and the operation it records are never confused. The lowercase function is what users call.

Importing this package also gives ``Tensor`` its operators and methods (the table at the bottom).
Conventions are NumPy's: ``axis``, ``keepdims``, ``split`` as ``numpy.split``.
"""

from typing import Any

from tinygrad_llm.functional._common import sum_to
from tinygrad_llm.functional.activation import (
    causal_softmax,
    dropout,
    gelu,
    log_softmax,
    logsigmoid,
    masked_softmax,
    softmax,
)
from tinygrad_llm.functional.arithmetic import (
    add,
    cast,
    div,
    exp,
    log,
    matmul,
    mul,
    neg,
    pow,
    relu,
    rpow,
    sqrt,
    sub,
    tanh,
)
from tinygrad_llm.functional.attention import causal_attention
from tinygrad_llm.functional.layers import embedding, layer_norm, linear
from tinygrad_llm.functional.loss import cross_entropy
from tinygrad_llm.functional.optim_update import adamw_update_
from tinygrad_llm.functional.reduction import max, mean, sum
from tinygrad_llm.functional.shape import (
    concatenate,
    getitem,
    masked_fill,
    reshape,
    split,
    stack,
    swapaxes,
    to,
    transpose,
    where,
)
from tinygrad_llm.tensor import Tensor

__all__ = [
    "adamw_update_",
    "add",
    "cast",
    "causal_attention",
    "causal_softmax",
    "concatenate",
    "cross_entropy",
    "div",
    "dropout",
    "embedding",
    "exp",
    "gelu",
    "getitem",
    "layer_norm",
    "linear",
    "log",
    "log_softmax",
    "logsigmoid",
    "masked_fill",
    "masked_softmax",
    "matmul",
    "max",
    "mean",
    "mul",
    "neg",
    "pow",
    "relu",
    "reshape",
    "softmax",
    "split",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "sum_to",
    "swapaxes",
    "tanh",
    "to",
    "transpose",
    "where",
]


def _compare(op):
    def compare(self, other: Any) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._from_op(op(self.data, other), None)  # comparisons are not differentiable

    return compare


def _install_tensor_methods() -> None:
    """Give Tensor its operators and methods, each a thin call into the functions above."""
    import operator

    methods = {
        "__add__": add,
        "__radd__": lambda x, y: add(y, x),
        "__sub__": sub,
        "__rsub__": lambda x, y: sub(y, x),
        "__mul__": mul,
        "__rmul__": lambda x, y: mul(y, x),
        "__truediv__": div,
        "__rtruediv__": lambda x, y: div(y, x),
        "__matmul__": matmul,
        "__rmatmul__": lambda x, y: matmul(y, x),
        "__pow__": pow,
        "__rpow__": rpow,
        "__neg__": neg,
        "__getitem__": getitem,
        "exp": exp,
        "log": log,
        "sqrt": sqrt,
        "tanh": tanh,
        "relu": relu,
        "sum": sum,
        "mean": mean,
        "max": max,
        "reshape": reshape,
        "transpose": transpose,
        "swapaxes": swapaxes,
        "T": property(lambda x: transpose(x)),
        "masked_fill": masked_fill,
        "to": to,
        "astype": cast,
        "softmax": softmax,
        "log_softmax": log_softmax,
    }
    for name, op in (
        ("__lt__", operator.lt),
        ("__le__", operator.le),
        ("__gt__", operator.gt),
        ("__ge__", operator.ge),
        ("__eq__", operator.eq),
        ("__ne__", operator.ne),
    ):
        methods[name] = _compare(op)
    for name, method in methods.items():
        setattr(Tensor, name, method)


_install_tensor_methods()
