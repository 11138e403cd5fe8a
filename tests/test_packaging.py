"""The package imports from the repository root as well as from anywhere else.

Our compiled kernels live in the top-level ``kernels/`` folder. Were it a package, ``python`` started in the
repository root (``python -m pytest`` puts the root on ``sys.path``) would give it to any library that
imports Hugging Face's own ``kernels`` package, as transformers 5 does: ``from kernels import CUDAProperties``
then failed. Each check runs in a fresh interpreter started in the repository root.
"""

from __future__ import annotations

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


def test_transformers_and_tinygrad_llm_import_together_from_the_repository_root():
    pytest.importorskip("transformers", reason="transformers is not installed")
    out = run_in_root(
        "import importlib.util, tinygrad_llm, transformers\n"
        "from transformers import GPT2LMHeadModel  # imports Hugging Face's kernels package where installed\n"
        "spec = importlib.util.find_spec('kernels')\n"
        "print(spec.origin if spec is not None and spec.origin else 'none')\n"
    )
    origin = out.strip().splitlines()[-1]
    assert not origin.startswith(str(ROOT)), f"'import kernels' found the repository's own folder: {origin}"


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
