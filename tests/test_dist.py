"""Data-parallel training (tinygrad_llm.dist): two processes under ``mpiexec -n 2`` against one process.

The MPI tests launch ``mpiexec -n 2 python tests/mpi_worker.py ...`` themselves, each under a hard timeout
(the whole process group is killed when it runs out), so the default ``python -m pytest`` runs them where
mpiexec and mpi4py are installed (``pip install -e ".[mpi]"``) and skips them with the reason where not.
CI sets TINYGRAD_LLM_REQUIRE_MPI=1, which turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygrad_llm import dist
from tinygrad_llm.dist.comm import SingleProcess
from tinygrad_llm.dist.launch import describe_processes
from tinygrad_llm.train.parallel import local_rows
from tinygrad_llm.train.trainer import TrainingError

sys.path.insert(0, str(Path(__file__).parent))
import mpi_worker

WORKER = Path(__file__).parent / "mpi_worker.py"
TIMEOUT_S = 240  # per mpiexec: generous on a busy 2-core machine, and a hang can never outlive it


def find_mpiexec() -> str | None:
    candidates = [os.environ.get("MPIEXEC"), str(Path(sys.executable).parent / "mpiexec"), shutil.which("mpiexec")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="session")
def mpiexec() -> str:
    """The mpiexec to launch with, after checking that mpi4py loads; otherwise a skip with the reason (a
    failure where TINYGRAD_LLM_REQUIRE_MPI=1, as in CI)."""
    reason, path = None, find_mpiexec()
    if path is None:
        reason = 'mpiexec not found (pip install -e ".[mpi]", or set MPIEXEC)'
    else:
        probe = subprocess.run(
            [sys.executable, "-c", "from mpi4py import MPI"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode:
            reason = f"mpi4py does not load: {(probe.stderr.strip().splitlines() or ['?'])[-1]}"
    if reason and os.environ.get("TINYGRAD_LLM_REQUIRE_MPI") == "1":
        pytest.fail(f"TINYGRAD_LLM_REQUIRE_MPI=1 but {reason}")
    if reason:
        pytest.skip(reason)
    return path


def run_mpiexec(mpiexec: str, *args, n: int = 2) -> tuple[subprocess.CompletedProcess, float]:
    """``mpiexec -n N python tests/mpi_worker.py ARGS``, killed with all its processes after TIMEOUT_S."""
    command = [mpiexec, "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TINYGRAD_LLM_DEBUG": ""},
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec hung: killed after {TIMEOUT_S}s\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err), time.monotonic() - started


@pytest.fixture(scope="module")
def two_process_run(mpiexec, tmp_path_factory):
    """One ``mpiexec -n 2`` job: 20 steps (bitwise checks each step), ZeRO, an interrupted and resumed run."""
    out = tmp_path_factory.mktemp("dist")
    result, _ = run_mpiexec(mpiexec, "train", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(two_process_run, tmp_path):
    out, result = two_process_run
    single = mpi_worker.make_trainer(tmp_path, SingleProcess(), batch_size=2 * mpi_worker.BATCH)
    losses = [single.train_step() for _ in range(mpi_worker.STEPS)]
    # the same windows and updates; only the order of float32 sums differs (measured: a few ulps)
    np.testing.assert_allclose(result["losses"], losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "params.npy"), mpi_worker.flat_parameters(single), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["eval"], single.evaluate(), rtol=1e-5)


@pytest.mark.slow
def test_every_process_holds_bitwise_the_same_parameters_after_every_step(two_process_run):
    _, result = two_process_run
    assert result["equal_at_start"]  # rank 1 initialised with another seed: rank 0's parameters were broadcast
    assert result["equal_each_step"] == [True] * mpi_worker.STEPS


@pytest.mark.slow
def test_only_process_0_writes(two_process_run):
    out, _ = two_process_run
    assert (out / "rank0" / "checkpoints").is_dir()
    assert not (out / "rank1").exists()


@pytest.mark.slow
def test_resume_under_mpi_continues_identically_and_zero_updates_the_same(two_process_run):
    _, result = two_process_run
    assert result["resumed_from"] == mpi_worker.STEPS // 2
    assert result["resume_equal"] and result["resume_equal_on_all"]  # bitwise, resumed with ZeRO on
    assert result["zero_max_abs_diff"] == 0.0  # ZeRO-1: the same elementwise AdamW, on slices
    assert result["zero_moment_bytes"] * 2 == result["full_moment_bytes"]  # each of 2 keeps half


@pytest.mark.slow
def test_resuming_with_another_process_count_says_how(two_process_run):
    out, _ = two_process_run
    trainer = mpi_worker.make_trainer(out / "resumed", SingleProcess())
    with pytest.raises(TrainingError, match=r"trained on 2 process\(es\).*mpiexec -n 2"):
        trainer.load_state()


@pytest.mark.slow
def test_a_process_that_raises_stops_the_job_naming_it(mpiexec, tmp_path):
    result, elapsed = run_mpiexec(mpiexec, "raise", tmp_path)
    assert result.returncode != 0
    assert "error on process 1 of 2: injected failure" in result.stderr
    starts = [line for line in result.stderr.splitlines() if line.startswith("training ")]
    assert len(starts) == 1, result.stderr  # process 0 alone prints
    assert "2 processes (MPI" in result.stderr


@pytest.mark.slow
def test_a_process_that_dies_stops_the_job(mpiexec, tmp_path):
    result, elapsed = run_mpiexec(mpiexec, "die", tmp_path)
    assert result.returncode != 0
    printed = result.stdout + result.stderr
    assert "signal 9" in printed, printed
    pids = [int(p) for p in result.stderr.split("pids ")[1].split()[:2]]  # the starting line: each rank's pid
    # mpiexec names the first process it saw end: the killed rank 1, or rank 0 when it noticed its partner gone
    # first (seen on a loaded CI machine); either way the starting line maps that PID to its rank
    reported = int(printed.split("PID ")[1].split()[0])
    assert reported in pids, (reported, pids)
    for pid in pids:  # no process is left waiting for its dead partner
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_ctrl_c_stops_every_process_at_one_step_and_saves_it(mpiexec, tmp_path):
    """mpiexec forwards Ctrl-C to every process; they agree after a step to stop there, process 0 saves."""
    out = tmp_path / "run"
    command = [
        mpiexec,
        "-n",
        "2",
        sys.executable,
        str(WORKER),
        "cli",
        "train",
        "--preset",
        "tiny",
        "--max-steps",
        "100000",
        "--batch-size",
        "2",
        "--context-length",
        "16",
        "--eval-interval",
        "5",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "checkpoints" / "latest").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C at the terminal sends mpiexec
        out_text, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("Ctrl-C under mpiexec did not end the job within 60 s")
    assert proc.returncode == 130, err[-3000:]
    said = (out_text + err).split("interrupted: saved step ")
    assert len(said) == 2, out_text + err  # process 0 alone says it
    saved = int(said[1].split()[0])
    assert (out / "checkpoints" / f"ckpt-{saved:06d}").is_dir()
    # the hint names the launcher, since the run resumes only with the same number of processes
    assert f"continue with: mpiexec -n 2 tinygrad-llm train --out {out} --resume" in out_text + err


@pytest.mark.slow
def test_bad_input_under_mpiexec_is_said_once(mpiexec, tmp_path):
    """Every process meets the same refusal (a run already in --out): one line, not MPICH's Abort as well."""
    from tinygrad_llm.cli import main

    tiny = ["--preset", "tiny", "--max-steps", "1", "--context-length", "16", "--eval-iters", "1"]
    assert main(["train", *tiny, "--out", str(tmp_path / "run")]) == 0
    command = [mpiexec, "-n", "2", sys.executable, str(WORKER), "cli", "train", *tiny, "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode != 0
    said = (result.stdout + result.stderr).strip().splitlines()
    assert len(said) == 1 and "already holds a run" in said[0], said


@pytest.mark.slow
def test_finetune_classifier_on_two_processes_equals_one_with_twice_the_batch(mpiexec, tmp_path):
    from tinygrad_llm.cli import main

    rng = np.random.default_rng(0)
    words = {"spam": "win free prize call now cash".split(), "ham": "hi see you at lunch ok".split()}
    lines = [f"{label}\t{' '.join(rng.choice(words[label], rng.integers(3, 9)))}" for label in ("spam", "ham") * 40]
    (tmp_path / "sms.txt").write_text("\n".join(lines) + "\n")
    common = [
        "finetune-classifier",
        "--data",
        str(tmp_path / "sms.txt"),
        "--preset",
        "tiny",
        "--tokenizer",
        "byte",
        "--epochs",
        "2",
        "--eval-freq",
        "3",
        "--eval-iter",
        "2",
        "--seed",
        "1",
        "--dropout",
        "0",
    ]  # every process draws the same dropout stream (README): equal only without it
    result, _ = run_mpiexec(mpiexec, "cli", *common, "--batch-size", "4", "--out", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    assert main([*common, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("two", "one"))
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy", "test_accuracy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    assert two["batch_size"] == 4 and "2 processes (MPI" in result.stderr


@pytest.mark.slow
def test_train_zero_from_the_command_line_shards_the_moments_and_trains_the_same(mpiexec, tmp_path):
    """``mpiexec -n 2 tinygrad-llm train --zero``: the optimizer the run trains with keeps half of AdamW's
    moments on each process (said once, with the sizes), and its weights and saved AdamW state after three steps
    equal the same run's without --zero (ZeRO-1 is the same elementwise update, on slices)."""
    from tinygrad_llm.checkpoint import load_checkpoint
    from tinygrad_llm.model import GPTConfig, format_bytes

    tiny = ["train", "--preset", "tiny", "--max-steps", "3", "--context-length", "16", "--eval-iters", "1"]
    zero, _ = run_mpiexec(mpiexec, "cli", *tiny, "--zero", "--out", tmp_path / "zero")
    plain, _ = run_mpiexec(mpiexec, "cli", *tiny, "--out", tmp_path / "plain")
    assert zero.returncode == 0 and plain.returncode == 0, zero.stderr[-3000:] + plain.stderr[-3000:]
    saved = load_checkpoint(tmp_path / "zero")
    parameters = sum(a.size for a in saved.model_state.values() if a.dtype == np.float32)
    whole = 2 * 4 * GPTConfig.from_dict(saved.config).num_parameters()
    assert whole == 2 * 4 * parameters  # every parameter trains, float32: its two moments
    said = [line for line in zero.stderr.splitlines() if line.startswith("ZeRO-1")]
    assert said == [
        f"ZeRO-1: each of the 2 processes keeps {format_bytes(whole // 2)} of AdamW's moments instead of "
        f"{format_bytes(whole)}"
    ]
    assert "ZeRO-1" not in plain.stderr
    other = load_checkpoint(tmp_path / "plain")
    for name, array in saved.model_state.items():
        np.testing.assert_array_equal(array, other.model_state[name], err_msg=name)
    for index, state in saved.optimizer_state["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(value, other.optimizer_state["state"][index][key], err_msg=key)


def test_info_shows_what_zero_saves_per_process(capsys):
    from tinygrad_llm.cli import main
    from tinygrad_llm.model import GPTConfig, estimate_memory, format_bytes

    assert main(["info", "--preset", "tiny", "--processes", "4", "--batch-size", "2"]) == 0
    moments = estimate_memory(GPTConfig.preset("tiny"), 2, None)["optimizer"]
    out = capsys.readouterr().out
    assert "data-parallel over 4 processes" in out
    assert f"AdamW moments {format_bytes(moments // 4)} instead of {format_bytes(moments)}" in out
    assert f"saving {format_bytes(moments - moments // 4)} per process" in out


def test_one_process_without_mpiexec_is_the_plain_loop():
    comm = SingleProcess()
    batch = np.arange(12).reshape(6, 2)
    assert local_rows(batch, comm) is not None and np.array_equal(local_rows(batch, comm), batch)
    flat = np.ones(4, np.float32)
    assert comm.allreduce_(flat) is flat and comm.sum(2.5) == 2.5


def test_rows_are_shared_disjointly_even_for_a_short_batch():
    class Rank:
        def __init__(self, rank, world):
            self.rank, self.world_size = rank, world

    for n in (8, 5, 1):
        batch = np.arange(n)
        parts = [local_rows(batch, Rank(r, 3)) for r in range(3)]
        assert np.array_equal(np.concatenate(parts), batch)


def test_launch_without_mpiexec_is_one_process_without_a_note(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "TINYGRAD_LLM_DIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(dist.launch, "_current", None)
    comm = dist.init()
    assert comm.world_size == 1 and comm.rank == 0
    assert comm.note is None  # the usual run, with or without mpi4py installed: nothing to explain
    assert describe_processes(comm, 12) == ", batch 12"
    monkeypatch.setattr(dist.launch, "_current", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    comm = dist.init()
    assert comm.world_size == 1 and "mpi4py is not installed" in comm.note and comm.launcher_rank == 1


def test_nccl_under_mpiexec_on_two_gpus(mpiexec, tmp_path):
    from tinygrad_llm import backend

    if not backend.cuda_available():
        pytest.skip("no CUDA GPU with CuPy here: the NCCL communicator needs 2 GPUs under mpiexec -n 2")
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("cupy.cuda.nccl", reason="CuPy was built without NCCL")
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU: NCCL needs a GPU per process (mpiexec -n 2 needs 2 GPUs)")
    result, _ = run_mpiexec(mpiexec, "nccl", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "nccl.ok").is_file()


@pytest.mark.parametrize("form", ["bytes", "tuple"])
def test_nccl_unique_id_reaches_every_process_in_cupys_form(mpiexec, tmp_path, form):
    """CuPy 14's get_unique_id returns bytes, 13's a tuple of C chars (negative above 127): either way rank 1
    gets rank 0's id, in the form its NcclCommunicator takes (stand-ins for CuPy, tests/mpi_worker.py)."""
    result, _ = run_mpiexec(mpiexec, "nccl-id", tmp_path, form)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"id-rank{r}.json").read_text()) for r in (0, 1)]
    generated = ranks[0]["generated"]
    assert len(generated) == 128 and any(b > 127 or b < 0 for b in generated)
    for rank, got in enumerate(ranks):
        assert got["type"] == form and got["id"] == generated, (rank, got)
        assert (got["ndev"], got["rank"]) == (2, rank)
    assert [got["get_unique_id_calls"] for got in ranks] == [1, 0]  # rank 0 alone asks NCCL for an id
