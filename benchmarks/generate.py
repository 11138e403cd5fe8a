"""Decoding speed: tokens/second of a GPT-2-small-sized model generating text, batch 1, with and without
the KV cache, beside PyTorch eager running the same algorithm on the same weights.

    python benchmarks/generate.py            # 200 new tokens, 3 repetitions
    python benchmarks/generate.py --quick    # 30 new tokens, 3 repetitions: about a minute on 2 cores

Variants, interleaved within each repetition (so machine noise hits them alike), greedy decoding:
  ours-cache     tinygrad_llm.generate(..., use_cache=True): prefill the prompt, then one token per step
  ours-nocache   use_cache=False: the book's loop, the whole sequence through the model at every step
  torch-cache    the PyTorch GPT of torch_gpt.py with a KV cache, same weights, same algorithm
  torch-nocache  the same PyTorch model without the cache
The figure is the ratio of medians measured side by side, never an absolute time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_device_argument, require_device, synced
from torch_gpt import build_torch_gpt, torch_generate

import tinygrad_llm as tl
from tinygrad_llm.model import GPTConfig, GPTModel

PROMPT = [15496, 11, 314, 716]  # "Hello, I am" in GPT-2's BPE


def machine() -> str:
    lines = [
        f"platform: {platform.platform()}, python {platform.python_version()}, cpus: {os.cpu_count()}",
        f"numpy {np.__version__}",
    ]
    try:
        import torch

        lines.append(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}")
    except ImportError:
        lines.append("torch: not installed")
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
    threads = {k: os.environ[k] for k in names if k in os.environ}
    lines.append(f"thread variables: {threads or 'unset (libraries use all cores)'}")
    lines.append(f"kernels: TINYGRAD_LLM_KERNELS={os.environ.get('TINYGRAD_LLM_KERNELS', 'unset')}")
    return "\n".join(lines)


# ---- the measurement ----------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="30 new tokens instead of 200")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens per run (default 200, --quick 30)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions; the median is reported")
    parser.add_argument("--preset", default="gpt2-small", help="model size (default gpt2-small, tied: 124M)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--skip-nocache", action="store_true", help="only the cached decoders")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    tokens = args.tokens or (30 if args.quick else 200)
    if tokens < 1 or args.repeats < 1:
        parser.error("--tokens and --repeats must be positive")

    require_device(args.device)
    print(machine() + f"\ndevice: {args.device}")
    cfg = GPTConfig.preset(args.preset, drop_rate=0.0, tie_weights=True)
    tl.manual_seed(0)
    model = GPTModel(cfg).eval()
    print(
        f"model: {args.preset} tied, {model.num_parameters():,} parameters, float32; prompt {len(PROMPT)} tokens, "
        f"{tokens} new tokens, batch 1, greedy, {args.repeats} repetitions"
    )
    prompt = np.array([PROMPT], dtype=np.int64)

    variants = {"ours-cache": lambda: tl.generate(model, prompt, tokens, use_cache=True)}
    if not args.skip_nocache:
        variants["ours-nocache"] = lambda: tl.generate(model, prompt, tokens, use_cache=False)
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: PyTorch reference skipped")
    if torch is not None:
        tg = build_torch_gpt(torch, model).to(args.device)  # from the weights while they are on the host
        variants["torch-cache"] = lambda: torch_generate(torch, tg, prompt, tokens, cfg.context_length, True)
        if not args.skip_nocache:
            variants["torch-nocache"] = lambda: torch_generate(torch, tg, prompt, tokens, cfg.context_length, False)

    model.to(args.device)
    variants = synced(variants, args.device, torch)  # on a GPU, each run ends when its work is done
    outputs = {name: fn() for name, fn in variants.items()}  # warm-up, and the tokens to compare
    reference = outputs["ours-cache"]
    for name, out in outputs.items():
        same = np.array_equal(out, reference)
        print(f"  {name:14s} tokens {'match' if same else 'DIFFER from'} ours-cache")

    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print("\n| variant | median s | tokens/s | vs ours-cache |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {tokens / seconds:.1f} | {medians['ours-cache'] / seconds:.2f}x |")
    print()
    if "ours-nocache" in medians:
        print(f"KV cache speed-up (ours):  {medians['ours-nocache'] / medians['ours-cache']:.2f}x")
    if "torch-nocache" in medians:
        print(f"KV cache speed-up (torch): {medians['torch-nocache'] / medians['torch-cache']:.2f}x")
    if "torch-cache" in medians:
        print(f"ours / torch time, cached:   {medians['ours-cache'] / medians['torch-cache']:.2f}")
    if "torch-nocache" in medians and "ours-nocache" in medians:
        print(f"ours / torch time, uncached: {medians['ours-nocache'] / medians['torch-nocache']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
