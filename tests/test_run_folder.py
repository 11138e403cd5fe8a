"""Output folders and faults during a run: nothing a user owns is overwritten, a second run on the same
folder is refused, SIGTERM and Ctrl-C save a complete checkpoint, a full disk leaves the previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygrad_llm import run_folder
from tinygrad_llm.checkpoint import find_checkpoint, load_checkpoint
from tinygrad_llm.cli import main
from tinygrad_llm.train.signals import Interrupted

TINY = [
    "--preset",
    "tiny",
    "--context-length",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "1",
    "--sample-tokens",
    "4",
    "--warmup-steps",
    "0",
]


def cli(*args, **popen):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TINYGRAD_LLM_DEBUG", None)
    return [sys.executable, "-m", "tinygrad_llm", *map(str, args)], dict(env=env, text=True, **popen)


def run_cli(*args, preexec_fn=None):
    command, options = cli(*args)
    return subprocess.run(command, capture_output=True, timeout=300, preexec_fn=preexec_fn, **options)


def one_line_error(stderr: str, *fragments) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, stderr)
    return last


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".del", ".old", ".part"))]


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "story.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log. " * 80)
    return path


def test_a_folder_that_is_not_a_run_is_never_written_unasked(tmp_path, story, capsys):
    hf = tmp_path / "gpt2"  # a Hugging Face model folder, say
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "gpt2"}')
    (hf / "model.safetensors").write_bytes(b"not ours to replace")
    before = {p.name: p.read_bytes() for p in hf.iterdir()}
    args = ["train", "--data", str(story), "--max-steps", "2", "--eval-interval", "2", *TINY]
    for extra in ([], ["--resume"]):
        assert main([*args, "--out", str(hf), *extra]) == 1
        one_line_error(capsys.readouterr().err, str(hf), "--")
    assert {p.name: p.read_bytes() for p in hf.iterdir()} == before  # untouched: no marker, no lock either

    assert main([*args, "--out", str(hf), "--overwrite"]) == 0  # asked for: written, and now a run
    assert run_folder.is_run_folder(hf) and (hf / "model.safetensors").read_bytes() != before["model.safetensors"]
    capsys.readouterr()
    assert main([*args, "--out", str(hf)]) == 1
    one_line_error(capsys.readouterr().err, "already holds a run", "--resume", "--overwrite")
    old = find_checkpoint(hf)
    assert main([*args, "--out", str(hf), "--overwrite", "--max-steps", "1"]) == 0  # a fresh start: old run gone
    assert not old.exists() and find_checkpoint(hf).name == "ckpt-000001"


def commands_with_out(story: Path, tmp_path: Path) -> list[list[str]]:
    """Each command that writes a run folder, without its --out (the fine-tunings' data is missing: an --out
    problem must be found before the data is read)."""
    return [
        ["train", "--data", str(story), *TINY],
        ["finetune-classifier", "--data", str(tmp_path / "no-such-file"), "--preset", "tiny"],
        ["finetune-instruct", "--data", str(tmp_path / "no-such-file"), "--preset", "tiny"],
    ]


def test_out_paths_are_checked_before_any_work(tmp_path, story, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out, expected in [(a_file, "exists and is not a folder"), (a_file / "run", "is a file, not a folder")]:
        for command in commands_with_out(story, tmp_path):
            assert main([*command, "--out", str(out)]) == 1
            one_line_error(capsys.readouterr().err, "--out", expected)  # the output, not the missing data
    assert a_file.read_text() == "mine"
    # a failure after the folder was created removes the folder it created, and only that
    assert (
        main(
            [
                "finetune-classifier",
                "--data",
                str(tmp_path / "no-such-file"),
                "--out",
                str(tmp_path / "new"),
                "--preset",
                "tiny",
            ]
        )
        == 1
    )
    assert "no-such-file" in capsys.readouterr().err and not (tmp_path / "new").exists()
    # finetune outputs obey the same rule as train's: another folder is refused unless --overwrite
    assert main(["finetune-classifier", "--out", str(tmp_path), "--preset", "tiny"]) == 1
    one_line_error(capsys.readouterr().err, "--out", "not empty", "--overwrite")


def test_an_out_inside_a_folder_one_cannot_write_is_refused_before_any_work(tmp_path, story, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root, who may write into any folder, so no folder is unwritable here (CI runs as root)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for command in commands_with_out(story, tmp_path):
            assert main([*command, "--out", str(locked / "run")]) == 1
            one_line_error(capsys.readouterr().err, "--out", "not writable")
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_sample_prompt_and_seed_are_checked_before_training(tmp_path, story):
    result = run_cli("train", "--data", story, "--out", tmp_path / "a", "--sample-prompt", "Zürich", *TINY)
    one_line_error(result.stderr, "--sample-prompt", "Zürich")
    assert not (tmp_path / "a").exists()  # stopped before the run wrote anything
    one_line_error(run_cli("train", "--seed", "-1").stderr, "--seed", ">= 0")
    one_line_error(run_cli("generate", "--checkpoint", "x", "--prompt", "y", "--seed", "-1").stderr, "--seed")


@pytest.mark.slow
def test_a_second_run_is_refused_and_sigterm_saves_a_complete_checkpoint(tmp_path, story, capsys):
    out = tmp_path / "run"
    command, options = cli(
        "train", "--data", story, "--out", out, "--max-steps", "100000", "--eval-interval", "2", *TINY
    )
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "latest").is_file():  # its first checkpoint: it is training
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child run wrote no checkpoint"
            time.sleep(0.05)
        # the second run: refused at once, naming the first one's pid; nothing of the first run is touched
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert main(["train", "--data", str(story), "--out", str(out), *TINY, *extra]) == 1
            one_line_error(capsys.readouterr().err, f"{out} is in use by process {child.pid}")
        child.send_signal(signal.SIGTERM)
        for _ in range(5):  # impatient repeats while it saves are ignored
            time.sleep(0.02)
            child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # signals pending together are run in signal-number order (SIGINT first): either may be the one that stops it
    assert child.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT), stderr
    assert "Traceback" not in stderr
    said = [line for line in (stdout + stderr).splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("interrupted: saved step "), said  # one line, as the README says
    checkpoint = load_checkpoint(out)  # complete, and the newest one
    assert checkpoint.step >= 2 and json.loads((out / "config.json").read_text())["vocab_size"] > 0
    assert leftovers(out) == [] and not (out / run_folder.LOCK).exists()
    # resumable from there, and the lock is free again
    assert (
        main(
            [
                "train",
                "--data",
                str(story),
                "--out",
                str(out),
                "--resume",
                "--max-steps",
                str(checkpoint.step + 1),
                *TINY,
            ]
        )
        == 0
    )


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / run_folder.LOCK).write_text(f"{dead.pid}\n")
    messages = []
    with run_folder.lock(tmp_path, log=messages.append):
        assert (tmp_path / run_folder.LOCK).read_text().strip() == str(os.getpid())
        with run_folder.lock(tmp_path):  # re-entrant in one process (the CLI, then Trainer.fit)
            pass
        assert (tmp_path / run_folder.LOCK).exists()
    assert messages == [f"{tmp_path}: taking over the lock of process {dead.pid}, which is no longer running"]
    assert not (tmp_path / run_folder.LOCK).exists()


@pytest.mark.slow
def test_signals_during_a_save_wait_for_it(tmp_path, monkeypatch):
    """Deterministic: signals delivered inside the checkpoint writer itself."""
    from test_train import make_trainer

    from tinygrad_llm.train import trainer as trainer_module

    real_save = trainer_module.save_checkpoint
    state = {"saves": 0}

    def save_while_signalled(*args, **kwargs):
        state["saves"] += 1
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-save: noted, the save goes on
        path = real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return path

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_while_signalled)
    trainer = make_trainer(tmp_path, max_steps=12, eval_interval=4)
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert stopped.value.signum == signal.SIGTERM  # the first signal wins
    assert state["saves"] == 1 and trainer.step == 4  # stopped right after the checkpoint it protected
    assert load_checkpoint(tmp_path).step == 4 and leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    # Ctrl-C mid-step: the interrupt's own save ignores further signals and completes
    resumed = make_trainer(tmp_path, max_steps=12, eval_interval=4)
    resumed.load_state()
    real_step = resumed.train_step

    def step_then_ctrl_c():
        loss = real_step()
        if resumed.step == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(resumed, "train_step", step_then_ctrl_c)
    with pytest.raises(Interrupted) as stopped:
        resumed.fit()
    assert stopped.value.signum == signal.SIGINT and state["saves"] == 2
    assert load_checkpoint(tmp_path).step == 6 and leftovers(tmp_path) == []


def _limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # smaller than the tiny model's weights


@pytest.mark.slow
def test_disk_full_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, story):
    out = tmp_path / "run"
    args = ["train", "--data", story, "--out", out, "--eval-interval", "2", *TINY]
    assert run_cli(*args, "--max-steps", "2").returncode == 0
    before = {p: p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()}
    result = run_cli(*args, "--max-steps", "4", "--resume", preexec_fn=_limit_file_size)
    last = one_line_error(result.stderr, "saving step", "File too large", str(out), "last complete checkpoint")
    assert "model.safetensors" in last or "optimizer.safetensors" in last
    assert leftovers(tmp_path) == [] and not (out / run_folder.LOCK).exists()
    assert {p: p.read_bytes() for p in (out / "checkpoints").rglob("*") if p.is_file()} == before
    assert load_checkpoint(out).step == 2
    # the same limit on a fresh run: no half-written checkpoint folder either
    result = run_cli(
        "train", "--data", story, "--out", tmp_path / "fresh", "--max-steps", "2", *TINY, preexec_fn=_limit_file_size
    )
    one_line_error(result.stderr, "File too large")
    assert leftovers(tmp_path) == []
    assert not list((tmp_path / "fresh" / "checkpoints").glob("ckpt-*"))


def test_concurrent_trainers_on_one_folder_in_python(tmp_path):
    """The API keeps the rule too: Trainer.fit refuses someone else's folder and a locked one."""
    from test_train import make_trainer

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(run_folder.RunFolderError, match="not a tinygrad-llm run"):
        make_trainer(tmp_path, max_steps=2).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from tinygrad_llm import run_folder\n"
                f"with run_folder.lock({str(empty)!r}):\n    print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_folder.RunFolderError, match=f"in use by process {holder.pid}"):
            make_trainer(empty, max_steps=2).fit()
    finally:
        holder.kill()
        holder.wait()
    assert np.isfinite(make_trainer(empty, max_steps=2, eval_interval=2).fit()[-1]["val_loss"])  # its lock was stale


def test_the_lock_never_writes_through_a_link_or_into_a_file_not_ours(tmp_path, story, capsys):
    run = tmp_path / "run"
    args = ["train", "--data", str(story), "--max-steps", "1", "--eval-interval", "1", "--out", str(run), *TINY]
    assert main(args) == 0
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes\n")
    (run / run_folder.LOCK).symlink_to(mine)
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "2"]) == 1
    one_line_error(capsys.readouterr().err, str(run / run_folder.LOCK), "symbolic link")
    assert mine.read_text() == "my notes\n" and (run / run_folder.LOCK).is_symlink()

    (run / run_folder.LOCK).unlink()
    os.link(mine, run / run_folder.LOCK)  # a hard link: writing the pid would change the user's file too
    with pytest.raises(ValueError, match="hard link"):
        with run_folder.lock(run):
            pass
    (run / run_folder.LOCK).unlink()
    (run / run_folder.LOCK).write_text("not a pid, someone's text\n")
    with pytest.raises(run_folder.RunFolderError, match="not a lock file"):
        with run_folder.lock(run):
            pass
    assert (run / run_folder.LOCK).read_text() == "not a pid, someone's text\n"
    (run / run_folder.LOCK).unlink()
    os.mkfifo(run / run_folder.LOCK)
    with pytest.raises(ValueError, match="not a regular file"):
        with run_folder.lock(run):
            pass
    assert mine.read_text() == "my notes\n"


def test_a_run_that_failed_before_saving_is_used_again_and_hints_quote_paths(tmp_path, story, monkeypatch, capsys):
    import shlex

    from tinygrad_llm.train import trainer

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    run = tmp_path / "my runs" / "first try"  # a space: the hints must quote it
    args = ["train", "--data", str(story), "--max-steps", "1", "--eval-interval", "1", "--out", str(run), *TINY]
    monkeypatch.setattr(trainer, "calc_loss_batch", out_of_memory)  # fails at step 1, as a too-big batch does
    assert main(args) == 1
    one_line_error(capsys.readouterr().err, "out of memory")
    assert run_folder.is_run_folder(run) and not run_folder.holds_results(run)  # half made: marked, nothing saved
    monkeypatch.undo()
    assert main(args) == 0  # the corrected rerun needs no --overwrite
    err = capsys.readouterr().err
    hint = next(line for line in err.splitlines() if line.startswith("next: "))
    assert shlex.split(hint.removeprefix("next: "))[:4] == ["tinygrad-llm", "generate", "--checkpoint", str(run)]
    assert run_folder.holds_results(run) and find_checkpoint(run).name == "ckpt-000001"
    assert main(args) == 1  # now it holds a run: refused as before
    one_line_error(capsys.readouterr().err, "already holds a run", "--resume", "--overwrite")
    # the fine-tuning commands share the rule (run_folder.claim): a folder with only the marker is reused
    empty = tmp_path / "finetuned"
    empty.mkdir()
    run_folder.mark(empty, "finetune-classifier")
    (empty / "tokenizer.json").write_text("{}")
    with run_folder.claim(empty, "finetune-instruct"):
        pass
    (empty / "finetune.json").write_text("{}")
    with pytest.raises(run_folder.RunFolderError, match="already holds a run"):
        with run_folder.claim(empty, "finetune-instruct"):
            pass
