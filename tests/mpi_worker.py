"""Run by tests/test_dist.py under ``mpiexec -n 2``: data-parallel training checked from inside the job.

mpiexec -n 2 python tests/mpi_worker.py train OUT    # 20 steps, bitwise checks, ZeRO, resume -> OUT/result.json
mpiexec -n 2 python tests/mpi_worker.py raise OUT    # the CLI with rank 1 raising at step 3
mpiexec -n 2 python tests/mpi_worker.py die OUT      # rank 1 killed at step 3
mpiexec -n 2 python tests/mpi_worker.py cli ARGS...  # tinygrad-llm ARGS...
mpiexec -n 2 python tests/mpi_worker.py nccl OUT     # NCCL collectives on 2 GPUs, then 5 steps on CUDA
mpiexec -n 2 python tests/mpi_worker.py nccl-id OUT FORM  # NCCL's unique id from rank 0 to rank 1, no GPU:
                                                     # stand-ins for CuPy whose get_unique_id returns FORM
                                                     # (bytes: CuPy 14; tuple: CuPy 13) -> OUT/id-rankR.json
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import dist
from tinygrad_llm.data import GPTDataset
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.train.trainer import TrainConfig, Trainer

CONFIG = GPTConfig(vocab_size=32, context_length=8, emb_dim=16, n_heads=2, n_layers=2, drop_rate=0.0)
STEPS, BATCH = 20, 4  # per process; tests/test_dist.py runs one process with 2 * BATCH


def make_trainer(out, comm, batch_size=BATCH, zero=False, init_seed=0, device="cpu") -> Trainer:
    """A small model on a repeating pattern with noise (tests/test_train.py's), dropout off."""
    tl.manual_seed(init_seed)
    rng = np.random.default_rng(1)
    ids = (np.arange(600) * 7 % 32 + (rng.random(600) < 0.1)) % 32
    config = TrainConfig(
        max_steps=STEPS,
        batch_size=batch_size,
        lr=3e-3,
        warmup_steps=3,
        eval_interval=10,
        eval_iters=2,
        grad_accum=2,
        seed=0,
    )
    return Trainer(
        GPTModel(CONFIG).to(device),
        GPTDataset(ids[:500], 8, stride=3),
        GPTDataset(ids[500:], 8),
        config,
        out,
        log=lambda message: None,
        comm=comm,
        zero=zero,
        device=device,
    )


def flat_parameters(trainer) -> np.ndarray:
    return np.concatenate([p.data.ravel() for p in trainer.model.parameters()])


def same_as_root(comm, array) -> bool:
    """Whether ``array`` is bitwise rank 0's, on every process."""
    root = array.copy()
    comm.broadcast_(root)
    return comm.sum(float(not np.array_equal(root.view(np.uint32), array.view(np.uint32)))) == 0


def train(out: Path, comm) -> None:
    result = {}
    trainer = make_trainer(out / f"rank{comm.rank}", comm, init_seed=comm.rank)  # rank 1 starts elsewhere
    result["equal_at_start"] = same_as_root(comm, flat_parameters(trainer))
    losses, equal = [], []
    for _ in range(STEPS):
        losses.append(trainer.train_step())
        equal.append(same_as_root(comm, flat_parameters(trainer)))
    result.update(losses=losses, equal_each_step=equal, eval=list(trainer.evaluate()))
    trainer.save()  # process 0 alone writes: OUT/rank1 must not exist afterwards
    final = flat_parameters(trainer)

    zero = make_trainer(out / "zero", comm, zero=True)
    for _ in range(STEPS):
        zero.train_step()
    result["zero_max_abs_diff"] = float(np.abs(flat_parameters(zero) - final).max())
    result["zero_moment_bytes"] = zero.optimizer.moment_bytes()
    result["full_moment_bytes"] = 2 * final.nbytes

    shared = out / "resumed"
    make_trainer(shared, comm).fit(stop_after=STEPS // 2)  # stops and saves halfway, as an interruption
    resumed = make_trainer(shared, comm, zero=True, init_seed=7)  # resumes with ZeRO on: the same state
    result["resumed_from"] = resumed.load_state()
    resumed.fit()
    result["resume_equal"] = bool(np.array_equal(flat_parameters(resumed), final))
    result["resume_equal_on_all"] = same_as_root(comm, flat_parameters(resumed))
    if comm.rank == 0:
        np.save(out / "params.npy", final)
        (out / "result.json").write_text(json.dumps(result))


def nccl(out: Path) -> None:
    """The NCCL communicator's collectives on CuPy arrays, then training steps on CUDA, checked bitwise."""
    import cupy

    from tinygrad_llm.dist.nccl import NcclCommunicator

    comm = dist.init("cuda")
    assert isinstance(comm, NcclCommunicator), comm
    a = cupy.full(1000, comm.rank + 1, dtype=cupy.float32)
    assert float(comm.allreduce_(a)[0]) == 3.0 and bool((a == 3).all())
    b = cupy.full(10, comm.rank, dtype=cupy.float32)
    assert bool((comm.broadcast_(b) == 0).all())
    c = cupy.zeros(4, dtype=cupy.float32)
    c[comm.rank * 2 : comm.rank * 2 + 2] = comm.rank + 1
    assert comm.allgather_(c).get().tolist() == [1, 1, 2, 2]
    trainer = make_trainer(out / "nccl", comm, init_seed=comm.rank, device="cuda")
    equal = []
    for _ in range(5):
        trainer.train_step()
        equal.append(
            same_as_root(comm, cupy.asnumpy(cupy.concatenate([p.data.ravel() for p in trainer.model.parameters()])))
        )
    assert all(equal), equal
    if comm.rank == 0:
        (out / "nccl.ok").write_text("ok")


class FakeNccl:
    """What NcclCommunicator uses of ``cupy.cuda.nccl`` to start, checking its arguments as CuPy's Cython does:
    14 takes ``NcclCommunicator(int ndev, bytes commId, int rank)``, 13 ``tuple commId`` of 128 C chars."""

    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8  # ncclDataType_t

    def __init__(self, form: str):
        self.form = form
        uid = bytes(range(200, 256)) + bytes(range(72))  # 128 bytes, half of them > 127 (negative as C chars)
        self.unique_id = uid if form == "bytes" else tuple(np.frombuffer(uid, np.int8).tolist())
        self.calls = 0
        fake = self

        class NcclCommunicator:
            def __init__(self, ndev, comm_id, rank):
                if fake.form == "bytes" and not isinstance(comm_id, bytes):
                    raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(comm_id)})")
                if fake.form == "tuple" and not (
                    isinstance(comm_id, tuple) and all(isinstance(c, int) and -128 <= c < 128 for c in comm_id)
                ):
                    raise TypeError(f"commId must be a tuple of 128 signed chars, got {comm_id!r}")
                self.args = (ndev, comm_id, rank)

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        self.calls += 1
        return self.unique_id


def nccl_id(out: Path, form: str) -> None:
    """NcclCommunicator started with stand-ins for cupy and cupy.cuda.nccl: the id each rank got."""
    import types

    fake_nccl = FakeNccl(form)
    cuda = types.SimpleNamespace(
        nccl=fake_nccl,
        Device=lambda index: types.SimpleNamespace(use=lambda: None),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    )
    sys.modules["cupy"] = types.SimpleNamespace(cuda=cuda)
    sys.modules["cupy.cuda"] = cuda
    sys.modules["cupy.cuda.nccl"] = fake_nccl
    from tinygrad_llm.dist.nccl import NcclCommunicator

    comm = NcclCommunicator(dist.init())
    ndev, comm_id, rank = comm.nccl_comm.args
    result = {
        "ndev": ndev,
        "rank": rank,
        "type": type(comm_id).__name__,
        "id": list(comm_id),
        "generated": list(fake_nccl.unique_id),
        "get_unique_id_calls": fake_nccl.calls,
    }
    (out / f"id-rank{comm.rank}.json").write_text(json.dumps(result))


def fail_at_step_3(how: str) -> None:
    """The CLI's training with rank 1 failing at step 3 (raising, or killed)."""
    original = Trainer.train_step

    def train_step(self):
        if self.comm.rank == 1 and self.step == 3:
            if how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure")
        return original(self)

    Trainer.train_step = train_step


if __name__ == "__main__":
    what, out = sys.argv[1], Path(sys.argv[2])
    if what == "cli":
        from tinygrad_llm.cli import main

        sys.exit(main(sys.argv[2:]))
    if what == "train":
        train(out, dist.init())
    elif what == "nccl":
        nccl(out)
    elif what == "nccl-id":
        nccl_id(out, sys.argv[3])
    else:
        from tinygrad_llm.cli import main

        fail_at_step_3(what)
        sys.exit(
            main(
                [
                    "train",
                    "--preset",
                    "tiny",
                    "--max-steps",
                    "50",
                    "--batch-size",
                    "2",
                    "--context-length",
                    "16",
                    "--eval-interval",
                    "100",
                    "--sample-tokens",
                    "5",
                    "--out",
                    str(out / "run"),
                ]
            )
        )
