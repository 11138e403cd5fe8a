"""The package imports from the repository root as well as from anywhere else.

Our compiled kernels live in the top-level ``kernels/`` folder. Were it a package, ``python`` started in the
repository root (``python -m pytest`` puts the root on ``sys.path``) would give it to any library that
imports Hugging Face's own ``kernels`` package, as transformers 5 does: ``from kernels import CUDAProperties``
then failed. Each check runs in a fresh interpreter started in the repository root.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Drops an editable install's import hook, so the interpreter sees only the checkout, as a plain clone does.
PLAIN_CHECKOUT = (
    "import sys; sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]"
)


def run_in_root(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"python -c in {ROOT} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow  # a fresh interpreter imports transformers and torch
def test_transformers_and_tinygrad_llm_import_together_from_the_repository_root():
    pytest.importorskip("transformers", reason="transformers is not installed")
    out = run_in_root(
        "import importlib.util, tinygrad_llm, transformers\n"
        "from transformers import GPT2LMHeadModel  # imports Hugging Face's kernels package where installed\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec is not None and spec.origin else 'none')\n"
    )
    origin = out.strip().splitlines()[-1]
    assert not Path(origin).resolve().is_relative_to(ROOT / "kernels"), f"'import kernels' found ours: {origin}"


def test_a_plain_checkout_imports_with_its_compiled_kernels():
    out = run_in_root(
        PLAIN_CHECKOUT + "\n"
        "import tinygrad_llm\n"
        "from tinygrad_llm.kernels import dispatch, numba_layers\n"
        "print(tinygrad_llm.__file__)\n"
        "print(numba_layers.__file__)\n"
    )
    package, kernel_module = out.strip().splitlines()[-2:]
    assert Path(package).resolve() == ROOT / "tinygrad_llm" / "__init__.py"
    assert Path(kernel_module).resolve() == ROOT / "kernels" / "numba_layers.py"


def test_the_kernels_folder_is_no_top_level_package():
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert (ROOT / "tinygrad_llm" / "kernels").resolve() == ROOT / "kernels"


# ---- the package's own import graph -----------------------------------------------------------------------
# Read from the source with ast, not by importing: every module under tinygrad_llm/ (kernels/ through its link),
# and every import statement in it, at the top of the module or inside a function alike.

PACKAGE = ROOT / "tinygrad_llm"


def package_modules() -> dict:
    """{dotted module name: file} for every module of the package (a package is its __init__.py)."""
    modules = {}
    for folder, subfolders, files in os.walk(PACKAGE, followlinks=True):  # tinygrad_llm/kernels is a link
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for file in files:
            if file.endswith(".py"):
                parts = Path(folder, file).relative_to(ROOT).with_suffix("").parts
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = Path(folder, file)
    return modules


def owning_module(dotted: str, modules: dict) -> str:
    """The module a dotted name lives in: its longest prefix that is a module of the package."""
    while dotted not in modules:
        dotted = dotted.rpartition(".")[0]
    return dotted


def package_imports(name: str, path: Path, modules: dict) -> list:
    """(module imported, private name taken from it or None, line) for each import of the package in ``path``,
    and each ``module._name`` read through a module it imported. ``from a import b`` imports the module a.b
    where there is one, else a; the parent packages that Python imports on the way are not counted."""
    found, aliases = [], {}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tinygrad_llm":
                    found.append((owning_module(alias.name, modules), None, node.lineno))
                    if alias.asname:  # import tinygrad_llm.a.b as c: c is that module
                        aliases[alias.asname] = alias.name
                    else:  # import tinygrad_llm.a.b: the name bound is tinygrad_llm
                        aliases["tinygrad_llm"] = "tinygrad_llm"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package (up level - 1 folders)
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "tinygrad_llm":
                continue
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    found.append((f"{base}.{alias.name}", None, node.lineno))
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
                else:
                    private = alias.name if alias.name.startswith("_") and not alias.name.startswith("__") else None
                    found.append((owning_module(base, modules), private, node.lineno))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # module._name, module.sub._name, ...
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                dotted = ".".join([aliases[value.id], *chain])
                if dotted in modules:  # the attribute is read from a module, not from an object
                    found.append((dotted, node.attr, node.lineno))
    return [(target, private, line) for target, private, line in found if target != name]


def find_cycle(graph: dict) -> list:
    """One cycle of ``graph`` ({node: set of nodes}) as [a, b, ..., a], or [] when there is none."""
    state, path = {}, []  # state: 1 while on the current path, 2 once every path from it is explored

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_package_has_no_import_cycle():
    """No module of tinygrad_llm imports itself through others. What counts: every import statement of a
    tinygrad_llm module, at the top of a module or inside a function (a lazy import is still a cycle: the
    layers of DESIGN.md import only downwards), resolved to the module it names; the parent packages that
    Python imports on the way (tinygrad_llm/__init__.py) are not counted."""
    modules = package_modules()
    assert "tinygrad_llm.model.bert" in modules and "tinygrad_llm.kernels.dispatch" in modules  # the walk works
    graph = {name: {target for target, _, _ in package_imports(name, path, modules)} for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


# Private names still crossing modules in files that other branches of issue 22 rewrite: each goes when they do.
PENDING_PRIVATE: set = set()


def test_no_module_uses_a_private_name_of_another():
    """A name with a leading underscore is its module's own: no other module of tinygrad_llm imports it
    (``from a import _x``) or reads it (``a._x``). What another module needs is public, with a docstring.
    (Tests may use private names.)"""
    modules = package_modules()
    crossing = {
        (name, target, private)
        for name, path in modules.items()
        for target, private, _ in package_imports(name, path, modules)
        if private
    }
    unexpected = sorted(crossing - PENDING_PRIVATE)
    assert not unexpected, f"private names used from another module (user, owner, name): {unexpected}"


def test_every_public_function_has_type_hints():
    """Each public function and method of the package (a name without a leading underscore) annotates every
    parameter but self/cls, and its return unless it is __init__."""
    import ast

    unannotated = []
    for path in sorted((ROOT / "tinygrad_llm").rglob("*.py")):
        if "kernels" in path.relative_to(ROOT).parts:
            continue  # the compiled kernels, typed by Numba at their first call
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            params = [a for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            params = [a for a in params if a.arg not in ("self", "cls")]
            if node.returns is None or any(a.annotation is None for a in params):
                unannotated.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unannotated, f"{len(unannotated)} public functions without full type hints: {unannotated[:20]}"
