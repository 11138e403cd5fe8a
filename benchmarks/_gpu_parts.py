"""The parts of benchmarks/gpu_check.py, each run in its own child process: ``run(part)`` -> {ok, summary}.

Each needs a CUDA GPU (and b, f PyTorch with CUDA). Sizes are set for one H100 within gpu_check's timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LOSS_RTOL = 2e-5  # b: the fp32 loss, ours against torch's (a sum over 1024 tokens in another order)
GRAD_TOL = 1e-4  # b: max |ours - torch| of each gradient, relative to that gradient's largest entry
TRACK_TOLERANCE = 0.01  # c: fp16/bf16 validation loss within 1% of fp32's after the same steps
TENSOR_CORE_SPEEDUP = 1.5  # c: fp16 products at least this much faster than fp32 (TF32 off) on the same shapes


def run(part: str) -> dict:
    return {"a": cuda_tests, "b": step_against_torch, "c": low_precision, "d": generation, "e": nccl, "f": speed}[
        part
    ]()


def _torch():
    """PyTorch with CUDA, TF32 off (fp32 means fp32), or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def cuda_tests() -> dict:
    """a. ``pytest -m cuda``: every test passes, and none skips for want of a GPU (on a GPU that means it saw
    none: nothing was checked). A skip for another reason (PyTorch or transformers missing) is listed."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci"}
    env.pop("CUPY_TF32", None)  # fp32 means fp32
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs", "tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("FAILED", "ERROR", "SKIPPED")):
            print(line)
    summary = lines[-1].strip("= ") if lines else done.stderr.strip()[-200:]
    return {"ok": tests_passed(done.returncode, lines), "summary": summary}


def tests_passed(returncode: int, lines: list[str]) -> bool:
    """pytest's verdict, read strictly: exit 0, something passed, nothing failed, no skip for want of a GPU."""
    skips = [line for line in lines if line.startswith("SKIPPED")]
    no_gpu = [line for line in skips if re.search(r"cuda|gpu|cupy", line, re.IGNORECASE)]
    summary = lines[-1] if lines else ""
    failed = any(line.startswith(("FAILED", "ERROR")) for line in lines)
    return returncode == 0 and " passed" in summary and not failed and not no_gpu


def step_against_torch() -> dict:
    """b. One gpt2-small forward and backward in fp32 (batch 4 x 256), ours and torch's from the same weights."""
    torch = _torch()
    if torch is None:
        return {"ok": False, "summary": "needs PyTorch with CUDA (not installed or sees no GPU)"}
    from torch_gpt import build_torch_gpt, torch_name

    import tinygrad_llm as tl
    from tinygrad_llm import functional as F
    from tinygrad_llm.model import GPTConfig, GPTModel

    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("gpt2-small", drop_rate=0.0, context_length=256))
    rng = np.random.default_rng(0)
    x = rng.integers(0, model.config.vocab_size, (4, 256))
    y = rng.integers(0, model.config.vocab_size, (4, 256))
    tg = build_torch_gpt(torch, model).train().to("cuda")
    model.to("cuda")
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    ours = float(loss.item())
    tloss = torch.nn.functional.cross_entropy(
        tg(torch.from_numpy(x).cuda()).flatten(0, 1), torch.from_numpy(y).cuda().flatten()
    )
    tloss.backward()
    theirs = float(tloss.item())
    loss_err = abs(ours - theirs) / abs(theirs)
    torch_params = dict(tg.named_parameters())
    worst, worst_name = 0.0, ""
    for name, p in model.named_parameters():
        g = tl.backend.to_numpy(p.grad).astype(np.float64)
        want = torch_params[torch_name(name)].grad.double().cpu().numpy()
        err = float(np.abs(g - want).max() / max(np.abs(want).max(), 1e-30))
        if not err <= worst:  # NaN counts as worst
            worst, worst_name = err, name
    ok = loss_err <= LOSS_RTOL and worst <= GRAD_TOL
    return {
        "ok": ok,
        "summary": f"loss {ours:.6f} vs torch {theirs:.6f} (rel. {loss_err:.1e}, limit {LOSS_RTOL:.0e}); "
        f"worst gradient {worst_name} {worst:.1e} of its largest entry (limit {GRAD_TOL:.0e})",
    }


def low_precision() -> dict:
    """c. fp16/bf16 track fp32 over 200 steps; an fp16 overflow step is skipped and the scale halved; fp16
    matrix products run faster than fp32 ones (tensor cores)."""
    tracks = _precision_runs(200)
    ref = tracks["fp32"].get("val_loss")
    notes, ok = [], ref is not None
    for precision in ("fp16", "bf16"):
        run = tracks[precision]
        if ref is None or "val_loss" not in run:
            ok = False
            notes.append(f"{precision} {run.get('error', 'not run')}")
            continue
        gap = abs(run["val_loss"] - ref) / ref
        ok &= gap <= TRACK_TOLERANCE
        notes.append(f"{precision} val {run['val_loss']:.4f} ({100 * gap:.2f}% from fp32 {ref:.4f})")
    notes.append(f"fp16 final scale {tracks['fp16'].get('scale', '-')}")
    overflow_ok, overflow_note = _overflow_step()
    speed_ok, speed_note = _tensor_cores()
    return {"ok": ok and overflow_ok and speed_ok, "summary": "; ".join([*notes, overflow_note, speed_note])}


def _precision_runs(steps: int) -> dict:
    """Validation loss after ``steps`` steps in each precision, same data, same start (6 x 384, context 256)."""
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
        config = GPTConfig(
            vocab_size=tokenizer.n_vocab, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.0
        )
        train = TrainConfig(
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
                    GPTModel(config).to("cuda"),
                    GPTDataset(ids[:split], 256, stride=128),
                    GPTDataset(ids[split:], 256),
                    train,
                    Path(out) / "run",
                    device="cuda",
                    log=lambda message: None,
                )
                start = time.perf_counter()
                trainer.fit()
            except Exception as exc:
                results[precision] = {"error": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
                continue
        last = trainer.history[-1]
        results[precision] = {"val_loss": last["val_loss"], "scale": trainer.precision.scaler.get_scale()}
        print(f"{precision}: val loss {last['val_loss']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return results


def _overflow_step() -> tuple[bool, str]:
    """An fp16 step whose gradient holds an inf: the parameters must not move, the scale must halve."""
    import tinygrad_llm as tl
    from tinygrad_llm import functional as F
    from tinygrad_llm.amp import MixedPrecision
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.optim import AdamW

    tl.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=2, n_layers=1)).to("cuda")
    optimizer = AdamW(model.parameters(), lr=1e-3)
    amp = MixedPrecision("fp16", "cuda")
    ids = np.random.default_rng(0).integers(0, 64, (2, 17))
    with amp.autocast():
        loss = F.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
    amp.backward(loss)
    params = list(model.parameters())
    params[0].grad[0] = np.inf  # as an fp16 overflow leaves it
    before = [tl.backend.to_numpy(p.data).copy() for p in params]
    scale = amp.scaler.get_scale()
    stepped = amp.step(optimizer)
    unmoved = all(np.array_equal(b, tl.backend.to_numpy(p.data)) for b, p in zip(before, params))
    after = amp.scaler.get_scale()
    ok = not stepped and unmoved and after == scale / 2
    return ok, f"overflow step {'skipped' if not stepped else 'TAKEN'}, scale {scale:g} -> {after:g}"


def _tensor_cores() -> tuple[bool, str]:
    """Our linear layer on (8, 1024, 768) x (768, 3072), fp16 against fp32 (TF32 off): tensor cores make fp16
    several times faster; a product that falls back to float32 arithmetic does not."""
    import cupy

    import tinygrad_llm as tl
    from tinygrad_llm import functional as F

    rng = np.random.default_rng(0)
    times = {}
    for dtype in (np.float32, np.float16):
        x = tl.Tensor(rng.standard_normal((8, 1024, 768)).astype(dtype), device="cuda")
        w = tl.Tensor((rng.standard_normal((3072, 768)) * 0.02).astype(dtype), device="cuda")
        with tl.no_grad():
            F.linear(x, w)  # warm-up: cuBLAS handles, kernels
            cupy.cuda.Device().synchronize()
            runs = []
            for _ in range(10):
                start = time.perf_counter()
                F.linear(x, w)
                cupy.cuda.Device().synchronize()
                runs.append(time.perf_counter() - start)
        times[np.dtype(dtype).name] = statistics.median(runs)
    speedup = times["float32"] / times["float16"]
    return speedup >= TENSOR_CORE_SPEEDUP, (
        f"linear fp32 {1e3 * times['float32']:.2f} ms, fp16 {1e3 * times['float16']:.2f} ms "
        f"({speedup:.1f}x, need {TENSOR_CORE_SPEEDUP}x)"
    )


def generation() -> dict:
    """d. gpt2-small, greedy, 24 new tokens with the KV cache: the GPU's tokens equal the CPU's."""
    import tinygrad_llm as tl
    from tinygrad_llm.model import GPTConfig, GPTModel

    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("gpt2-small", drop_rate=0.0)).eval()
    prompt = np.array([[15496, 11, 314, 716], [464, 3290, 286, 262]], dtype=np.int64)
    cpu = np.asarray(tl.generate(model, prompt, 24))
    model.to("cuda")
    start = time.perf_counter()
    gpu = tl.backend.to_numpy(tl.generate(model, prompt, 24))
    seconds = time.perf_counter() - start
    same = cpu.shape == gpu.shape and bool(np.array_equal(cpu, gpu))
    first = "" if same else f", first difference at new token {int(np.argmax((cpu != gpu).any(axis=0))) - 4}"
    return {"ok": same, "summary": f"{'same' if same else 'DIFFERENT'} tokens (2 x 24, {seconds:.1f} s){first}"}


def nccl() -> dict:
    """e. ``mpiexec -n 1`` (and ``-n 2`` with two GPUs) ``tinygrad-llm train --device cuda`` for two steps."""
    import cupy

    mpiexec = next(
        (
            p
            for p in (os.environ.get("MPIEXEC"), str(Path(sys.executable).parent / "mpiexec"))
            if p and Path(p).exists()
        ),
        shutil.which("mpiexec"),
    )
    if mpiexec is None:
        return {"ok": False, "summary": 'mpiexec not found (pip install -e ".[mpi]", or set MPIEXEC)'}
    counts = [1, 2] if cupy.cuda.runtime.getDeviceCount() >= 2 else [1]
    notes, ok = [], True
    for n in counts:
        with tempfile.TemporaryDirectory() as out:
            command = [mpiexec, "-n", str(n), sys.executable, "-m", "tinygrad_llm", "train", "--device", "cuda"]
            command += ["--preset", "tiny", "--context-length", "16", "--batch-size", "4", "--eval-iters", "2"]
            command += ["--sample-tokens", "8", "--warmup-steps", "0", "--max-steps", "2", "--out", f"{out}/run"]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            trained = done.returncode == 0 and (Path(out) / "run" / "checkpoints" / "ckpt-000002").exists()
        if not trained:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
            last = [line for line in done.stderr.splitlines() if line.strip()]
            notes.append(f"-n {n}: FAILED (exit {done.returncode}: {last[-1][:150] if last else 'no output'})")
        else:
            notes.append(f"-n {n}: 2 steps trained")
        ok &= trained
    if counts == [1]:
        notes.append("-n 2 not run (one GPU)")
    return {"ok": ok, "summary": "; ".join(notes)}


def speed() -> dict:
    """f. A gpt2-small training step (batch 8 x 1024), ours and torch eager, fp32 and fp16: ms per step."""
    torch = _torch()
    from _common import synced, time_interleaved
    from _steps import build_steps

    notes = []
    for precision in ("fp32", "fp16"):
        sides = ("tinygrad_llm", "torch eager") if torch is not None else ("tinygrad_llm",)
        steps = build_steps(
            "gpt2-small", sides=sides, torch=torch, batch=8, context=1024, device="cuda", precision=precision
        )
        medians = time_interleaved(synced(steps, "cuda", torch), repeats=3, number=1, warmup=1)
        ours = 1000 * medians["tinygrad_llm"]
        if "torch eager" in medians:
            theirs = 1000 * medians["torch eager"]
            notes.append(
                f"{precision} ours {ours:.0f} ms/step, torch {theirs:.0f} ms ({theirs / ours:.2f}x torch's speed)"
            )
        else:
            notes.append(f"{precision} ours {ours:.0f} ms/step (no torch with CUDA)")
        print(notes[-1], flush=True)
        del steps
    return {"ok": True, "summary": "; ".join(notes)}
