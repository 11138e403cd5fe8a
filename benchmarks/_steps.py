"""One training step (forward, backward, clip at 1.0, AdamW) of the same GPT on each side, for the benchmarks.

    from _steps import SHAPES, build_steps
    steps = build_steps("baby", sides=("tinygrad_llm", "torch eager", "torch.compile"))
    steps["tinygrad_llm"]()          # one step

Every side starts from the same weights and trains on the same batch. SHAPES are the issue's three model
sizes (dropout 0, untied output head).
"""

from __future__ import annotations

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm.amp import MixedPrecision
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW, param_groups_for_weight_decay
from tinygrad_llm.train.step import train_step

# name -> (config, batch size): nanoGPT's CPU "baby" run; a 6-layer 384-wide char model; GPT-2 small
SHAPES = {
    "baby": (GPTConfig(vocab_size=65, context_length=64, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0), 12),
    "medium": (GPTConfig(vocab_size=65, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.0), 8),
    "gpt2-small": (GPTConfig.preset("gpt2-small", context_length=64, drop_rate=0.0), 4),
}
SIDES = ("tinygrad_llm", "torch eager", "torch.compile")


def shape_config(shape: str, batch: int | None = None, context: int | None = None):
    """(config, batch) of a SHAPES name, or of a preset (``GPTConfig.preset``) at batch 12, context 64;
    ``batch``/``context`` override either."""
    if shape in SHAPES:
        config, default_batch = SHAPES[shape]
    else:
        config, default_batch = GPTConfig.preset(shape, drop_rate=0.0, context_length=context or 64), 12
    if context is not None and context != config.context_length:
        config = GPTConfig(**{**config.to_dict(), "context_length": context})
    return config, batch or default_batch


def build_steps(
    shape: str,
    sides=SIDES,
    torch=None,
    batch: int | None = None,
    context: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """name -> zero-argument callable running one training step; a side that cannot be built is left out
    with a printed reason (torch missing, torch.compile failing on this machine).

    ``device``: where both sides train (the batch starts on the host each step, as from a data loader).
    ``precision``: fp32/tf32 (TF32 itself is switched by _common.set_tf32), fp16 (autocast and a loss
    scaler on both sides) or bf16 (autocast)."""
    tl.runtime.configure()  # host memory and threads as the Trainer applies them (--threads: set before)
    config, batch = shape_config(shape, batch, context)
    tl.manual_seed(0)
    model = GPTModel(config)
    rng = np.random.default_rng(0)
    x = rng.integers(0, config.vocab_size, (batch, config.context_length))
    y = rng.integers(0, config.vocab_size, (batch, config.context_length))
    steps = {}
    torch_sides = [s for s in sides if s.startswith("torch")]
    if torch_sides and torch is None:
        print(f"torch is not installed: {', '.join(torch_sides)} skipped")
    for side in torch_sides if torch is not None else ():  # built from the weights while they are on the host
        step = _torch_step(torch, model, x, y, compiled=side == "torch.compile", device=device, precision=precision)
        if step is not None:
            steps[side] = step
    if "tinygrad_llm" in sides:
        model.to(device)
        optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4)
        amp = MixedPrecision(precision, device)

        def ours_step():  # the trainer's step: on the CPU, a big enough batch in parts side by side on the cores
            train_step(model, optimizer, [(x, y)], device, amp, grad_clip=1.0)  # (fp16: unscale first) clip, AdamW

        steps = {"tinygrad_llm": ours_step, **steps}
    return steps


def _torch_step(torch, model, x, y, compiled: bool, device: str = "cpu", precision: str = "fp32"):
    from torch_gpt import build_torch_gpt, decay_groups

    tg = build_torch_gpt(torch, model).train().to(device)
    optimizer = torch.optim.AdamW(decay_groups(tg, 0.1), lr=1e-4)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).flatten()
    low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    forward = tg
    if compiled:
        try:
            forward = torch.compile(tg)
            forward(tx.to(device))  # compile now, so a failure is reported here and not inside a timing
        except Exception as exc:  # no C++ compiler, an unsupported Python, ...: say so and go on
            print(f"torch.compile skipped: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
            return None

    def torch_step():
        with torch.autocast(device, dtype=low, enabled=low is not None):
            loss = torch.nn.functional.cross_entropy(forward(tx.to(device)).flatten(0, 1), ty.to(device))
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(tg.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return torch_step
