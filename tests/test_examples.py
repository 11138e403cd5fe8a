"""The examples as a user meets them: --help that explains every option, --device everywhere, and Ctrl-C
ending with one line instead of a traceback."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tinygrad_llm.cli.common import run_example

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_option_is_explained_and_device_is_there(script, capsys):
    with pytest.raises(SystemExit) as stop:
        load(script).main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    options = [i for i, line in enumerate(lines) if line.startswith("  -")]
    assert any("--device {cpu,cuda}" in lines[i] for i in options), script.name
    for i in options:  # help text on the option's line, or on the indented line below it
        explained = re.search(r"\S {2,}\S", lines[i].strip()) or (
            i + 1 < len(lines) and lines[i + 1].startswith(" " * 8)
        )
        assert explained, f"{script.name}: {lines[i].strip()} has no help text"
    assert "(default: None)" not in out
    assert "run_example(main)" in script.read_text()  # Ctrl-C: one line, no traceback (tested below)


def test_ctrl_c_ends_an_example_without_a_traceback(capsys):
    def interrupted_main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run_example(interrupted_main)
    assert stop.value.code == 130 and capsys.readouterr().err == "\ninterrupted\n"
