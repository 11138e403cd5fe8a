"""Whether the GPU path is right: one command, one line per check, exit status non-zero on any failure.

    python benchmarks/gpu_check.py               # every part, within 8 minutes on one H100; installs nothing
    python benchmarks/gpu_check.py --parts a,d   # some parts only
    python benchmarks/gpu_check.py --no-write    # print only; benchmarks/RESULTS.md is left alone

a. the CUDA tests (``pytest -m cuda``), which assert that the CUDA kernels ran (no fallback to the reference);
   on a GPU none may skip
b. a gpt2-small training step in fp32 (TF32 off) beside PyTorch on the same weights and batch: the loss and
   every parameter's gradient within float32 tolerance
c. fp16 and bf16: a small GPT trained 200 steps in each, validation loss within 1% of fp32's; a forced
   overflow step under fp16 skipped and the loss scale halved (the scale printed); fp16 matrix products
   faster than fp32 on the same shapes (tensor cores ran)
d. greedy generation with the KV cache on the GPU: the same tokens as on the CPU
e. NCCL: ``mpiexec -n 1 tinygrad-llm train --device cuda`` trains two steps; ``-n 2`` where two GPUs are seen
f. speed against PyTorch (printed and recorded; not part of the exit status)

Each part runs in a child process under its own timeout (killed with everything it started when the time
is up); the timeouts add up to the whole run's budget (--budget, 470 s). The results are appended to
benchmarks/RESULTS.md as a dated section (a temporary file, then a rename). Exit status: 0 when a-e pass,
1 when one fails, 2 when there is no CUDA GPU (nothing checked).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# part -> (what it checks, its timeout in seconds, whether it counts for the exit status)
PARTS = {
    "a": ("CUDA tests, CUDA kernels asserted active", 150, True),
    "b": ("gpt2-small fp32 step against PyTorch", 60, True),
    "c": ("fp16/bf16 against fp32, loss scaling, tensor cores", 140, True),
    "d": ("KV-cache generation, GPU tokens = CPU tokens", 40, True),
    "e": ("NCCL under mpiexec", 50, True),
    "f": ("speed against PyTorch (not in the exit status)", 30, False),
}
BUDGET_S = 470  # under 8 minutes, with room to start and to write the results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="".join(PARTS), type=_parts, help="which parts, e.g. a,c (default: all)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default 470)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="file to append to")
    parser.add_argument("--no-write", action="store_true", help="print only; the results file is left alone")
    parser.add_argument("--run-part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # a child: run one part
    parser.add_argument("--result-file", help=argparse.SUPPRESS)  # where the child writes its JSON result
    return parser.parse_args(argv)


def _parts(text: str) -> list[str]:
    parts = [p for p in text.replace(",", "") if not p.isspace()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"expected letters among {','.join(PARTS)}, got {text!r}")
    return [p for p in PARTS if p in parts]  # in order, once each


def timeouts(parts: list[str], budget: float) -> dict[str, float]:
    """Each part's timeout: its own, scaled down where the parts' sum exceeds the budget."""
    total = sum(PARTS[p][1] for p in parts)
    factor = min(1.0, budget / total) if total else 1.0
    return {p: PARTS[p][1] * factor for p in parts}


def run_part(name: str, command: list[str], timeout: float) -> dict:
    """``command`` (a child that writes its JSON result to the file named by its last argument) under
    ``timeout`` seconds: {ok, summary, seconds, output}. A child that times out is killed with every process it
    started (its own session); one that exits without a result is a failure with its last output line."""
    fd, result_file = tempfile.mkstemp(prefix=f"gpu_check_{name}_", suffix=".json")
    os.close(fd)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*command, result_file],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # mpiexec, pytest and their children: the whole session
            output, _ = proc.communicate()
            summary = f"timed out after {timeout:.0f} s (killed)"
            return {"ok": False, "summary": summary, "seconds": timeout, "output": output or ""}
        seconds = time.perf_counter() - start
        text = Path(result_file).read_text(encoding="utf-8")
    finally:
        os.unlink(result_file)
    result = json.loads(text) if text.strip() else None
    if proc.returncode != 0 or not isinstance(result, dict):
        last = [line for line in (output or "").splitlines() if line.strip()]
        why = last[-1][:200] if last else "no output"
        summary = f"crashed (exit status {proc.returncode}): {why}"
        return {"ok": False, "summary": summary, "seconds": seconds, "output": output or ""}
    return {
        "ok": bool(result.get("ok")),
        "summary": str(result.get("summary", "")),
        "seconds": seconds,
        "output": output,
    }


def exit_status(results: dict[str, dict]) -> int:
    """1 when a part that counts (a-e) failed, else 0."""
    return 1 if any(PARTS[p][2] and not r["ok"] for p, r in results.items()) else 0


def line(part: str, result: dict) -> str:
    verdict = ("PASS" if result["ok"] else "FAIL") if PARTS[part][2] else "INFO"
    return f"{part}. {verdict} {result['seconds']:5.0f} s  {PARTS[part][0]}: {result['summary']}"


def section(results: dict[str, dict], device: str, versions: str, elapsed: float, when: datetime.datetime) -> str:
    """The RESULTS.md section of one run: date, device, versions, one table row per part."""
    rows = [
        f"| {p} | {PARTS[p][0]} | {('PASS' if r['ok'] else 'FAIL') if PARTS[p][2] else 'info'} | "
        f"{r['seconds']:.0f} s | {r['summary'].replace('|', '/')} |"
        for p, r in results.items()
    ]
    status = exit_status(results)
    return "\n".join(
        [
            f"## GPU check, {when.strftime('%Y-%m-%d %H:%M UTC')}, {device}",
            "",
            f"`python benchmarks/gpu_check.py`: {elapsed / 60:.1f} min, exit status {status} ({versions}).",
            "",
            "| part | check | result | time | details |",
            "| --- | --- | --- | ---: | --- |",
            *rows,
            "",
        ]
    )


def append_section(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    from tinygrad_llm.files import atomic_write

    old = path.read_text(encoding="utf-8") if path.exists() else ""
    with atomic_write(path, "w") as f:
        f.write(old.rstrip("\n") + "\n\n" + text)


def no_gpu_reason() -> str | None:
    """Why there is no GPU to check (None when CuPy sees one)."""
    from tinygrad_llm import backend

    try:
        backend.check_device("cuda")
    except RuntimeError as exc:
        return str(exc)
    return None


def describe_machine() -> tuple[str, str]:
    """(the GPU's name, the library versions)."""
    from _common import gpu_name, machine_info

    info = machine_info()
    return gpu_name(), f"cupy {info['cupy']}, torch {info['torch']}, numpy {info['numpy']}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_part:  # a child: one part, its result as JSON to the file named last
        from _gpu_parts import run

        result = run(args.run_part)
        Path(args.result_file).write_text(json.dumps(result), encoding="utf-8")
        return 0
    reason = no_gpu_reason()
    if reason is not None:
        print(f"gpu_check: no CUDA GPU: nothing was checked ({reason})", file=sys.stderr)
        return 2
    device, versions = describe_machine()
    print(f"gpu_check on {device}: {versions}", flush=True)
    started, results = time.perf_counter(), {}
    planned = timeouts(args.parts, args.budget)
    for part in args.parts:
        left = args.budget - (time.perf_counter() - started)
        limit = planned[part] if PARTS[part][2] else left  # f (speed only) takes whatever time is left
        if limit < 5:
            results[part] = {"ok": False, "summary": "not run: no time left in the budget", "seconds": 0.0}
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--run-part", part, "--result-file"]
            results[part] = run_part(part, command, limit)
        print(line(part, results[part]), flush=True)
        if not results[part]["ok"] and results[part].get("output"):  # what the child said last, to debug
            print("\n".join("    " + text for text in results[part]["output"].splitlines()[-15:]), flush=True)
    status = exit_status(results)
    elapsed = time.perf_counter() - started
    print(f"gpu_check: {'all checks passed' if status == 0 else 'FAILED'} in {elapsed / 60:.1f} min")
    if not args.no_write:
        when = datetime.datetime.now(datetime.timezone.utc)
        append_section(Path(args.results), section(results, device, versions, elapsed, when))
        print(f"written to {args.results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
