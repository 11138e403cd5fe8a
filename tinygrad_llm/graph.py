"""Draw the computation graph that ``backward`` walks, as Graphviz DOT text (DeZero's ``get_dot_graph``,
micrograd's ``draw_dot``), grouped by the module that recorded each operation.

    loss = F.cross_entropy(model(ids), targets)
    loss.backward(retain_graph=True)             # keep the graph so it can be drawn after backward
    print(tl.graph(loss, depth=2))               # DOT text: operations as boxes, tensors as ellipses
    tl.plot_graph(loss, "graph.svg", depth=2)    # rendered by Graphviz's ``dot`` when it is installed

Every recorded operation is a box, every tensor an ellipse with its shape and dtype (and, with
``grads=True``, the norm of its ``.grad`` where one is kept: leaves after backward, intermediates with
``retain_grad()``). An arrow goes from each input tensor to the operation and from the operation to its
output. Operations recorded inside ``Module.forward`` are drawn inside a frame named after the module
(``trf_blocks.0.att``), nested as the modules are. ``depth=d`` keeps a whole GPT readable: a module
``d`` levels below the outermost one (which is level 0) is drawn as one box with its number of
operations and the norm of its parameters' gradients, and what happens inside it is left out.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinygrad_llm import backend
from tinygrad_llm.files import atomic_write
from tinygrad_llm.tensor import Tensor

if TYPE_CHECKING:
    from tinygrad_llm.nn.module import Module

INSTALL_GRAPHVIZ = (
    "install Graphviz: 'sudo apt install graphviz' (Debian/Ubuntu), 'brew install graphviz' "
    "(macOS), 'conda install -c conda-forge graphviz', or https://graphviz.org/download/"
)


def graph(tensor: Tensor, grads: bool = True, depth: int | None = None) -> str:
    """The graph that produced ``tensor`` as Graphviz DOT text (see the module's docstring)."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: expected a Tensor, got {type(tensor).__name__}")
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"graph: depth must be None or an integer >= 0, got {depth!r}")
    ops, tensors, consumers = _walk(tensor)
    names = _ModuleNames()
    dot = _Dot()

    # Where each operation is drawn: as itself, or inside the box of the module at level `depth`.
    drawn = {}  # id(op) -> node id
    boxes = {}  # module path (tuple of modules) -> {"id", "ops", "params"}
    for op in ops:
        path = op.module_path
        if depth is not None and len(path) > depth:
            key = path[: depth + 1]
            box = boxes.get(key)
            if box is None:
                box = boxes[key] = {"id": dot.new_id("m"), "ops": 0, "params": {}}
            box["ops"] += 1
            drawn[id(op)] = box["id"]
        else:
            drawn[id(op)] = dot.new_id("f")
            dot.node(drawn[id(op)], op.name, path, shape="box", style="filled", fillcolor="lightgrey")

    # Tensors: shown unless they live wholly inside one box (made there and used only there, or a
    # parameter of a module inside it, or a constant only it uses).
    for t in tensors:
        producer = drawn[id(t._creator)] if t._creator is not None else None
        users = {drawn[id(op)] for op in consumers.get(id(t), ())}
        owner_path, param_name = _owner(t, consumers.get(id(t), ()), names)
        hidden_in = None
        if producer is not None and producer.startswith("m") and users <= {producer} and t is not tensor:
            hidden_in = producer
        elif producer is None and len(users) == 1 and next(iter(users)).startswith("m"):
            if param_name is not None or (not t.requires_grad and t.size == 1):
                hidden_in = next(iter(users))
        if hidden_in is not None:
            if param_name is not None:
                box = next(b for b in boxes.values() if b["id"] == hidden_in)
                box["params"][id(t)] = t
            continue
        node = dot.new_id("t")
        label = _tensor_label(t, param_name, grads)
        fill = "lightblue" if param_name is not None else ("orange" if t is tensor else "white")
        path = owner_path if param_name is not None else (t._creator.module_path if t._creator else ())
        if depth is not None:
            path = path[:depth]
        dot.node(node, label, path, shape="ellipse", style="filled", fillcolor=fill)
        if producer is not None:
            dot.edge(producer, node)
        for user in sorted(users):
            dot.edge(node, user)

    for key, box in boxes.items():
        label = f"{names.dotted(key)} ({type(key[-1]).__name__})\\n{box['ops']} operations"
        if box["params"]:
            label += f", {len(box['params'])} parameters"
            if grads:
                norm = _norm([p.grad for p in box["params"].values() if p.grad is not None])
                if norm is not None:
                    label += f"\\ngrad norm {norm:.3g}"
        dot.node(box["id"], label, key[:-1], shape="box3d", style="filled", fillcolor="khaki")
    return dot.text(names)


def plot_graph(tensor: Tensor, path: str | Path, grads: bool = True, depth: int | None = None) -> Path | None:
    """Write the graph of ``tensor`` to ``path``: ``.dot`` as DOT text, ``.svg``/``.png``/``.pdf`` rendered by
    Graphviz's ``dot``. Without ``dot`` it prints how to install Graphviz, writes the DOT text beside
    ``path`` (same name, ``.dot``; an existing file is left alone) and returns that path, or None."""
    path = Path(path)
    text = graph(tensor, grads=grads, depth=depth)
    fmt = path.suffix.lstrip(".").lower()
    if fmt in ("dot", "gv"):
        with atomic_write(path, "w") as f:
            f.write(text)
        return path
    if fmt not in ("svg", "png", "pdf"):
        raise ValueError(f"plot_graph: {path}: expected a name ending in .svg, .png, .pdf or .dot")
    dot = shutil.which("dot")
    if dot is None:
        fallback = path.with_suffix(".dot")
        if fallback.exists():
            print(
                f"plot_graph: Graphviz's 'dot' program is not installed, so {path} was not drawn; {INSTALL_GRAPHVIZ}",
                file=sys.stderr,
            )
            return None
        with atomic_write(fallback, "w") as f:
            f.write(text)
        print(
            f"plot_graph: Graphviz's 'dot' program is not installed, so {path} was not drawn; {INSTALL_GRAPHVIZ}. "
            f"The DOT text is in {fallback}: 'dot -T{fmt} {fallback} -o {path}' draws it",
            file=sys.stderr,
        )
        return fallback
    result = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"plot_graph: dot failed on the graph of {path}: {result.stderr.decode().strip()}")
    with atomic_write(path) as f:
        f.write(result.stdout)
    return path


# ---- walking the graph -----------------------------------------------------------------------------


def _walk(root: Tensor):
    """Every recorded operation and every tensor reaching root (inputs that need no gradient included),
    and for each tensor the operations that use it; root first, then depth-first."""
    ops, tensors, consumers = [], [root], {}
    seen_tensors, seen_ops = {id(root)}, set()
    stack = [root]
    while stack:
        t = stack.pop()
        op = t._creator
        if op is None or id(op) in seen_ops:
            continue
        if op.inputs is None:
            raise RuntimeError(
                f"graph: the graph behind {op.name} was released by backward(); call "
                f"backward(retain_graph=True) to draw it after backward, or draw it before"
            )
        seen_ops.add(id(op))
        ops.append(op)
        for x in op.inputs:
            consumers.setdefault(id(x), []).append(op)
            if id(x) not in seen_tensors:
                seen_tensors.add(id(x))
                tensors.append(x)
                stack.append(x)
    return ops, tensors, consumers


def _owner(t: Tensor, users, names: "_ModuleNames"):
    """(module path, dotted name) when t is a parameter of a module around the operations that used it
    (the innermost such module), or of any module inside the outermost one (a model may pass a
    submodule's weight to an operation itself, as GPTModel does with tok_emb.weight); else (None, None)."""
    if t._creator is not None:
        return None, None
    for op in users:
        for depth in range(len(op.module_path), 0, -1):
            module = op.module_path[depth - 1]
            for name, p in module._parameters.items():
                if p is t:
                    path = op.module_path[:depth]
                    prefix = names.dotted(path)
                    return path, f"{prefix}.{name}" if prefix else name
    for op in users:
        if op.module_path:
            found = names.parameter(op.module_path[0], t)
            if found is not None:
                return found
    return None, None


def _norm(arrays) -> float | None:
    if not arrays:
        return None
    return math.sqrt(sum(float(backend.to_numpy((a.astype("float64") ** 2).sum())) for a in arrays))


def _tensor_label(t: Tensor, name: str | None, grads: bool) -> str:
    lines = [name] if name else []
    if not t.requires_grad and t.size == 1 and t._creator is None:
        lines.append(f"{float(t.item()):.4g}")  # a constant such as the 2 of x * 2
    lines.append(f"{tuple(t.shape)} {t.dtype}")
    if grads and t.grad is not None:
        lines.append(f"grad norm {_norm([t.grad]):.3g}")
    return "\\n".join(lines)


class _ModuleNames:
    """Dotted names of module paths: each module named by the attribute its caller holds it under."""

    def __init__(self):
        self._cache = {}
        self._parameters = {}  # id(root module) -> {id(parameter): (module path, dotted name)}

    def parameter(self, root: Module, t: Tensor) -> tuple[tuple, str] | None:
        """(module path, dotted name) of parameter t anywhere inside root, or None."""
        if id(root) not in self._parameters:
            found, stack = {}, [((root,), "")]
            while stack:
                path, prefix = stack.pop(0)
                for name, p in path[-1]._parameters.items():
                    found.setdefault(id(p), (path, prefix + name))
                for name, child in path[-1]._modules.items():
                    stack.append((path + (child,), f"{prefix}{name}."))
            self._parameters[id(root)] = found
        return self._parameters[id(root)].get(id(t))

    def dotted(self, path: tuple) -> str:
        key = tuple(id(m) for m in path)
        if key not in self._cache:
            parts = []
            for parent, child in zip(path, path[1:]):
                found = next((n for n, m in parent._modules.items() if m is child), None)
                parts.append(found if found is not None else type(child).__name__)
            self._cache[key] = ".".join(parts)
        return self._cache[key]


class _Dot:
    """DOT statements, nested in one ``subgraph cluster_`` per module path."""

    def __init__(self):
        self._count = 0
        self._nodes = {}  # module path -> [statement]
        self._edges = []

    def new_id(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def node(self, node_id: str, label: str, path: tuple, **attrs: Any) -> None:
        attrs = "".join(f", {k}={v}" for k, v in attrs.items())
        self._nodes.setdefault(tuple(path), []).append(f'{node_id} [label="{_escape(label)}"{attrs}];')

    def edge(self, a: str, b: str) -> None:
        self._edges.append(f"{a} -> {b};")

    def text(self, names: _ModuleNames) -> str:
        lines = ["digraph G {", '  node [fontname="Helvetica", fontsize=10];', "  rankdir=TB;"]
        children = {}  # path -> the paths one module longer that hold something
        for path in list(self._nodes):
            for n in range(len(path), 0, -1):
                children.setdefault(path[: n - 1], set()).add(path[:n])

        def emit(path: tuple, indent: int) -> None:
            for statement in self._nodes.get(path, ()):
                lines.append(" " * indent + statement)
            for child in sorted(children.get(path, ()), key=lambda p: names.dotted(p)):
                kind = type(child[-1]).__name__
                label = f"{names.dotted(child)} ({kind})" if len(child) > 1 else kind
                lines.append(" " * indent + f"subgraph cluster_{len(lines)} {{")
                lines.append(" " * indent + f'  label="{_escape(label)}"; style=rounded; color=grey60;')
                emit(child, indent + 2)
                lines.append(" " * indent + "}")

        emit((), 2)
        lines += ["  " + e for e in self._edges] + ["}"]
        return "\n".join(lines) + "\n"


def _escape(label: str) -> str:
    return label.replace('"', '\\"')
