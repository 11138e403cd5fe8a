"""One command for a machine with a GPU: every CUDA test, a training step and a generation run beside PyTorch,
fp16/bf16 training against fp32, and the results as a dated section of benchmarks/RESULTS.md.

    python benchmarks/gpu_check.py                  # sized for under 8 minutes on an H200 (untimed); installs nothing
    python benchmarks/gpu_check.py --no-write       # print only

1. ``pytest -m cuda`` (every test that needs a GPU: CuPy kernels against the reference with the Numba tests'
   shapes and extreme values, the engine on device="cuda", exact resume, determinism).
2. A gpt2-small training step (batch 8 x 1024 tokens: forward, backward, clip, AdamW), ours and PyTorch eager
   on the same GPU, in fp32 (TF32 off), tf32, fp16 and bf16: tokens/s, the ratio (target: ours >= 0.8x
   torch's throughput), achieved TFLOP/s and MFU against the GPU's dense peak.
3. Greedy generation with the KV cache, gpt2-small, 100 new tokens, ours and torch: tokens/s and whether
   the tokens agree.
4. A character-level GPT (6 layers, 384 wide, context 256, batch 32) trained 200 steps from the same start in
   fp32, fp16 and bf16: each low-precision run's validation loss must be within 1% of fp32's.

Exits 0 when the tests pass and fp16/bf16 track fp32; 1 otherwise, or when no GPU is usable (said in one line).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

TRACK_TOLERANCE = 0.01  # fp16/bf16 validation loss within 1% of fp32's after the same steps
SPEED_TARGET = 0.8  # ours / torch throughput, same GPU and precision


def run_cuda_tests(timeout: int) -> tuple[bool, str]:
    """``pytest -m cuda`` in a child process; (passed, its summary line)."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs", "tests"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"pytest -m cuda did not finish within {timeout} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = lines[-1].strip("= ") if lines else done.stderr.strip()[-300:]
    for line in failures:
        print("   ", line)
    skips = [line for line in lines if line.startswith("SKIPPED")]
    for line in skips:  # on a GPU a cuda test should not skip: say why each did
        print("   ", line)
    return done.returncode == 0 and " passed" in summary and not failures, summary


def training_steps(torch, repeats: int) -> list[dict]:
    from _common import mfu_line, set_tf32, synced, time_interleaved
    from _steps import build_steps, shape_config

    from tinygrad_llm.model import GPTModel

    config, batch = shape_config("gpt2-small", batch=8, context=1024)
    n_params = GPTModel(config).num_parameters()
    rows = []
    for precision in ("fp32", "tf32", "fp16", "bf16"):
        set_tf32(precision == "tf32", torch)
        sides = ("tinygrad_llm", "torch eager") if torch is not None else ("tinygrad_llm",)
        try:
            steps = build_steps(
                "gpt2-small", sides=sides, torch=torch, batch=batch, context=1024, device="cuda", precision=precision
            )
            medians = time_interleaved(synced(steps, "cuda", torch), repeats=repeats, number=1, warmup=2)
        except Exception as exc:  # e.g. bf16 on a CuPy without bfloat16 matrix products: say so, go on
            print(f"   {precision}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
            rows.append({"precision": precision, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"})
            continue
        tokens = batch * config.context_length
        row = {
            "precision": precision,
            "ours_ms": 1000 * medians["tinygrad_llm"],
            "ours_tok_s": tokens / medians["tinygrad_llm"],
            "ours_mfu": mfu_line(tokens / medians["tinygrad_llm"], config, n_params, precision),
        }
        if "torch eager" in medians:
            row.update(
                torch_ms=1000 * medians["torch eager"],
                torch_tok_s=tokens / medians["torch eager"],
                torch_mfu=mfu_line(tokens / medians["torch eager"], config, n_params, precision),
                ratio=medians["torch eager"] / medians["tinygrad_llm"],
            )
        rows.append(row)
        print(
            f"   {precision}: ours {row['ours_ms']:.1f} ms/step ({row['ours_mfu']})"
            + (
                f", torch {row['torch_ms']:.1f} ms ({row['torch_mfu']}), ours/torch throughput {row['ratio']:.2f}x"
                if "ratio" in row
                else ""
            ),
            flush=True,
        )
        del steps
    set_tf32(False, torch)
    return rows


def generation(torch, tokens: int = 100) -> dict:
    import numpy as np
    from _common import synced
    from torch_gpt import build_torch_gpt, torch_generate

    import tinygrad_llm as tl
    from tinygrad_llm.model import GPTConfig, GPTModel

    config = GPTConfig.preset("gpt2-small", drop_rate=0.0, tie_weights=True)
    tl.manual_seed(0)
    model = GPTModel(config).eval()
    prompt = np.array([[15496, 11, 314, 716]], dtype=np.int64)
    runs = {}
    if torch is not None:
        tg = build_torch_gpt(torch, model).to("cuda")
        runs["torch"] = lambda: torch_generate(torch, tg, prompt, tokens, config.context_length, True)
    model.to("cuda")
    runs = synced({"ours": lambda: tl.generate(model, prompt, tokens), **runs}, "cuda", torch)
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the tokens to compare
    times = {name: [] for name in runs}
    for _ in range(3):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {f"{name}_tok_s": tokens / statistics.median(t) for name, t in times.items()}
    if "torch" in outputs:
        result["same_tokens"] = bool(np.array_equal(outputs["ours"], outputs["torch"]))
    return result


def precision_runs(steps: int) -> dict:
    """Validation loss after ``steps`` steps in each precision, same data, same start."""
    import tempfile

    import numpy as np

    import tinygrad_llm as tl
    from tinygrad_llm.data import GPTDataset
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.tokenizer import get_tokenizer
    from tinygrad_llm.train.corpus import builtin_corpus
    from tinygrad_llm.train.trainer import TrainConfig, Trainer

    text = builtin_corpus()
    tokenizer = get_tokenizer("char", text=text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    split = int(0.9 * len(ids))
    results = {}
    for precision in ("fp32", "fp16", "bf16"):
        tl.manual_seed(1337)
        model = GPTModel(
            GPTConfig(
                vocab_size=tokenizer.n_vocab, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.0
            )
        ).to("cuda")
        config = TrainConfig(
            max_steps=steps,
            batch_size=32,
            lr=1e-3,
            warmup_steps=20,
            eval_interval=steps,
            eval_iters=20,
            seed=1337,
            precision=precision,
        )
        with tempfile.TemporaryDirectory() as out:
            try:
                trainer = Trainer(
                    model,
                    GPTDataset(ids[:split], 256, stride=128),
                    GPTDataset(ids[split:], 256),
                    config,
                    Path(out) / "run",
                    device="cuda",
                    log=lambda message: None,
                )
                start = time.perf_counter()
                trainer.fit()
            except Exception as exc:
                results[precision] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
                print(f"   {precision}: failed: {results[precision]['error']}")
                continue
        last = trainer.history[-1]
        results[precision] = {
            "val_loss": last["val_loss"],
            "train_loss": last["train_loss"],
            "seconds": time.perf_counter() - start,
            "scale": trainer.precision.scaler.get_scale(),
        }
        print(
            f"   {precision}: val loss {last['val_loss']:.4f} after {steps} steps "
            f"({results[precision]['seconds']:.0f} s)",
            flush=True,
        )
    return results


def write_section(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` through a temporary file and a rename (never a half-written file)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="file to append to")
    parser.add_argument("--no-write", action="store_true", help="print only; RESULTS.md is left alone")
    parser.add_argument("--steps", type=int, default=200, help="training steps per precision in part 4")
    parser.add_argument("--repeats", type=int, default=7, help="timed training steps per side in part 2")
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds allowed for pytest -m cuda")
    args = parser.parse_args(argv)

    import tinygrad_llm as tl

    if not tl.cuda_available():
        print(
            "gpu_check: no CUDA GPU usable by CuPy on this machine (CuPy missing, no driver, or no device): "
            "nothing was checked",
            file=sys.stderr,
        )
        return 1
    from _common import gpu_name, machine_info

    try:
        import torch

        if not torch.cuda.is_available():
            print("torch sees no GPU: the PyTorch columns are left out")
            torch = None
    except ImportError:
        torch = None
        print("torch is not installed: the PyTorch columns are left out")
    started = time.perf_counter()
    device = gpu_name()
    info = machine_info()
    print(f"gpu_check on {device}: cupy {info['cupy']}, torch {info['torch']}, numpy {info['numpy']}")

    print("1. pytest -m cuda", flush=True)
    tests_ok, tests_summary = run_cuda_tests(args.test_timeout)
    print(f"   {tests_summary}", flush=True)
    print("2. training step, gpt2-small, batch 8 x 1024", flush=True)
    steps = training_steps(torch, args.repeats)
    print("3. generation, gpt2-small, 100 new tokens, greedy, KV cache", flush=True)
    gen = generation(torch)
    print("   " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in gen.items()))
    print(f"4. fp16 / bf16 against fp32: {args.steps} steps, 6 layers x 384, context 256, batch 32", flush=True)
    tracks = precision_runs(args.steps)
    ref = tracks.get("fp32", {}).get("val_loss")
    track_ok = ref is not None
    track_lines = []
    for precision in ("fp16", "bf16"):
        run = tracks.get(precision, {})
        if ref is None or "val_loss" not in run:
            track_ok = False
            track_lines.append(f"| {precision} | {run.get('error', 'not run')} | | |")
            continue
        gap = abs(run["val_loss"] - ref) / ref
        track_ok &= gap <= TRACK_TOLERANCE
        track_lines.append(
            f"| {precision} | {run['val_loss']:.4f} | {100 * gap:.2f}% | "
            f"{'PASS' if gap <= TRACK_TOLERANCE else 'FAIL'} (<= 1%) |"
        )
    elapsed = time.perf_counter() - started

    step_lines = []
    for row in steps:
        if "error" in row:
            step_lines.append(f"| {row['precision']} | {row['error']} | | | |")
            continue
        ratio = row.get("ratio")
        verdict = "" if ratio is None else (" PASS" if ratio >= SPEED_TARGET else " MISS")
        step_lines.append(
            f"| {row['precision']} | {row['ours_ms']:.1f} ({row['ours_mfu']}) | "
            f"{row.get('torch_ms', float('nan')):.1f} ({row.get('torch_mfu', '-')}) | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'}{verdict} |"
        )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            f"## GPU check, {date}, {device}",
            "",
            f"`python benchmarks/gpu_check.py` ({elapsed / 60:.1f} min; cupy {info['cupy']}, torch {info['torch']}, "
            f"numpy {info['numpy']}).",
            "",
            f"- `pytest -m cuda`: {tests_summary} -> {'PASS' if tests_ok else 'FAIL'}",
            f"- generation (gpt2-small, 100 tokens, greedy, cached): ours {gen.get('ours_tok_s', 0):.1f} tokens/s"
            + (
                f", torch eager {gen['torch_tok_s']:.1f} tokens/s, same tokens: {gen['same_tokens']}"
                if "torch_tok_s" in gen
                else ""
            ),
            "",
            "Training step, gpt2-small untied, batch 8 x 1024 tokens (forward, backward, clip, AdamW), median of "
            f"{args.repeats} interleaved steps; target ours >= {SPEED_TARGET}x torch's throughput:",
            "",
            "| precision | ours ms/step | torch eager ms/step | ours / torch throughput |",
            "| --- | --- | --- | ---: |",
            *step_lines,
            "",
            f"Mixed precision against fp32 ({args.steps} steps, char-level GPT 6 x 384 on pydoc_data; fp32 val loss "
            f"{'-' if ref is None else f'{ref:.4f}'}):",
            "",
            "| precision | val loss | gap to fp32 | target |",
            "| --- | ---: | ---: | --- |",
            *track_lines,
            "",
        ]
    )
    print()
    print(section)
    if not args.no_write:
        write_section(Path(args.results), section)
        print(f"written to {args.results}")
    return 0 if tests_ok and track_ok else 1


if __name__ == "__main__":
    sys.exit(main())
