"""A training step on an idle machine and under N busy background processes: ours and PyTorch eager, each at
its default thread settings and at one thread.

    python benchmarks/load.py                          # baby shape, idle and under 2 busy processes
    python benchmarks/load.py --shape medium --busy 0 2 4 --rounds 3
    python benchmarks/load.py --shape all --busy 0 --compile        # the idle ratios at every size, compile too
    python benchmarks/load.py --shape all --baseline ../before --no-torch    # today's code beside an older checkout

Every configuration runs in its own process (so each side's thread pools start as a user's would), the
configurations interleaved round by round; a busy process is ``while True: pass``. Prints the median step
time of each configuration at each load, and the two ratios of issue 10's load target:

    ours at defaults under load / ours idle at one thread          (target <= 2; a fair share is 1.5 with 2 on 2 cores)
    ours at defaults under load / torch eager at defaults, same load  (target < 1)

Benchmark with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset where the environment sets them:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/load.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIGS = {  # label -> (side, threads: None for the side's defaults)
    "ours, defaults": ("tinygrad_llm", None),
    "ours, 1 thread": ("tinygrad_llm", 1),
    "torch eager, defaults": ("torch eager", None),
    "torch eager, 1 thread": ("torch eager", 1),
    "torch.compile, defaults": ("torch.compile", None),  # with --compile (each process compiles: ~30 s)
    "torch.compile, 1 thread": ("torch.compile", 1),
    "baseline, defaults": ("baseline", None),  # with --baseline DIR: our step as the checkout in DIR runs it
    "baseline, 1 thread": ("baseline", 1),
}


def worker(side: str, threads: int | None, shape: str, steps: int, max_seconds: float) -> None:
    """Time ``steps`` training steps (fewer when they exceed ``max_seconds``, at least 3); print JSON."""
    env_threads = os.environ.pop("TINYGRAD_LLM_THREADS", None)  # defaults mean defaults
    torch = None
    if side.startswith("torch"):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
    from _steps import build_steps

    from tinygrad_llm import runtime

    if side == "tinygrad_llm" and threads is not None:
        runtime.configure(threads=threads)
    step = build_steps(shape, sides=(side,), torch=torch)[side]
    warm_up, started = 0, time.perf_counter()
    while warm_up < 2 or time.perf_counter() - started < 1.0:  # compilation, caches, allocator; and our load
        step()  # monitor, which lends a second core after two quiet quarter-seconds
        warm_up += 1
    times, start = [], time.perf_counter()
    while len(times) < steps and (len(times) < 3 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(times), "steps": len(times), "env_threads": env_threads}))


def run_config(label: str, args) -> float:
    side, threads = CONFIGS[label]
    script, env = __file__, None
    if side == "baseline":  # the other checkout's own worker, on its own package
        script, side = str(Path(args.baseline, "benchmarks", "load.py")), "tinygrad_llm"
        env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
    cmd = [
        sys.executable,
        script,
        "--worker",
        side,
        "--shape",
        args.shape,
        "--steps",
        str(args.steps),
        "--max-seconds",
        str(args.max_seconds),
    ]
    if threads is not None:
        cmd += ["--worker-threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{label}: worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def measure(args) -> None:
    """Every configuration at every load for args.shape, interleaved; prints the table and the ratios."""
    labels = [
        label
        for label in CONFIGS
        if not (args.no_torch and "torch" in label)
        and (args.compile or "compile" not in label)
        and (args.baseline or "baseline" not in label)
    ]
    results: dict[int, dict[str, list]] = {}
    for n_busy in args.busy:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
        try:
            time.sleep(1.0 if n_busy else 0.0)  # let the load settle (and our monitor see it)
            results[n_busy] = {label: [] for label in labels}
            for r in range(args.rounds):
                for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
                    results[n_busy][label].append(run_config(label, args))
                    print(
                        f"  busy {n_busy}, round {r + 1}: {label}: {results[n_busy][label][-1] * 1000:.1f} ms",
                        flush=True,
                    )
        finally:
            for p in busy:
                p.kill()
                p.wait()
    medians = {n: {label: statistics.median(v) for label, v in per.items()} for n, per in results.items()}
    print(f"\nshape {args.shape}: median seconds per training step, each configuration in its own process")
    print("| configuration | " + " | ".join(f"{n} busy" for n in medians) + " |")
    print("| --- |" + " ---: |" * len(medians))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{medians[n][label] * 1000:.1f} ms" for n in medians) + " |")
    idle_one = medians.get(0, {}).get("ours, 1 thread")
    for setting in ("defaults", "1 thread"):  # issue 10's idle targets: <= 0.83 against eager, <= 1 against compile
        for side, target in (("torch eager", "<= 0.83"), ("torch.compile", "<= 1")):
            if 0 in medians and f"{side}, {setting}" in medians[0]:
                ratio = medians[0][f"ours, {setting}"] / medians[0][f"{side}, {setting}"]
                print(f"idle, {setting}: ours / {side} = {ratio:.2f} (target {target})")
    for n, per in medians.items():
        if n == 0:
            continue
        if idle_one:
            print(
                f"{n} busy: ours at defaults / ours idle at 1 thread = {per['ours, defaults'] / idle_one:.2f} "
                f"(target <= 2)"
            )
        if "torch eager, defaults" in per:
            print(
                f"{n} busy: ours at defaults / torch eager at defaults = "
                f"{per['ours, defaults'] / per['torch eager, defaults']:.2f} (target < 1)"
            )
    for n, per in medians.items():
        for setting in ("defaults", "1 thread"):
            if f"baseline, {setting}" in per:
                print(
                    f"{n} busy, {setting}: ours / baseline ({args.baseline}) = "
                    f"{per[f'ours, {setting}'] / per[f'baseline, {setting}']:.3f}"
                )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--shape", default="baby", help="baby, medium, gpt2-small (benchmarks/_steps.py) or all")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="background busy processes per level")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (median)")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="stop a run's timing after this (>= 3 steps)")
    parser.add_argument("--no-torch", action="store_true", help="only our two configurations")
    parser.add_argument("--compile", action="store_true", help="torch.compile's two configurations too")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a checkout of an earlier version (git worktree add DIR "
        "REV): its step at defaults and at one thread beside ours, for a before/after table",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu only: this measures the CPU thread policy under busy CPU processes (on a GPU, "
        "benchmarks/train.py --device cuda times the step)",
    )
    args = parser.parse_args(argv)
    if args.device != "cpu":
        parser.error(
            "--device cuda: load.py measures CPU threads under CPU load; use benchmarks/train.py "
            "--part 2 --device cuda for a GPU's training step"
        )
    if args.worker:
        worker(args.worker, args.worker_threads, args.shape, args.steps, args.max_seconds)
        return 0
    from _common import print_machine

    print_machine()
    from _steps import SHAPES

    for shape in list(SHAPES) if args.shape == "all" else [args.shape]:
        args.shape = shape
        measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
