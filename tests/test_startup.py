"""What every command checks at start-up, before any work: the TINYGRAD_LLM_* environment (a bad value is a
usage error naming the variable, an unknown name a warning naming the closest known one); and the sizes a
command would otherwise change without a word (gradcheck's and attention's context, info's config.json
against its weights, train --zero in one process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinygrad_llm.cli import COMMANDS, main
from tinygrad_llm.runtime import settings
from tinygrad_llm.runtime.settings import ENVIRONMENT, check_environment

ROOT = Path(__file__).resolve().parents[1]

# The least each command needs to get past argparse: the environment is checked before anything else.
MINIMAL_ARGV = {
    "train": [],
    "generate": ["--checkpoint", "x", "--prompt", "x"],
    "chat": ["--checkpoint", "x"],
    "info": [],
    "finetune-classifier": ["--out", "x"],
    "finetune-instruct": ["--out", "x"],
    "finetune-dpo": ["--init-from", "x", "--out", "x"],
    "classify": ["--checkpoint", "x"],
    "plot": ["x"],
    "gradcheck": [],
    "attention": ["--checkpoint", "x", "--prompt", "x"],
}


def test_every_variable_the_project_reads_is_known_with_the_readers_values():
    from tinygrad_llm.backend import DEVICES
    from tinygrad_llm.kernels import dispatch

    named = set()
    for folder in ("tinygrad_llm", "kernels", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r"TINYGRAD_LLM_[A-Z_]*[A-Z]", path.read_text(encoding="utf-8")))
    named -= {"TINYGRAD_LLM_THREAD", "TINYGRAD_LLM_THRADS", "TINYGRAD_LLM_KERNEL", "TINYGRAD_LLM_FOO"}  # typos here
    assert named <= set(ENVIRONMENT), sorted(named - set(ENVIRONMENT))
    assert set(ENVIRONMENT["TINYGRAD_LLM_DEVICE"]) == set(DEVICES)
    assert set(ENVIRONMENT["TINYGRAD_LLM_KERNELS"]) == set(dispatch.MODES)
    assert ENVIRONMENT[settings.MALLOC_ENV] == settings.MALLOC_CHOICES


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TINYGRAD_LLM_THREADS", "abc", "a positive integer"),
        ("TINYGRAD_LLM_THREADS", "0", "a positive integer"),
        ("TINYGRAD_LLM_DEVICE", "gpu", "'cpu' or 'cuda'"),
        ("TINYGRAD_LLM_KERNELS", "numba", "'auto' or 'numpy'"),
        ("TINYGRAD_LLM_MALLOC", "fast", "'keep' or 'default'"),
        ("TINYGRAD_LLM_MEMORY_CHECK", "no", "'on' or 'off'"),
        ("TINYGRAD_LLM_DIST", "mpi", "'single'"),
        ("TINYGRAD_LLM_DIST", "SINGLE", "'single'"),  # its reader takes it as written: that would be ignored
        ("TINYGRAD_LLM_DEVICE", " cuda", "'cpu' or 'cuda'"),
        ("TINYGRAD_LLM_DEBUG", "yes", "'1' or '0'"),
        ("TINYGRAD_LLM_DATA", "/no/such/folder", "no such folder"),
    ],
)
def test_a_bad_value_is_named_with_the_values_accepted(name, value, expected):
    errors, warnings = check_environment({name: value})
    assert len(errors) == 1 and not warnings
    assert errors[0].startswith(f"{name}={value!r}: ") and expected in errors[0]


def test_good_values_and_folders_pass(tmp_path):
    (tmp_path / "file").write_text("")
    good = {
        "TINYGRAD_LLM_THREADS": "4",
        "TINYGRAD_LLM_DEVICE": "cpu",
        "TINYGRAD_LLM_KERNELS": " NumPy ",
        "TINYGRAD_LLM_MALLOC": "default",
        "TINYGRAD_LLM_MEMORY_CHECK": "off",
        "TINYGRAD_LLM_DIST": "single",
        "TINYGRAD_LLM_DEBUG": "",
        "TINYGRAD_LLM_DATA": str(tmp_path),
        "TINYGRAD_LLM_CACHE": str(tmp_path / "made-when-needed"),
        "OTHER_VARIABLE": "anything",
    }
    assert check_environment(good) == ([], [])
    errors, _ = check_environment({"TINYGRAD_LLM_CACHE": str(tmp_path / "file")})
    assert errors and "is a file" in errors[0]


def test_an_unknown_variable_is_warned_with_the_closest_known_one():
    errors, warnings = check_environment({"TINYGRAD_LLM_THREAD": "2", "TINYGRAD_LLM_KERNEL": "numpy"})
    assert not errors
    assert warnings == [
        "TINYGRAD_LLM_KERNEL is not a variable tinygrad-llm reads, so it does nothing: did you mean "
        "TINYGRAD_LLM_KERNELS?",
        "TINYGRAD_LLM_THREAD is not a variable tinygrad-llm reads, so it does nothing: did you mean "
        "TINYGRAD_LLM_THREADS?",
    ]
    _, warnings = check_environment({"TINYGRAD_LLM_FOO": "1"})
    assert "the known ones are TINYGRAD_LLM_CACHE" in warnings[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_bad_variable_before_any_work(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYGRAD_LLM_THREADS", "abc")
    monkeypatch.setenv("TINYGRAD_LLM_THRADS", "2")
    assert main([command, *MINIMAL_ARGV[command]]) == 2  # a usage error, as argparse's
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"tinygrad-llm {command}: warning: TINYGRAD_LLM_THRADS is not a variable tinygrad-llm reads, so it does "
        "nothing: did you mean TINYGRAD_LLM_THREADS?",
        f"tinygrad-llm {command}: error: TINYGRAD_LLM_THREADS='abc': expected a positive integer (CPU threads for "
        "the matrix products)",
    ]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_classify_with_a_bad_thread_count_exits_2_in_one_line(tmp_path):
    env = {**os.environ, "TINYGRAD_LLM_THREADS": "abc"}
    env.pop("TINYGRAD_LLM_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-m", "tinygrad_llm", "classify", "--checkpoint", str(tmp_path), "--text", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "tinygrad-llm classify: error: TINYGRAD_LLM_THREADS='abc': expected a positive integer (CPU threads "
        "for the matrix products)"
    ]


def test_debug_0_is_off(monkeypatch, capsys):
    monkeypatch.setenv("TINYGRAD_LLM_DEBUG", "0")
    assert main(["info", "--preset", "no-such-preset"]) == 1  # one line, not a traceback
    assert "unknown GPT preset" in capsys.readouterr().err


# ---- sizes never changed without a word ------------------------------------------------------------------


@pytest.fixture
def model_folder(tmp_path):
    """A saved 32-position byte-level GPT (config.json, model.safetensors, tokenizer.json)."""
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.tokenizer import get_tokenizer

    folder = tmp_path / "model"
    tokenizer = get_tokenizer("byte")
    GPTModel(GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=32)).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def test_gradcheck_refuses_a_context_longer_than_the_models(model_folder, capsys):
    assert main(["gradcheck", "--checkpoint", str(model_folder), "--context-length", "1000"]) == 1
    err = capsys.readouterr().err
    assert "--context-length 1000: the model in" in err and "takes at most 32 positions" in err


def test_attention_refuses_a_prompt_longer_than_the_context(model_folder, tmp_path, capsys):
    from tinygrad_llm.train.plot import matplotlib_available

    if not matplotlib_available():
        pytest.skip("attention draws with matplotlib, which is not installed")
    out = tmp_path / "a.png"
    assert main(["attention", "--checkpoint", str(model_folder), "--prompt", "x" * 40, "--out", str(out)]) == 1
    assert "--prompt: 40 tokens, but the model attends over at most 32" in capsys.readouterr().err
    assert not out.exists()


def test_info_checks_config_json_against_the_weights_header(model_folder, capsys):
    assert main(["info", "--checkpoint", str(model_folder)]) == 0
    assert "model.safetensors holds this model" in capsys.readouterr().out
    config_file = model_folder / "config.json"
    config = json.loads(config_file.read_text())
    config["n_layer"] = 10**9  # a Hugging Face layout config.json (save_pretrained's)
    config["tinygrad_llm"]["n_layers"] = 10**9
    config_file.write_text(json.dumps(config))
    assert main(["info", "--checkpoint", str(model_folder)]) == 1
    captured = capsys.readouterr()
    assert "parameters" not in captured.out  # no count of a model the weights do not hold
    assert "= 1000000000, but model.safetensors holds weights for 2" in captured.err
    assert main(["generate", "--checkpoint", str(model_folder), "--prompt", "x"]) == 1  # the same check
    assert "= 1000000000, but model.safetensors holds weights for 2" in capsys.readouterr().err
    (model_folder / "model.safetensors").unlink()  # a config.json alone: read, and said so
    assert main(["info", "--checkpoint", str(model_folder)]) == 0
    assert "no model.safetensors here: the sizes are config.json's alone" in capsys.readouterr().out


def test_info_refuses_a_context_longer_than_the_models(capsys):
    assert main(["info", "--preset", "tiny", "--context-length", "65"]) == 1
    assert "--context-length 65: the model takes at most 64 positions" in capsys.readouterr().err


def test_train_zero_in_one_process_says_it_does_nothing(tmp_path, capsys):
    code = main(["train", "--zero", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")])
    assert code == 1  # (the text is missing: the note comes first, before anything is read)
    err = capsys.readouterr().err
    assert "note: --zero has no effect in one process" in err and "mpiexec -n N" in err
    assert main(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "run")]) == 1
    assert "--zero" not in capsys.readouterr().err


def test_an_example_script_checks_the_environment_too():
    env = {**os.environ, "TINYGRAD_LLM_DEVICE": "gpu"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ch04_gpt_model.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: TINYGRAD_LLM_DEVICE='gpu': expected 'cpu' or 'cuda' (or unset)" in result.stderr
