"""The examples as a user meets them: --help that explains every option, --device everywhere, Ctrl-C ending
with one line instead of a traceback, and a run from the command line at small settings writing its pictures.
tests/test_notebooks.py runs each one as a notebook at the same SMALL_SETTINGS."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

# the flags that shorten each example to seconds on a CPU (what is not named runs at its defaults)
SMALL_SETTINGS = {
    "appendix_d_training_loop": ["--preset", "tiny", "--epochs", "1"],
    "appendix_e_lora": ["--epochs", "1"],
    "ch04_gpt_model": ["--preset", "tiny"],
    "ch05_pretrain_the_verdict": ["--preset", "tiny", "--epochs", "1"],
    "ch06_spam_classifier": ["--epochs", "1"],
    "ch07_dpo": ["--records", "60", "--max-length", "64"],
    "ch07_instruction_finetune": ["--records", "60", "--epochs", "1", "--max-test", "2"],
    "freecodecamp_shakespeare": ["--bigram-steps", "20", "--gpt-steps", "20"],
    "transformer_copy_task": ["--max-steps", "2", "--eval-every", "1"],
}


def run_script(path: Path, *flags: str) -> int:
    """Run an example as ``python path flags...`` does, in this process; its exit status (0 if it ended)."""
    return execute_script(path, *flags)[0]


def execute_script(path: Path, *flags: str) -> tuple[int, dict]:
    """Run an example as ``python path flags...`` does, in this process: its exit status, and the names it
    defined (its classes and results, also where it stopped with an exit status)."""
    names = {"__name__": "__main__", "__file__": str(path)}
    saved = sys.argv
    sys.argv = [str(path), *map(str, flags)]
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), names)
    except SystemExit as stop:
        return (stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)), names
    finally:
        sys.argv = saved
    return 0, names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_every_option_is_explained_and_device_is_there(script, capsys):
    assert run_script(script, "--help") == 0
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
    source = script.read_text()
    assert "example_args(" in source  # the flags read one way, Ctrl-C in one line (tested below)
    assert source.startswith("# %% [markdown]\n# # ") and "\n# %%\n" in source  # a notebook: title, then cells


def test_ctrl_c_ends_an_example_without_a_traceback(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(
        "from tinygrad_llm.cli.common import example_parser\n"
        "from tinygrad_llm.cli.example import example_args\n"
        "example_args(example_parser('an example'))\n"
        "raise KeyboardInterrupt\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    # Python ends a script that Ctrl-C stopped by the signal itself: a shell sees status 130
    assert result.returncode == -signal.SIGINT and result.stderr == "\ninterrupted\n"


def test_an_example_writes_its_pictures_from_the_command_line(tmp_path, capsys):
    assert run_script(EXAMPLES / "ch03_attention.py", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "largest difference" in out and f"wrote {tmp_path / 'attention_causal.png'}" in out
    for name in ("attention_simplified.png", "attention_causal.png", "attention_head_graph.dot"):
        assert (tmp_path / name).stat().st_size > 0, name
