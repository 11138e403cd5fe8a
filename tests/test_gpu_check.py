"""benchmarks/gpu_check.py's logic that needs no GPU: arguments, the time budget, a part's child process
under its timeout, the exit status, the "no CUDA GPU" exit and the section it writes to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import load_script

from tinygrad_llm import backend

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    return load_script(PATH, "gpu_check")


def test_parts_are_chosen_in_order_and_a_wrong_letter_is_a_clear_error(gpu_check, capsys):
    assert gpu_check.parse_args([]).parts == list("abcdef")
    assert gpu_check.parse_args(["--parts", "d,a,d"]).parts == ["a", "d"]
    with pytest.raises(SystemExit) as exit_:
        gpu_check.parse_args(["--parts", "a,z"])
    assert exit_.value.code == 2 and "expected letters among a,b,c,d,e,f, got 'a,z'" in capsys.readouterr().err


def test_the_timeouts_fit_the_budget(gpu_check):
    every = list(gpu_check.PARTS)
    planned = gpu_check.timeouts(every, gpu_check.BUDGET_S)
    assert sum(planned.values()) <= gpu_check.BUDGET_S < 8 * 60  # under 8 minutes, every part bounded
    assert all(t > 0 for t in planned.values())
    squeezed = gpu_check.timeouts(every, 100)
    assert sum(squeezed.values()) == pytest.approx(100)
    assert gpu_check.timeouts(["a"], 1000) == {"a": gpu_check.PARTS["a"][1]}  # never more than its own


def _child(code: str) -> list[str]:
    """A stand-in for a part's child process: ``code`` runs with the result file as sys.argv[1]."""
    return [sys.executable, "-c", code]


def test_a_part_that_finishes_reports_its_result(gpu_check):
    code = "import json, sys; print('working'); json.dump({'ok': True, 'summary': 'fine'}, open(sys.argv[1], 'w'))"
    result = gpu_check.run_part("a", _child(code), timeout=60)
    assert result["ok"] and result["summary"] == "fine" and "working" in result["output"]


def test_a_part_that_crashes_fails_with_its_last_line(gpu_check):
    result = gpu_check.run_part("b", _child("raise SystemExit('cuBLAS said no')"), timeout=60)
    assert not result["ok"] and result["summary"] == "crashed (exit status 1): cuBLAS said no"


def test_a_part_past_its_timeout_is_killed_with_what_it_started(gpu_check, tmp_path):
    """The child starts a grandchild (as mpiexec or pytest would) and hangs: both are gone after the timeout."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    start = time.monotonic()
    result = gpu_check.run_part("e", _child(code), timeout=5)
    assert time.monotonic() - start < 60
    assert not result["ok"] and result["summary"] == "timed out after 5 s (killed)"
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # the kill is immediate; its reaping by init may take a moment
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the grandchild {grandchild} outlived the timeout")


def test_only_parts_a_to_e_decide_the_exit_status(gpu_check):
    passed = {"ok": True, "summary": "", "seconds": 1.0}
    failed = {"ok": False, "summary": "", "seconds": 1.0}
    assert gpu_check.exit_status({p: passed for p in "abcde"} | {"f": failed}) == 0
    assert gpu_check.exit_status({"a": passed, "c": failed}) == 1


def test_without_a_gpu_it_says_so_and_exits_2(gpu_check, monkeypatch, capsys):
    if not backend.cuda_available():  # the real check, on this machine
        assert "no NVIDIA GPU" in gpu_check.no_gpu_reason() or "CuPy" in gpu_check.no_gpu_reason()
    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: "device 'cuda': no driver")
    monkeypatch.setattr(gpu_check, "run_part", lambda *a: pytest.fail("a part ran without a GPU"))
    assert gpu_check.main(["--no-write"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: no CUDA GPU: nothing was checked") and "no driver" in err


def test_a_run_prints_one_line_per_part_and_appends_its_section(gpu_check, monkeypatch, tmp_path, capsys):
    results_file = tmp_path / "RESULTS.md"
    results_file.write_text("# Results\n\nearlier runs\n", encoding="utf-8")
    outcomes = {"a": True, "b": False, "c": True, "f": False}
    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: None)
    monkeypatch.setattr(gpu_check, "describe_machine", lambda: ("Stand-in GPU", "cupy 14, torch 2"))
    limits = {}

    def fake_run_part(name, command, timeout):
        limits[name] = timeout
        assert command[-2:] == [name, "--result-file"]
        return {"ok": outcomes[name], "summary": f"{name} | details", "seconds": 2.0, "output": "last words"}

    monkeypatch.setattr(gpu_check, "run_part", fake_run_part)
    status = gpu_check.main(["--parts", "a,b,c,f", "--results", str(results_file)])
    assert status == 1  # b failed
    lines = [line for line in capsys.readouterr().out.splitlines() if line[:3] in ("a. ", "b. ", "c. ", "f. ")]
    assert [line[:8] for line in lines] == ["a. PASS ", "b. FAIL ", "c. PASS ", "f. INFO "], lines
    assert limits["f"] > limits["a"]  # f takes the time the others left
    text = results_file.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nearlier runs\n\n## GPU check, ") and "Stand-in GPU" in text
    assert "| b | gpt2-small fp32 step against PyTorch | FAIL | 2 s | b / details |" in text  # | kept out
    assert "exit status 1" in text
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]  # no temporary file left behind


def test_the_section_names_date_and_device(gpu_check):
    when = datetime.datetime(2026, 12, 7, 18, 30, tzinfo=datetime.timezone.utc)
    text = gpu_check.section({"d": {"ok": True, "summary": "same tokens", "seconds": 3.0}}, "H100", "v", 60.0, when)
    assert text.startswith("## GPU check, 2026-12-07 18:30 UTC, H100\n")
    assert "| d | KV-cache generation, GPU tokens = CPU tokens | PASS | 3 s | same tokens |" in text


def test_the_cuda_tests_pass_only_if_none_skipped_for_want_of_a_gpu(monkeypatch):
    monkeypatch.syspath_prepend(str(PATH.parent))  # for this test only: benchmarks/ would shadow packages
    from _gpu_parts import tests_passed

    summary = "40 passed, 1 skipped in 61.2s"
    assert tests_passed(0, ["....", "SKIPPED [1] tests/test_pretrained.py:50: transformers is not installed", summary])
    assert not tests_passed(0, ["SKIPPED [3] tests/test_cuda.py:116: needs CuPy and a CUDA GPU", summary])
    assert not tests_passed(0, ["SKIPPED [1] tests/test_kernels.py:9: no GPU seen", summary])
    assert not tests_passed(1, ["FAILED tests/test_cuda.py::test_gradcheck_on_cuda - AssertionError", "1 failed"])
    assert not tests_passed(5, ["no tests ran in 0.1s"])
    assert not tests_passed(0, ["41 deselected in 0.2s"])
