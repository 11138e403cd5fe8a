"""Every command block of README.md, run top to bottom as a newcomer runs it, offline.

The blocks run in order in one scratch folder (so `runs/pydoc` from the first block is there for the next),
beside a `../shared` that is the real shared data, with `examples/` linked in. The test may shorten steps
and epochs, nothing else (`shortened`): every other argument runs as written. Lines that install packages
(`pip install`) or run this suite (`bash .ci/run`) are left out: the environment running the test is the one
they make. A block that needs a CUDA GPU runs only where there is one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# how each command is shortened: the flag that bounds its length, and the value the test uses
TRAIN_STEPS = {"--max-steps": "4", "--eval-interval": "2", "--eval-iters": "2"}
SHORTER = {
    "train": TRAIN_STEPS,
    "finetune-classifier": {"--epochs": "1"},
    "finetune-instruct": {"--epochs": "1", "--max-steps": "10"},
    "finetune-dpo": {"--epochs": "1", "--max-train": "16"},  # 16 records: two steps of the epoch
}
EXCLUSIVE = {"--max-steps": "--epochs"}  # train takes one of the two: the shortened run keeps --max-steps
# the examples that train, by the flags that bound their length (the others run in seconds as they are)
# (--records: the examples of chapter 7 train on the first N records, fewer steps of the same epoch)
EXAMPLE_SHORTER = {
    "ch05_pretrain_the_verdict.py": {"--epochs": "1"},
    "appendix_d_training_loop.py": {"--epochs": "1"},
    "appendix_e_lora.py": {"--epochs": "1"},
    "ch06_spam_classifier.py": {"--epochs": "1"},
    "ch07_instruction_finetune.py": {"--epochs": "1", "--records": "60"},
    "ch07_dpo.py": {"--records": "60"},
    "freecodecamp_shakespeare.py": {"--bigram-steps": "20", "--gpt-steps": "20"},
}


def command_blocks(text: str) -> list[list[str]]:
    """The README's ```bash blocks, each as its command lines (continuations joined, comments dropped)."""
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines, current = [], ""
        for raw in body.splitlines():
            current += raw.rstrip()
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            line = strip_comment(current).strip()
            current = ""
            if line:
                lines.append(line)
        blocks.append(lines)
    return blocks


def strip_comment(line: str) -> str:
    """``line`` without its trailing ``# comment`` (a # inside quotes stays)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        kept = list(lexer)
    except ValueError:  # unbalanced quotes: leave the line as it is, bash will say what is wrong
        return line
    if not kept:
        return ""
    # cut the original text where the comment started, so that quoting stays as the README wrote it
    hash_at = [m.start() for m in re.finditer(r"\s#", line)]
    for at in hash_at:
        head = line[:at]
        try:
            if shlex.split(head) == kept:
                return head.rstrip()
        except ValueError:
            continue
    return line


def shortened(line: str) -> str:
    """A tinygrad-llm command with its steps and epochs shortened (see SHORTER); other lines as written."""
    words = shlex.split(line)
    if "tinygrad-llm" in words:
        at = words.index("tinygrad-llm")
        limits = SHORTER.get(words[at + 1] if at + 1 < len(words) else "")
    elif len(words) >= 2 and words[0] == "python" and words[1].startswith("examples/"):
        at = 0
        limits = EXAMPLE_SHORTER.get(words[1].removeprefix("examples/"))
    else:
        return line
    if limits is None:
        return line
    args = words[at + 2 :]
    for flag, value in limits.items():
        if limits is TRAIN_STEPS and EXCLUSIVE.get(flag) in args:
            i = args.index(EXCLUSIVE[flag])
            del args[i : i + 2]
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return shlex.join([*words[: at + 2], *args])


def needs_skipping(line: str) -> str | None:
    """Why a line is not run here (None: run it)."""
    if line.startswith("pip install") or " pip install " in line:
        return "installs packages: the test runs in the environment it makes"
    if line.startswith("bash .ci/run"):
        return "runs this suite"
    if line.startswith("jupyter lab"):
        return "starts a server that runs until stopped (tests/test_notebooks.py runs every notebook)"
    return None


def has_cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_the_blocks_are_found_and_shortened():
    blocks = command_blocks(README.read_text(encoding="utf-8"))
    assert blocks and blocks[0][0].startswith("pip install -e . && tinygrad-llm train")  # the first command
    assert shortened("tinygrad-llm train --epochs 3 --out runs/x") == (
        "tinygrad-llm train --out runs/x --max-steps 4 --eval-interval 2 --eval-iters 2"
    )
    assert shortened("mpiexec -n 2 tinygrad-llm finetune-dpo --init-from runs/i --epochs 2").endswith(
        "--init-from runs/i --epochs 1 --max-train 16"
    )
    assert shortened("python examples/ch06_spam_classifier.py --epochs 8") == (
        "python examples/ch06_spam_classifier.py --epochs 1"
    )
    assert (
        strip_comment('tinygrad-llm generate --prompt "a # b"   # comment') == 'tinygrad-llm generate --prompt "a # b"'
    )


@pytest.mark.slow
def test_every_readme_command_block_runs_offline_as_written(tmp_path, shared_data):
    work = tmp_path / "newcomer"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared_data.parent)  # ../shared/data, as beside a clone
    os.symlink(ROOT / "examples", work / "examples")
    env = {k: v for k, v in os.environ.items() if k != "TINYGRAD_LLM_DATA"}  # found beside the checkout
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TINYGRAD_LLM_CACHE"] = str(tmp_path / "cache")  # nothing downloaded earlier helps
    if shutil.which("tinygrad-llm", path=env["PATH"]) is None:  # a checkout without `pip install -e .`
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "tinygrad-llm").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tinygrad_llm "$@"\n')
        (bin_dir / "tinygrad-llm").chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    ran = []
    for block in command_blocks(README.read_text(encoding="utf-8")):
        if any("cuda" in line for line in block) and not has_cuda():
            continue  # the GPU block: it needs a CUDA GPU (benchmarks/gpu_check.py runs it where one is lent)
        for line in block:
            line = " && ".join(part.strip() for part in line.split("&&") if not needs_skipping(part.strip()))
            if not line:
                continue
            run = shortened(line)
            result = subprocess.run(
                ["bash", "-c", f"set -e -o pipefail\n{run}"],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, f"README: {line}\nran: {run}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, f"README: {line}\n{result.stderr[-3000:]}"
            ran.append(line)
    assert len(ran) >= 20, ran  # the blocks were found and run, not skipped


def test_the_python_examples_run(capsys):
    """The README's Python blocks that are whole programs (they start with their imports) run as written; the
    others are excerpts of the library's source, shown to be read."""
    programs = [b for b in re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)]
    programs = [b for b in programs if b.startswith("import")]
    assert programs
    for program in programs:
        exec(compile(program, str(README), "exec"), {"__name__": "__readme__"})
