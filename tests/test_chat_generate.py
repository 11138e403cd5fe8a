"""``generate`` and ``chat`` on a tiny trained run: several samples, prompts from a file or standard input, a
conversation kept within the context, the Alpaca prompt for an instruction-tuned folder."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from tinygrad_llm.cli import main
from tinygrad_llm.cli.common import load_model_and_tokenizer
from tinygrad_llm.cli.generate import alpaca_prompt
from tinygrad_llm.tokenizer import get_tokenizer

SIZES = ["--preset", "tiny", "--context-length", "16", "--batch-size", "4", "--eval-iters", "1", "--warmup-steps", "0"]
SAMPLING = ["--max-new-tokens", "6", "--temperature", "1.0", "--seed", "5"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A char-tokenizer run and a byte-tokenizer run marked as instruction-tuned (finetune.json)."""
    root = tmp_path_factory.mktemp("chat")
    text = root / "story.txt"
    text.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 60)
    for name, tokenizer in (("char", "char"), ("byte", "byte")):
        args = ["train", "--data", str(text), "--out", str(root / name), "--max-steps", "3", "--tokenizer", tokenizer]
        assert main([*args, "--sample-tokens", "1", *SIZES]) == 0
    shutil.copytree(root / "byte", root / "instruct")
    (root / "instruct" / "finetune.json").write_text(json.dumps({"task": "instruction", "prompt_format": "alpaca"}))
    return root


def generate_out(capsys, *args) -> str:
    capsys.readouterr()
    assert main(["generate", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_num_samples_are_the_seeded_samples_one_after_another(runs, capsys):
    run = runs / "char"
    one = generate_out(capsys, "--checkpoint", run, "--prompt", "the ", *SAMPLING)
    next_seed = generate_out(capsys, "--checkpoint", run, "--prompt", "the ", *SAMPLING[:-1], "6")
    three = generate_out(capsys, "--checkpoint", run, "--prompt", "the ", *SAMPLING, "--num-samples", "3")
    samples = three.split("---------------\n")
    assert len(samples) == 3 and samples[0] == one and samples[1] == next_seed  # sample i draws with seed S+i
    assert all(s.startswith("the ") for s in samples)


def test_prompt_from_a_file_or_standard_input_equals_the_prompt_flag(runs, capsys, tmp_path, monkeypatch):
    run = runs / "char"
    expected = generate_out(capsys, "--checkpoint", run, "--prompt", "the dog\nthe ", *SAMPLING)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("the dog\nthe ", encoding="utf-8")
    assert generate_out(capsys, "--checkpoint", run, "--prompt-file", prompt, *SAMPLING) == expected
    monkeypatch.setattr("sys.stdin", io.StringIO("the dog\nthe "))
    assert generate_out(capsys, "--checkpoint", run, "--prompt-file", "-", *SAMPLING) == expected


def test_a_bad_prompt_file_is_named(runs, capsys, tmp_path):
    run = runs / "char"
    assert main(["generate", "--checkpoint", str(run), "--prompt-file", str(tmp_path / "none.txt")]) == 1
    assert "--prompt-file" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["generate", "--checkpoint", str(run), "--prompt-file", str(latin1)]) == 1
    err = capsys.readouterr().err
    assert f"--prompt-file {latin1}: not UTF-8" in err
    with pytest.raises(SystemExit):  # argparse: one of the two, not both
        main(["generate", "--checkpoint", str(run), "--prompt", "a", "--prompt-file", str(latin1)])


def test_unknown_characters_are_refused_alike_in_generate_and_chat(runs, capsys, monkeypatch):
    run = runs / "char"
    assert main(["generate", "--checkpoint", str(run), "--prompt", "thé cät"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # not even the prompt
    assert "--prompt: 'é', 'ä' are not in the vocabulary of this model's char tokenizer" in captured.err
    monkeypatch.setattr("sys.stdin", io.StringIO("the é cat\nthe dog\n"))
    assert main(["chat", "--checkpoint", str(run), "--max-new-tokens", "5", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert "error: this line: 'é' is not in the vocabulary" in captured.err  # said once, in words, not a tuple
    assert "> the dog\n" in captured.out  # and the chat carried on with the next line


class Recorder:
    """Stands in for generate_stream: records each prompt's ids and yields a fixed answer."""

    def __init__(self, answer: list[int]):
        self.prompts: list[list[int]] = []
        self.answer = answer

    def __call__(self, model, idx, max_new_tokens, **kwargs):
        self.prompts.append([int(i) for i in idx[0]])
        yield from self.answer


def test_chat_keeps_the_conversation_within_the_context(runs, capsys, monkeypatch):
    run = runs / "char"
    _, tokenizer = load_model_and_tokenizer(run, None)
    answer = tokenizer.encode("sat on")
    recorder = Recorder(answer)
    monkeypatch.setattr(sys.modules["tinygrad_llm.generate"], "generate_stream", recorder)
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat\nthe dog\n"))
    assert main(["chat", "--checkpoint", str(run)]) == 0
    first, second = recorder.prompts
    assert first == tokenizer.encode("the cat")
    # the second turn sees the first, its answer and a line break, cropped to the model's 16 positions
    assert second == tokenizer.encode("the catsat on\nthe dog")[-16:]
    assert capsys.readouterr().out == "> the cat\nsat on\n\n> the dog\nsat on\n"  # piped lines echoed


def test_chat_with_an_instruction_tuned_folder_uses_the_alpaca_prompt(runs, capsys, monkeypatch):
    run = runs / "instruct"
    recorder = Recorder([ord("o"), ord("k")])  # byte tokenizer: ids are bytes
    monkeypatch.setattr(sys.modules["tinygrad_llm.generate"], "generate_stream", recorder)
    monkeypatch.setattr("sys.stdin", io.StringIO("Name a colour.\nName a cat.\n"))
    assert main(["chat", "--checkpoint", str(run)]) == 0
    byte = get_tokenizer("byte")
    assert recorder.prompts == [byte.encode(alpaca_prompt("Name a colour.")), byte.encode(alpaca_prompt("Name a cat."))]
    assert "### Response:" in alpaca_prompt("x") and "### Instruction:\nx" in alpaca_prompt("x")
    assert capsys.readouterr().out == "> Name a colour.\nok\n\n> Name a cat.\nok\n"  # each answered on its own


def test_exit_ends_a_piped_chat(runs):
    """As a user pipes it: no greeting (not a terminal), the transcript echoed, 'exit' ends the chat."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tinygrad_llm", "chat", "--checkpoint", str(runs / "char"), "--max-new-tokens", "3"],
        input="the cat\nexit\nthe dog\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("> the cat\n") and "the dog" not in result.stdout  # 'exit' ends the chat
