"""Peak resident memory of training steps, ours and PyTorch eager, each in its own fresh process.

    python benchmarks/memory.py                        # the three shapes of benchmarks/_steps.py
    python benchmarks/memory.py --shape medium --steps 3
    python benchmarks/memory.py --defaults             # each side at its default threads (ours: the batch in parts)

Each process builds the model, its optimizer and one batch, runs ``--steps`` training steps (forward,
backward, clip, AdamW) and reports its peak resident set (``ru_maxrss``), and the peak before the first
step (the model, the optimizer's moments are allocated lazily by both sides). One thread each, or with
``--defaults`` each side's default threads (ours then computes a batch's parts side by side). Memory does
not depend on the machine's load, so this figure holds on a busy machine too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIDES = ("tinygrad_llm", "torch eager")


def worker(side: str, shape: str, steps: int, defaults: bool) -> None:
    torch = None
    if side.startswith("torch"):
        import torch

        if not defaults:
            torch.set_num_threads(1)
    from _steps import build_steps

    from tinygrad_llm import runtime

    if not defaults:
        runtime.configure(threads=1)
    step = build_steps(shape, sides=(side,), torch=torch)[side]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--shape", nargs="+", default=["baby", "medium", "gpt2-small"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--defaults", action="store_true", help="each side at its default threads, not one")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.shape[0], args.steps, args.defaults)
        return 0
    from _common import print_machine

    print_machine(threads="each side's defaults" if args.defaults else 1)
    print(
        "| shape | side | before the steps MiB | peak MiB | ours / torch (peak) |\n| --- | --- | ---: | ---: | ---: |"
    )
    for shape in args.shape:
        peaks = {}
        for side in SIDES:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", side, "--shape", shape, "--steps", str(args.steps)]
                + (["--defaults"] if args.defaults else []),
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                print(f"| {shape} | {side} | failed: {out.stderr.strip().splitlines()[-1][:120]} | | |")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[side] = result["peak_kib"] / 1024
            ratio = (
                f"{peaks['tinygrad_llm'] / peaks[side]:.2f}"
                if side != "tinygrad_llm" and "tinygrad_llm" in peaks
                else ""
            )
            print(f"| {shape} | {side} | {result['before_kib'] / 1024:.0f} | {peaks[side]:.0f} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
