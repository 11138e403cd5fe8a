"""The tinygrad-llm command end to end on a tiny model, and its bad-input contract:
one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_classify_cli import _predicted_by_hand

from tinygrad_llm.cli import main
from tinygrad_llm.train.plot import matplotlib_available

TINY = [
    "--preset",
    "tiny",
    "--context-length",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "2",
    "--sample-tokens",
    "8",
    "--warmup-steps",
    "0",
]


def run_cli(*args, stdin: str | None = None, cwd=None):
    """The command in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TINYGRAD_LLM_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "tinygrad_llm", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained by the CLI on a small text file: 6 steps."""
    root = tmp_path_factory.mktemp("cli")
    (root / "story.txt").write_text("the cat sat on the mat. the dog sat on the log. " * 80)
    code = main(
        [
            "train",
            "--data",
            str(root / "story.txt"),
            "--out",
            str(root / "run"),
            "--max-steps",
            "6",
            "--eval-interval",
            "3",
            *TINY,
        ]
    )
    assert code == 0
    return root


def test_train_writes_the_run_folder(trained, capsys):
    run = trained / "run"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "log.jsonl"):
        assert (run / name).is_file(), name
    assert (run / "losses.png").is_file() == matplotlib_available()  # the plot needs the optional matplotlib
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]
    assert json.loads((run / "config.json").read_text())["vocab_size"] == len(set("the cat sat on mat. dog log"))


def test_plot_redraws_a_run(trained, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    from tinygrad_llm.train.plot import plot_run, short_count

    (trained / "run" / "losses.png").unlink()
    assert main(["plot", str(trained / "run")]) == 0
    assert (trained / "run" / "losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(trained / "run"), "--out", str(tmp_path / "curves.svg")]) == 0
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")
    fig, _ = plot_run(trained / "run", tmp_path / "again.png")
    ax1, ax2 = fig.axes
    assert ax1.get_legend() is None and len(fig.legends) == 1  # the legend is outside the axes, over no curve
    assert [short_count(x) for x in (750, 12_000, 1_500_000, 2e9)] == ["750", "12K", "1.5M", "2B"]
    assert ax2.xaxis.get_major_formatter()(1_000_000, 0) == "1M" and ax2.xaxis.get_offset_text().get_text() == ""
    assert_one_line_error(run_cli("plot", tmp_path), "log.jsonl", "missing")


def test_generate_streams_a_continuation(trained, capsys):
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(trained / "run"),
                "--prompt",
                "the ",
                "--max-new-tokens",
                "12",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out
    assert first.startswith("the ") and len(first.rstrip("\n")) == len("the ") + 12  # char tokens: one char each
    main(
        [
            "generate",
            "--checkpoint",
            str(trained / "run"),
            "--prompt",
            "the ",
            "--max-new-tokens",
            "12",
            "--seed",
            "3",
            "--no-cache",
        ]
    )
    assert capsys.readouterr().out == first  # the KV cache changes nothing but speed


def test_broken_pipe_exits_quietly(trained):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinygrad_llm",
            "generate",
            "--checkpoint",
            str(trained / "run"),
            "--prompt",
            "the ",
            "--max-new-tokens",
            "5000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert len(reader.stdout.read(20)) == 20  # as | head -c 20 does: read a little, then leave
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 141 and err == ""


def test_resume_checks_the_memory_of_the_runs_own_settings(trained, monkeypatch, capsys):
    from tinygrad_llm.runtime import host_memory, settings

    monkeypatch.setattr(settings, "_current", None)
    monkeypatch.delenv(settings.MEMORY_CHECK_ENV, raising=False)
    monkeypatch.setattr(host_memory, "available_memory", lambda: (1 << 20, "a test's figure"))
    log = (trained / "run" / "log.jsonl").read_text()
    assert main(["train", "--out", str(trained / "run"), "--resume", "--max-steps", "8"]) == 1
    err = capsys.readouterr().err
    assert "for batches of 4 x 16 tokens" in err  # the run's own, not train's defaults (12 x 64)
    assert "a resumed run keeps its own --batch-size, --context-length and model" in err
    assert (trained / "run" / "log.jsonl").read_text() == log  # refused before it resumed


def test_info_reports_parameters_and_memory(capsys):
    assert main(["info", "--preset", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "163,009,536" in out and "124,412,160" in out and "training memory" in out
    assert "threads (CPU)" not in out and "info --threads" in out  # the thread policy on its own flag
    assert main(["info", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "gpt2-xl" in listed and "--context-length" in listed  # mini's context 128 is not train's 64
    assert main(["info", "--threads"]) == 0
    assert "threads (CPU)" in capsys.readouterr().out


def test_info_reads_a_run_folder_and_a_hugging_face_folder(trained, tmp_path, capsys):
    assert main(["info", "--checkpoint", str(trained / "run")]) == 0
    out = capsys.readouterr().out
    assert "vocab_size       14" in out
    assert "trained          step 6 of 6, 384 tokens seen" in out  # 6 steps x batch 4 x context 16
    last = json.loads((trained / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert f"last evaluation  step 6: train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}" in out
    assert "best val loss" in out
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257}
        )
    )
    assert main(["info", "--checkpoint", str(tmp_path)]) == 0
    assert "124,439,808" in capsys.readouterr().out  # GPT-2 small as released: QKV biases, tied head


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("abcdefghij klmnopqrst uvwxyz. " * 60)
    common = [
        "--data",
        str(text),
        "--eval-interval",
        "2",
        "--lr",
        "3e-3",
        "--min-lr",
        "3e-3",
        "--dropout",
        "0.1",
        *TINY,
    ]
    assert main(["train", "--out", str(tmp_path / "straight"), "--max-steps", "6", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--max-steps", "4", *common]) == 0
    # --resume takes the run's own data and settings; only --max-steps is given, and said to override
    assert main(["train", "--out", str(tmp_path / "split"), "--max-steps", "6", "--resume"]) == 0
    assert "with the run's own settings; overriding --max-steps 4 -> 6" in capsys.readouterr().err

    def losses(run):
        return [
            (r["step"], r["train_loss"], r["val_loss"])
            for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines())
        ]

    assert losses("straight") == losses("split")
    assert main(["train", "--out", str(tmp_path / "split"), "--resume"]) == 0  # not on to the default 2000 steps
    assert losses("split") == losses("straight") and "6 steps ->" in capsys.readouterr().err
    other_context = [a if a != "16" else "32" for a in common]
    assert_one_line_error(
        run_cli("train", "--out", tmp_path / "split", "--max-steps", "8", "--resume", *other_context),
        "--resume:",
        "--context-length",
    )


def test_version_prints_the_packages_version(capsys):
    """--version: the version pyproject.toml gives the package (what pip installs), the one __version__ holds."""
    import re
    from pathlib import Path

    import tinygrad_llm

    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE).group(1)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tinygrad-llm {version}\n"
    assert tinygrad_llm.__version__ == version


@pytest.mark.parametrize("command", ["train", "generate", "chat", "info", "plot", "classify"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tinygrad-llm " + command in out
    assert "(default: None)" not in out  # each default said once, and only where there is one


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, result.stderr)


def test_bad_data_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes(b"na\xefve text")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "short.txt").write_text("too short")
    cases = [
        (tmp_path / "missing.txt", ["missing.txt", "no such file"]),
        (tmp_path / "empty.txt", ["empty.txt", "empty"]),
        (tmp_path / "latin1.txt", ["latin1.txt", "byte offset 2"]),
        (tmp_path / "image.png", ["image.png", "binary"]),
        (tmp_path / "nothing", ["nothing", "no text files"]),
        (tmp_path / "short.txt", ["fewer than one window", "--context-length"]),
    ]
    for path, fragments in cases:
        assert_one_line_error(
            run_cli("train", "--data", path, "--out", tmp_path / "out", "--max-steps", "1", *TINY),
            "tinygrad-llm train: error:",
            *fragments,
        )


def test_bad_arguments(tmp_path, trained):
    story = trained / "story.txt"
    assert_one_line_error(
        run_cli("train", "--data", story, "--preset", "huge", "--out", tmp_path / "a"), "unknown GPT preset 'huge'"
    )
    assert_one_line_error(
        run_cli("train", "--data", story, "--preset", "huge", "--out", trained / "run"), "unknown GPT preset 'huge'"
    )  # the arguments first, then the folder
    assert_one_line_error(run_cli("train", "--data", story, "--lr", "nan"), "--lr", "finite")
    assert_one_line_error(
        run_cli(
            "train",
            "--data",
            story,
            "--out",
            tmp_path / "b",
            "--batch-size",
            "2000",  # more windows than the text has, fewer than would run out of memory (test_memory.py)
            "--max-steps",
            "1",
            "--preset",
            "tiny",
            "--context-length",
            "16",
        ),
        "fewer than one batch",
    )
    assert_one_line_error(
        run_cli("train", "--data", story, "--out", tmp_path / "none", "--resume", *TINY), "--resume: no checkpoint in"
    )
    assert_one_line_error(run_cli("train", "--data", story, "--out", trained / "run", *TINY), "already holds a run")


def test_device_cuda_without_a_gpu_says_so(tmp_path, trained):
    from tinygrad_llm.backend import cuda_available, nvidia_driver_present

    if cuda_available() or nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA GPU: the message for a machine without one cannot be seen here")
    assert_one_line_error(
        run_cli("train", "--data", trained / "story.txt", "--device", "cuda", "--out", tmp_path / "x"),
        "--device cuda: this machine shows no NVIDIA GPU",
        "--device cpu",
    )
    assert not (tmp_path / "x").exists()  # said before anything was written


def test_warmup_longer_than_the_run_is_named(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abcdefghij klmnopqrst uvwxyz. " * 20)
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "t.txt"),
                "--out",
                str(tmp_path / "r"),
                "--max-steps",
                "2",
                "--eval-interval",
                "2",
                *TINY[:-2],
                "--warmup-steps",
                "100",
            ]
        )
        == 0
    )
    assert "--warmup-steps 100 is not below the run's 2 steps" in capsys.readouterr().err


def test_classifier_commands_and_an_interrupted_finetuning(tmp_path, capsys, monkeypatch):
    from tinygrad_llm.finetune import classifier

    data = tmp_path / "SMSSpamCollection"
    data.write_text("".join(f"ham\tsee you at {i} tonight\nspam\tWIN {i} cash now, call 0900{i}\n" for i in range(30)))
    calls = []

    def cut_short(model, train_loader, *args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt  # Ctrl-C during training

    monkeypatch.setattr(classifier, "train_classifier", cut_short)  # the loop finetune-classifier runs
    out = tmp_path / "spam"
    assert (
        main(
            [
                "finetune-classifier",
                "--data",
                str(data),
                "--preset",
                "tiny",
                "--tokenizer",
                "byte",
                "--emb-dim",
                "16",
                "--n-layers",
                "1",
                "--max-length",
                "24",
                "--out",
                str(out),
            ]
        )
        == 130
        and calls
    )
    assert json.loads((out / "finetune.json").read_text())["interrupted"] is True
    assert "interrupted: saved the model as it was" in capsys.readouterr().err
    texts = ["WIN cash now", "see you"]
    assert main(["classify", "--checkpoint", str(out), "--probs", *[a for t in texts for a in ("--text", t)]]) == 0
    lines = capsys.readouterr().out.splitlines()  # usable: the model as it was, one label per text
    assert [line.split("\t")[1] for line in lines] == texts
    for line, text in zip(lines, texts):  # the label and probabilities the saved model gives, likeliest first
        probs, names, _ = _predicted_by_hand(out, text)
        words = line.split("\t")[0].split()
        order = probs.argsort()[::-1]
        assert words[0] == names[order[0]] and words[1::2] == [names[k] for k in order]
        np.testing.assert_allclose([float(p) for p in words[2::2]], probs[order], atol=5e-4)
    assert main(["generate", "--checkpoint", str(out), "--prompt", "x"]) == 1
    assert "is a classifier (finetune-classifier)" in capsys.readouterr().err
    assert main(["classify", "--checkpoint", str(tmp_path / "nowhere"), "--text", "x"]) == 1


def test_bad_checkpoints(tmp_path, trained):
    import shutil

    assert_one_line_error(run_cli("generate", "--checkpoint", tmp_path / "nowhere", "--prompt", "x"), "no such")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(trained / "run" / "config.json", partial)
    assert_one_line_error(run_cli("generate", "--checkpoint", partial, "--prompt", "x"), "model.safetensors", "missing")
    truncated = tmp_path / "truncated"
    shutil.copytree(trained / "run", truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("generate", "--checkpoint", truncated, "--prompt", "x"), "model.safetensors")
    reshaped = tmp_path / "reshaped"
    shutil.copytree(trained / "run", reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    (reshaped / "config.json").write_text(json.dumps({**config, "emb_dim": 32}))
    assert_one_line_error(run_cli("generate", "--checkpoint", reshaped, "--prompt", "x"), "model.safetensors", "shape")
