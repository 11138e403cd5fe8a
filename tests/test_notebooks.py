"""Every example as a notebook: converted by jupytext from its percent-format source (``# %%`` cells), executed
top to bottom by nbclient on the CPU at the small settings of tests/test_examples.py (passed as the flags the
command line would take, through $TINYGRAD_LLM_EXAMPLE_ARGS), failing on any cell's error; the pictures come
out inline. Needs the notebooks extra (pip install -e ".[notebooks]"); CI installs it."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import sys

import pytest
from test_examples import SCRIPTS, SMALL_SETTINGS

from tinygrad_llm.cli.example import NOTEBOOK_ARGS

jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed (pip install -e '.[notebooks]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[notebooks]')")
if importlib.util.find_spec("ipykernel") is None:  # the kernel's package: found, not imported here
    pytest.skip("ipykernel is not installed (pip install -e '.[notebooks]')", allow_module_level=True)

KERNEL = "tinygrad-llm-examples"
DOT = shutil.which("dot") is not None  # graphs are pictures with Graphviz, their DOT text without
# the inline pictures each notebook shows: matplotlib figures, and the graphs where Graphviz is installed
PICTURES = {
    "ch03_attention": 2 + DOT,
    "study_gradients": 2 * DOT,
    "ch05_pretrain_the_verdict": 1,
    "appendix_d_training_loop": 2,
    "ch07_dpo": 1,
    "freecodecamp_shakespeare": 2,
}

# examples whose Trainer writes a run folder (checkpoint, log and its pictures) wherever they run
TRAINER_RUNS = {"freecodecamp_shakespeare"}


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A kernel spec that runs this very interpreter, found first through $JUPYTER_PATH: the test never depends
    on which "python3" kernel a machine has registered, and registers nothing itself."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A GPT-2-shaped folder (config.json + model.safetensors, GPT-2's vocabulary, 2 narrow layers, random
    weights) for the chapter-5 loading example, where the real weights cannot be downloaded."""
    import tinygrad_llm as tl

    folder = tmp_path_factory.mktemp("gpt2")
    tl.manual_seed(0)
    tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=50257, context_length=64, qkv_bias=True)).save_pretrained(folder)
    return folder


def execute(script, tmp_path, monkeypatch, kernel_path, flags=()):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    flags = ["--device", "cpu", *SMALL_SETTINGS.get(script.stem, []), *flags]
    monkeypatch.setenv(NOTEBOOK_ARGS, shlex.join(map(str, flags)))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = jupytext.read(script)
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    client = nbclient.NotebookClient(
        notebook, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return notebook


def outputs(notebook, kind: str) -> list:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if kind in o.get("data", {})]


def text_of(notebook) -> str:
    return "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)


# the two that open the engine cell by cell stay in the quick subset; the others train, and run with the slow tests
QUICK = {"ch03_attention", "study_gradients"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=() if s.stem in QUICK else pytest.mark.slow) for s in SCRIPTS],
    ids=lambda p: p.stem,
)
def test_every_example_runs_as_a_notebook_with_its_pictures_inline(
    script, tmp_path, monkeypatch, kernel_path, tiny_gpt2
):
    flags = ["--path", tiny_gpt2] if script.stem == "ch05_load_gpt2" else []
    notebook = execute(script, tmp_path, monkeypatch, kernel_path, flags)
    markdown = [cell for cell in notebook.cells if cell.cell_type == "markdown"]
    assert len(markdown) >= 3, f"{script.name}: the story needs its text cells"
    assert len(outputs(notebook, "image/png")) == PICTURES.get(script.stem, 0), script.name
    if script.stem == "study_gradients" and not DOT:
        assert text_of(notebook).count("digraph") == 3  # the graphs as DOT text: y's, the head's, the GPT's
    if script.stem not in TRAINER_RUNS:
        assert not list(tmp_path.rglob("*.png")), "in a notebook the pictures are shown, not written"


def test_a_process_that_imports_ipykernel_is_no_notebook():
    import ipykernel  # noqa: F401  (as this test process does through nbclient)

    from tinygrad_llm.cli.example import in_notebook

    assert not in_notebook()  # the command line's flags still count; in a kernel the notebooks above show it
