"""Files a command writes where the user says: never through a link, never over a file that is not ours
unless asked (``plot --out``), and strict JSON (no NaN) in every JSON file we write."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tinygrad_llm import files, run_folder
from tinygrad_llm.cli import main


def one_line_error(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, (fragment, stderr)
    return last


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""

    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def run(tmp_path):
    """A run folder with a log of three evaluations (no training needed to draw it)."""
    folder = tmp_path / "run"
    folder.mkdir()
    run_folder.mark(folder, "train")
    records = [
        {"step": s, "tokens_seen": 64 * s, "train_loss": 3.0 / s, "val_loss": 3.2 / s, "lr": 1e-3, "elapsed_s": s}
        for s in (1, 2, 3)
    ]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_plot_never_overwrites_a_file_that_is_not_its_figure(run, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib")
    log = (run / "log.jsonl").read_bytes()
    assert main(["plot", str(run), "--out", str(run / "log.jsonl")]) == 1
    one_line_error(capsys.readouterr().err, "--out", "log.jsonl", ".png, .pdf, .svg")
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.jpg")]) == 1
    one_line_error(capsys.readouterr().err, "--out", "curves.jpg", ".png")
    assert (run / "log.jsonl").read_bytes() == log and not (tmp_path / "curves.jpg").exists()

    theirs = tmp_path / "holiday.png"
    theirs.write_bytes(b"\x89PNG\r\n\x1a\n someone's photo")
    assert main(["plot", str(run), "--out", str(theirs)]) == 1
    one_line_error(capsys.readouterr().err, "--out", "holiday.png", "already exists", "--overwrite")
    assert theirs.read_bytes() == b"\x89PNG\r\n\x1a\n someone's photo"
    link = tmp_path / "link.png"
    link.symlink_to(theirs)
    for extra in ([], ["--overwrite"]):
        assert main(["plot", str(run), "--out", str(link), *extra]) == 1
        one_line_error(capsys.readouterr().err, "--out", "link.png", "symbolic link")
    assert theirs.read_bytes() == b"\x89PNG\r\n\x1a\n someone's photo"
    assert main(["plot", str(run), "--out", str(theirs), "--overwrite"]) == 0  # asked for
    assert theirs.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"someone" not in theirs.read_bytes()

    for name in ("curves.svg", "curves.pdf", "curves.png"):  # our own figure is drawn again without asking
        for _ in range(2):
            assert main(["plot", str(run), "--out", str(tmp_path / name)]) == 0
        assert files_is_figure(tmp_path / name)
    (run / "losses.png").write_bytes(b"\x89PNG\r\n\x1a\n an older run's figure, before the marker")
    assert main(["plot", str(run)]) == 0  # the run's own losses.png is what plot redraws
    assert files_is_figure(run / "losses.png")


def files_is_figure(path) -> bool:
    from tinygrad_llm.train.plot import is_own_figure

    return is_own_figure(path)


def test_write_file_refuses_links_folders_and_files_not_ours(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    (tmp_path / "link.txt").symlink_to(mine)
    (tmp_path / "folder.txt").mkdir()
    for name, expected in (("link.txt", "symbolic link"), ("folder.txt", "not a regular file"), ("mine.txt", "exists")):
        with pytest.raises(files.UnsafeFileError, match=expected):
            with files.write_file(tmp_path / name, "w", flag="--report") as f:
                f.write("x")
    assert mine.read_text() == "mine"
    with files.write_file(mine, "w", owned=lambda path: path.read_text() == "mine") as f:
        f.write("ours after all")
    assert mine.read_text() == "ours after all"
    with pytest.raises(files.UnsafeFileError, match=r"--out .*report\.txt: expected a file name ending in \.json"):
        files.check_output_file(tmp_path / "report.txt", suffixes=(".json",))


def test_json_is_strict_a_non_finite_number_is_null(tmp_path):
    value = {"loss": math.nan, "curve": [1.5, math.inf, -math.inf], "f32": np.float32("nan"), "n": np.int64(3)}
    assert strict_loads(files.json_text(value)) == {"loss": None, "curve": [1.5, None, None], "f32": None, "n": 3}
    files.write_json(tmp_path / "metrics.json", {"val_loss": math.nan, "accuracy": 0.5})
    assert strict_loads((tmp_path / "metrics.json").read_text()) == {"val_loss": None, "accuracy": 0.5}


def test_a_nan_evaluation_gives_valid_json_in_the_log_and_the_checkpoint(tmp_path, monkeypatch, capsys):
    from tinygrad_llm.checkpoint import TRAINER_JSON, find_checkpoint
    from tinygrad_llm.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "evaluate", lambda self: (math.nan, math.inf))  # say a fp16 overflow
    story = tmp_path / "story.txt"
    story.write_text("the cat sat on the mat. the dog sat on the log. " * 40)
    args = ["train", "--data", str(story), "--out", str(tmp_path / "run"), "--preset", "tiny", "--context-length"]
    assert main([*args, "8", "--batch-size", "2", "--max-steps", "1", "--sample-tokens", "2"]) == 0
    records = [strict_loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[0]["train_loss"] is None and records[0]["val_loss"] is None
    state = strict_loads((find_checkpoint(tmp_path / "run") / TRAINER_JSON).read_text())
    assert state["history"][0]["val_loss"] is None
    # a resumed run reads the nulls back and carries on
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--max-steps", "2", "--sample-tokens", "2"]) == 0
    assert "done: step 2, train loss nan, val loss inf" in capsys.readouterr().err
    assert [strict_loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_bpe_vocabulary_a_small_text_cannot_fill_is_a_one_line_note():
    import warnings

    from tinygrad_llm.train.run import build_tokenizer

    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw Python warning (with its source line) would fail here
        tokenizer = build_tokenizer("bpe", "the cat sat on the mat. " * 4, 1024, log=notes.append)
    assert tokenizer.n_vocab < 1024
    assert notes[-1].startswith("note: ") and f"{tokenizer.n_vocab}" in notes[-1] and "--vocab-size 1024" in notes[-1]
