"""Data-parallel training speed: one process against N processes under mpiexec, on the same cores.

    python benchmarks/dist.py                          # gpt2-small shape: 1 process x 2 threads vs 2 x 1 thread
    python benchmarks/dist.py --procs 4 --device cuda  # 4 GPUs: 1 process vs 4 processes (NCCL)

Each configuration runs in its own process(es), interleaved round by round: the single process takes the
global batch (procs x --batch) on ``procs`` threads; the ``mpiexec -n procs`` job takes --batch per process
on one thread each (``TINYGRAD_LLM_THREADS``), so both use the same cores on the same data per step. Each
step is forward, backward, gradient averaging (``dist.GradientReducer``, default buckets), clipping and
AdamW. Printed: tokens/s of each, their ratio (the scaling efficiency on these cores), the share of the
N-process step spent averaging gradients, and the Allreduce time and bandwidth for the model's gradient at
several bucket sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

BUCKETS_MB = (1, 4, 25, 100, None)  # None: the whole gradient in one call


def worker(args) -> None:
    """Time ``args.steps`` steps after one warm-up (and, with several processes, the Allreduce); rank 0
    prints one JSON line."""
    import numpy as np
    from _steps import shape_config

    import tinygrad_llm as tl
    from tinygrad_llm import backend, dist
    from tinygrad_llm import functional as F
    from tinygrad_llm.model import GPTModel
    from tinygrad_llm.optim import AdamW, clip_grad_norm_, param_groups_for_weight_decay

    comm = dist.init(args.device)
    config, batch = shape_config(args.shape, args.batch, args.context)
    tl.manual_seed(0)
    model = GPTModel(config).to(args.device)
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    reducer = dist.GradientReducer(params, comm) if comm.world_size > 1 else None
    rng = np.random.default_rng(comm.rank)
    x = backend.to_device(rng.integers(0, config.vocab_size, (batch, config.context_length)), args.device)
    y = backend.to_device(rng.integers(0, config.vocab_size, (batch, config.context_length)), args.device)

    def sync():
        if args.device == "cuda":
            backend.xp_for("cuda").cuda.get_current_stream().synchronize()

    steps, reduces = [], []
    for i in range(args.steps + 1):
        comm.barrier()
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        sync()
        reduce_start = time.perf_counter()
        if reducer is not None:
            reducer.reduce()
            sync()
        reduce_s = time.perf_counter() - reduce_start
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        sync()
        if i:  # the first step compiles kernels and touches fresh memory
            steps.append(time.perf_counter() - start)
            reduces.append(reduce_s)
    result = {
        "procs": comm.world_size,
        "step_s": statistics.median(steps),
        "tokens_per_step": batch * config.context_length * comm.world_size,
        "reduce_s": statistics.median(reduces),
        "parameters": sum(p.data.size for p in params),
    }
    if reducer is not None:  # the Allreduce alone, over the whole gradient, at several bucket sizes
        allreduce = {}
        for mb in BUCKETS_MB:
            r = dist.GradientReducer(params, comm, bucket_mb=mb)
            times = []
            for _ in range(3):
                comm.barrier()
                start = time.perf_counter()
                for lo, hi in r.buckets:
                    comm.allreduce_(r.flat[lo:hi])
                sync()
                times.append(time.perf_counter() - start)
            allreduce["whole" if mb is None else f"{mb} MB"] = {
                "buckets": len(r.buckets),
                "seconds": statistics.median(times),
            }
            del r
        result["allreduce"] = allreduce
        result["gradient_bytes"] = reducer.flat.nbytes
    if comm.is_root:
        print("RESULT " + json.dumps(result), flush=True)


def run(command: list[str], threads: int, timeout: float) -> dict:
    env = {**os.environ, "TINYGRAD_LLM_THREADS": str(threads)}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # mpiexec and every process it started, not mpiexec alone
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        sys.exit(f"benchmark run killed after {timeout:.0f}s: {' '.join(command)}")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"benchmark run failed ({' '.join(command)}):\n{err[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--procs", type=int, default=2, help="processes of the data-parallel run")
    parser.add_argument("--shape", default="gpt2-small", help="a benchmarks/_steps.py shape or a preset")
    parser.add_argument("--batch", type=int, default=2, help="windows per process")
    parser.add_argument("--context", type=int, default=64, help="tokens per window")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each running both configurations")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--one-thread",
        action="store_true",
        help="also run one process on one thread (a busy machine's choice) as a third reference",
    )
    parser.add_argument("--mpiexec", default=os.environ.get("MPIEXEC") or shutil.which("mpiexec") or "mpiexec")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a run is killed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from _common import print_machine

    print_machine(threads=args.procs)
    script = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--shape",
        args.shape,
        "--context",
        str(args.context),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
    ]
    one_threads = args.procs if args.device == "cpu" else 1
    single_runs, multi_runs, one_thread_runs = [], [], []
    for _ in range(args.rounds):
        single_runs.append(run(script + ["--batch", str(args.procs * args.batch)], one_threads, args.timeout))
        multi_runs.append(
            run([args.mpiexec, "-n", str(args.procs)] + script + ["--batch", str(args.batch)], 1, args.timeout)
        )
        if args.one_thread and one_threads > 1:  # what a busy machine's thread policy would choose
            one_thread_runs.append(run(script + ["--batch", str(args.procs * args.batch)], 1, args.timeout))
    single = statistics.median(r["tokens_per_step"] / r["step_s"] for r in single_runs)
    multi = statistics.median(r["tokens_per_step"] / r["step_s"] for r in multi_runs)
    last = multi_runs[-1]
    reduce_share = statistics.median(r["reduce_s"] / r["step_s"] for r in multi_runs)
    where = f"{args.procs} GPUs" if args.device == "cuda" else f"{args.procs} cores"
    print(
        f"\n{args.shape}, context {args.context}, {last['parameters']:,} parameters, global batch "
        f"{args.procs * args.batch}, {where}; medians of {args.rounds} rounds x {args.steps} steps"
    )
    print(f"  1 process x {one_threads} thread(s), batch {args.procs * args.batch}: {single:10,.0f} tokens/s")
    print(f"  {args.procs} processes x 1 thread, batch {args.batch} each:  {multi:10,.0f} tokens/s")
    print(
        f"  ratio (scaling efficiency on the same {where}): {multi / single:.2f}x; gradient averaging is "
        f"{100 * reduce_share:.0f}% of the {args.procs}-process step"
    )
    if one_thread_runs:
        one = statistics.median(r["tokens_per_step"] / r["step_s"] for r in one_thread_runs)
        print(
            f"  1 process x 1 thread, batch {args.procs * args.batch}:  {one:10,.0f} tokens/s  "
            f"({args.procs} processes: {multi / one:.2f}x)"
        )
    size = last["gradient_bytes"]
    print(
        f"  Allreduce of the {size / 2**20:,.0f} MiB gradient over {args.procs} processes (bus bandwidth "
        f"2(N-1)/N x bytes / time):"
    )
    for name, entry in last["allreduce"].items():
        bus = 2 * (args.procs - 1) / args.procs * size / entry["seconds"]
        print(
            f"    buckets of {name:>6} ({entry['buckets']:>3} calls): {entry['seconds'] * 1000:8.1f} ms  "
            f"{bus / 1e9:6.2f} GB/s"
        )


if __name__ == "__main__":
    main()
