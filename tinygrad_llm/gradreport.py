"""Gradient reports: a whole model's gradients against finite differences, one parameter per line (as
llm.c's test prints one tensor per line), and the property check of one operation.

    rows = check_model_gradients(lambda: F.cross_entropy(model(ids), ids), model.named_parameters())
    print(format_report(rows))          # name, shape, analytic norm, numeric norm, relative error, OK / NOT OK

``tinygrad-llm gradcheck`` runs the first on a small float64 GPT and one batch; ``--op NAME`` runs
``check_op(NAME)``, which draws random shapes and values for one operation and holds its backward to
``tl.gradcheck``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.gradcheck import gradcheck
from tinygrad_llm.tensor import Tensor, no_grad


@dataclass
class ParameterCheck:
    """One parameter's line of the report."""

    name: str
    shape: tuple
    analytic_norm: float  # ||g|| from backward
    numeric_norm: float  # the derivative along g / ||g|| by central differences: ||g|| when g is right
    rel_error: float  # max over directions |analytic - numeric| / max(||g||, atol)
    ok: bool


def check_model_gradients(
    loss_fn: Callable[[], Tensor],
    named_parameters: Iterable[tuple[str, Tensor]],
    n_directions: int = 3,
    eps: float = 1e-6,
    atol: float = 1e-8,
    rtol: float = 1e-5,
    seed: int = 0,
) -> list[ParameterCheck]:
    """Check backward's gradient of every parameter against float64 central differences of ``loss_fn()``.

    ``loss_fn`` computes a one-element loss from the parameters (a fixed batch, no dropout); the parameters
    must be float64. Each parameter ``p`` with gradient ``g`` is moved along unit directions ``v`` — ``g``'s
    own direction, then ``n_directions`` random ones — and ``g . v`` is compared with
    ``(L(p + eps v) - L(p - eps v)) / 2 eps``. A parameter is OK when every difference is within
    ``atol + rtol * ||g||``. Along ``g / ||g||`` the numeric derivative is the numeric gradient norm.
    """
    named = list(named_parameters)
    for name, p in named:
        if p.dtype != np.float64:
            raise TypeError(
                f"check_model_gradients: parameter {name} has dtype {p.dtype}; finite differences "
                f"need float64 (model.double())"
            )
    for _, p in named:
        p.grad = None
    loss_fn().backward()
    rng = np.random.default_rng(seed)

    def loss() -> float:
        with no_grad():
            return float(loss_fn().item())

    rows = []
    for name, p in named:
        xp = backend.get_array_module(p.data)
        g = backend.to_numpy(p.grad) if p.grad is not None else np.zeros(p.shape)
        g_norm = float(np.linalg.norm(g))
        directions = [g / g_norm] if g_norm > 0 else []
        while len(directions) < n_directions + 1:
            v = rng.standard_normal(p.shape)
            directions.append(v / np.linalg.norm(v))
        original = p.data.copy()
        worst, numeric_norm = 0.0, math.nan
        for k, v in enumerate(directions):
            step = xp.asarray(eps * v, dtype=p.dtype)
            p.data[...] = original + step
            plus = loss()
            p.data[...] = original - step
            minus = loss()
            p.data[...] = original
            numeric = (plus - minus) / (2 * eps)
            if k == 0:
                numeric_norm = numeric if g_norm > 0 else 0.0
            difference = abs(float((g * v).sum()) - numeric)
            worst = max(worst, difference if math.isfinite(difference) else math.inf)
        rel_error = worst / max(g_norm, atol)
        ok = math.isfinite(g_norm) and worst <= atol + rtol * g_norm
        rows.append(ParameterCheck(name, tuple(p.shape), g_norm, numeric_norm, rel_error, ok))
    return rows


def format_report(rows: list[ParameterCheck]) -> tuple[str, bool]:
    """The table and the overall verdict line; returns (text, all OK)."""
    width = max([len(r.name) for r in rows] + [9])
    lines = [f"{'parameter':{width}s}  {'shape':14s} {'analytic norm':>14s} {'numeric norm':>14s} {'rel error':>10s}"]
    for r in rows:
        lines.append(
            f"{r.name:{width}s}  {str(r.shape):14s} {r.analytic_norm:14.6e} {r.numeric_norm:14.6e} "
            f"{r.rel_error:10.2e}  {'OK' if r.ok else 'NOT OK'}"
        )
    bad = [r for r in rows if not r.ok]
    worst = max(rows, key=lambda r: r.rel_error)
    if bad:
        lines.append(
            f"NOT OK: {len(bad)} of {len(rows)} parameters disagree with finite differences "
            f"(worst: {worst.name}, relative error {worst.rel_error:.2e}); the backward of an operation "
            f"they pass through is wrong: 'tinygrad-llm gradcheck --op NAME' checks one"
        )
    else:
        lines.append(
            f"OK: all {len(rows)} parameters agree with finite differences (largest relative error "
            f"{worst.rel_error:.2e}, {worst.name})"
        )
    return "\n".join(lines), not bad


# ---- one operation ---------------------------------------------------------------------------------


def _shape(rng, min_dims=1, max_dims=3):
    return tuple(int(n) for n in rng.integers(1, 5, rng.integers(min_dims, max_dims + 1)))


def _broadcast_pair(rng):
    a = _shape(rng, 2, 3)
    b = tuple(1 if rng.random() < 0.4 else n for n in a[-rng.integers(1, len(a) + 1) :])
    return (a, b) if rng.random() < 0.5 else (b, a)


def _uniform(rng, shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape)


def _away_from_zero(rng, shape, low=0.3, high=2.0):
    return rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)


def _distinct(rng, shape):
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.02, 0.02, n)).reshape(shape)


def _case_binary(op, b_values=_uniform):
    def case(rng: np.random.Generator) -> tuple[Callable[..., Tensor], list[Any]]:
        sa, sb = _broadcast_pair(rng)
        return op, [_uniform(rng, sa), b_values(rng, sb)]

    return case


def _case_unary(op, values=_uniform):
    return lambda rng: (op, [values(rng, _shape(rng))])


def _case_axis(op, values=_uniform):
    def case(rng: np.random.Generator) -> tuple[Callable[..., Tensor], list[Any]]:
        shape = _shape(rng)
        axis = int(rng.integers(-len(shape), len(shape)))
        return (lambda x: op(x, axis=axis)), [values(rng, shape)]

    return case


def _case_matmul(rng):
    n, k, m = (int(v) for v in rng.integers(1, 5, 3))
    batch = _shape(rng, 0, 2)
    return F.matmul, [_uniform(rng, batch + (n, k)), _uniform(rng, (k, m))]


def _case_causal_softmax(rng):
    t = int(rng.integers(1, 5))
    s = t + int(rng.integers(0, 3))
    return (lambda x: F.causal_softmax(x, scale=0.5)), [_uniform(rng, _shape(rng, 0, 2) + (t, s))]


def _case_layer_norm(rng):
    shape = _shape(rng)
    return F.layer_norm, [_uniform(rng, shape), _uniform(rng, shape[-1:]), _uniform(rng, shape[-1:])]


def _case_linear(rng):
    shape, out = _shape(rng), int(rng.integers(1, 5))
    return F.linear, [_uniform(rng, shape), _uniform(rng, (out, shape[-1])), _uniform(rng, (out,))]


def _case_embedding(rng):
    ids = rng.integers(0, 5, _shape(rng, 1, 2))
    return (lambda w: F.embedding(ids, w)), [_uniform(rng, (5, int(rng.integers(1, 4))))]


def _case_cross_entropy(rng):
    shape = _shape(rng)
    targets = rng.integers(0, shape[-1], shape[:-1])
    return (lambda logits: F.cross_entropy(logits, targets)), [_uniform(rng, shape)]


def _case_where(rng):
    sa, sb = _broadcast_pair(rng)
    condition = rng.random(np.broadcast_shapes(sa, sb)) < 0.5
    return (lambda a, b: F.where(condition, a, b)), [_uniform(rng, sa), _uniform(rng, sb)]


def _case_masked_fill(rng):
    shape = _shape(rng)
    mask = rng.random(shape[-1:]) < 0.5
    return (lambda x: F.masked_fill(x, mask, -3.0)), [_uniform(rng, shape)]


def _case_getitem(rng):
    shape = _shape(rng)
    key = tuple(slice(int(rng.integers(0, n)), None) for n in shape)
    return (lambda x: x[key]), [_uniform(rng, shape)]


def _case_reshape(rng):
    shape = _shape(rng)
    return (lambda x: F.reshape(x, -1)), [_uniform(rng, shape)]


def _case_transpose(rng):
    shape = _shape(rng, 2, 3)
    axes = tuple(int(a) for a in rng.permutation(len(shape)))
    return (lambda x: F.transpose(x, *axes)), [_uniform(rng, shape)]


def _case_concatenate(rng):
    shape = _shape(rng, 2, 3)
    other = (int(rng.integers(1, 4)),) + shape[1:]
    return (lambda a, b: F.concatenate([a, b], axis=0)), [_uniform(rng, shape), _uniform(rng, other)]


def _case_stack(rng):
    shape = _shape(rng)
    return (lambda a, b: F.stack([a, b], axis=-1)), [_uniform(rng, shape), _uniform(rng, shape)]


def _case_split(rng):
    shape = (int(rng.integers(2, 6)),) + _shape(rng, 0, 2)
    return (lambda x: F.split(x, [1], axis=0)[1] * 2.0 + F.split(x, [1], axis=0)[0].sum()), [_uniform(rng, shape)]


def _case_pow(rng):
    exponent = float(rng.choice([2.0, 3.0, 0.5, -1.0]))
    return (lambda x: F.pow(x, exponent)), [_uniform(rng, _shape(rng), 0.3, 2.0)]


def _case_cast(rng):
    # float64 -> float32 -> float64: the round trip is the identity up to float32 rounding, so the
    # differences below use a step and tolerances of float32's precision (see OP_TOLERANCES)
    return (lambda x: F.cast(F.cast(x, np.float32), np.float64)), [_uniform(rng, _shape(rng))]


OP_CASES = {
    "add": _case_binary(F.add),
    "sub": _case_binary(F.sub),
    "mul": _case_binary(F.mul),
    "div": _case_binary(F.div, _away_from_zero),
    "neg": _case_unary(F.neg),
    "pow": _case_pow,
    "exp": _case_unary(F.exp),
    "log": _case_unary(F.log, lambda rng, s: _uniform(rng, s, 0.3, 2.0)),
    "sqrt": _case_unary(F.sqrt, lambda rng, s: _uniform(rng, s, 0.3, 2.0)),
    "tanh": _case_unary(F.tanh),
    "relu": _case_unary(F.relu, _away_from_zero),
    "matmul": _case_matmul,
    "cast": _case_cast,
    "sum": _case_axis(F.sum),
    "mean": _case_axis(F.mean),
    "max": _case_axis(F.max, _distinct),
    "reshape": _case_reshape,
    "transpose": _case_transpose,
    "swapaxes": lambda rng: ((lambda x: F.swapaxes(x, 0, -1)), [_uniform(rng, _shape(rng, 2, 3))]),
    "getitem": _case_getitem,
    "concatenate": _case_concatenate,
    "stack": _case_stack,
    "split": _case_split,
    "where": _case_where,
    "masked_fill": _case_masked_fill,
    "softmax": _case_axis(F.softmax),
    "log_softmax": _case_axis(F.log_softmax),
    "causal_softmax": _case_causal_softmax,
    "gelu": _case_unary(F.gelu),
    "linear": _case_linear,
    "embedding": _case_embedding,
    "layer_norm": _case_layer_norm,
    "cross_entropy": _case_cross_entropy,
}
OP_TOLERANCES = {"cast": dict(eps=1e-2, atol=1e-4, rtol=1e-4)}  # float32 rounding / (2 eps) stays below atol


def check_op(name: str, n_cases: int = 20, seed: int = 0) -> list[tuple[str, str | None]]:
    """Run ``n_cases`` random cases of operation ``name`` through ``tl.gradcheck`` (float64 central
    differences). Returns one (description, None or the failure message) per case."""
    if name not in OP_CASES:
        raise ValueError(f"unknown operation {name!r}: expected one of {', '.join(sorted(OP_CASES))}")
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(n_cases):
        fn, arrays = OP_CASES[name](rng)
        described = ", ".join(str(a.shape) for a in arrays)
        try:
            out = fn(*[Tensor(a.astype(np.float32)) for a in arrays])
            if out.dtype != np.float32 and name != "cast":  # cast's case returns float64 on purpose
                raise AssertionError(f"float32 inputs gave a {out.dtype} output")
            gradcheck(fn, [Tensor(a, requires_grad=True) for a in arrays], **OP_TOLERANCES.get(name, {}))
            results.append((described, None))
        except AssertionError as exc:
            results.append((described, str(exc)))
    return results
