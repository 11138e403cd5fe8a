# %% [markdown]
# # Appendix D: warmup, cosine decay and gradient clipping
#
# Three additions to the training loop of chapter 5, written out as the book does: the learning rate
# climbs linearly during a warmup, then follows a cosine down to a tenth of its peak, and each gradient is
# clipped to a norm of at most 1 before the optimizer's step. We look at one batch's gradient before and
# after clipping, train, and draw the losses and the schedule the run used.

# %%
"""Appendix D: adding bells and whistles to the training loop — learning-rate warmup, cosine decay, and
gradient clipping — written out as the book does, on "The Verdict".

    python examples/appendix_d_training_loop.py [--preset mini] [--epochs 4]

Prints the learning rate schedule and the gradient norm before and after clipping, trains with all three,
and writes lr.png (the schedule the run used) and losses.png into --out.
"""

from __future__ import annotations

import math
from pathlib import Path

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args, show_or_save  # flags; pictures inline or to files
from tinygrad_llm.data import create_dataloader
from tinygrad_llm.files import require_data_file
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW, clip_grad_norm_
from tinygrad_llm.tokenizer import get_tokenizer
from tinygrad_llm.train import calc_loss_batch, find_highest_gradient, train_model
from tinygrad_llm.train.plot import matplotlib_available, plot_losses


def total_grad_norm(model) -> float:
    return math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters() if p.grad is not None))


# %%
parser = example_parser(__doc__)
parser.add_argument("--data", help="the-verdict.txt or its folder (default: $TINYGRAD_LLM_DATA)")
parser.add_argument("--preset", default="mini", help="model size (the book uses gpt2-small; mini is quick)")
parser.add_argument("--epochs", type=positive_int, default=4, help="passes over the training text")
parser.add_argument("--out", default="runs/appendix_d", help="folder for lr.png and losses.png")
args = example_args(parser)
try:
    text_data = require_data_file("the-verdict.txt", args.data).read_text(encoding="utf-8")
    tokenizer = get_tokenizer("gpt2")
except (FileNotFoundError, RuntimeError) as exc:
    parser.exit(1, f"error: {exc}\n")
config = GPTConfig.preset(args.preset, vocab_size=50257, context_length=256, drop_rate=0.1)
split = int(0.9 * len(text_data))
loader = dict(batch_size=2, max_length=256, stride=256, tokenizer=tokenizer)
train_loader = create_dataloader(text_data[:split], drop_last=True, shuffle=True, seed=123, **loader)
val_loader = create_dataloader(text_data[split:], drop_last=False, shuffle=False, **loader)
tl.manual_seed(123)
model = GPTModel(config).to(args.device)

# %% [markdown]
# ## D.3 What clipping does to one batch's gradient
#
# `clip_grad_norm_` scales every gradient by the same factor so that their joint norm is at most
# `max_norm`: directions are kept, only the length shrinks (here to half, so that the effect shows).

# %%
# D.3: what clipping does to one batch's gradient
loss = calc_loss_batch(*next(iter(train_loader)), model, args.device)
loss.backward()
norm = total_grad_norm(model)
print(f"gradient norm of one batch: {norm:.3f}, highest gradient {find_highest_gradient(model):.5f}")
clip_grad_norm_(model.parameters(), max_norm=norm / 2)  # half of it, so the effect shows
print(
    f"after clip_grad_norm_(max_norm={norm / 2:.3f}): {total_grad_norm(model):.3f}, highest gradient "
    f"{find_highest_gradient(model):.5f}"
)
model.zero_grad()

# %% [markdown]
# ## D.4 Training with all three
#
# Warmup over the first 20% of the steps, cosine decay after it, clipping at norm 1 on every step.

# %%
optimizer = AdamW(model.parameters(), lr=0.001, weight_decay=0.1)  # the book's peak_lr
warmup_steps = max(int(0.2 * len(train_loader) * args.epochs), 1)  # 20% of the steps, as the book
train_losses, val_losses, tokens_seen, lrs = train_model(
    model,
    train_loader,
    val_loader,
    optimizer,
    args.device,
    n_epochs=args.epochs,
    eval_freq=5,
    eval_iter=1,
    start_context="Every effort moves you",
    tokenizer=tokenizer,
    warmup_steps=warmup_steps,
)

# %% [markdown]
# The losses, and the learning rate of every step: a straight climb, then half a cosine.

# %%
out = Path(args.out)
show_or_save(
    plot_losses(
        list(range(1, len(train_losses) + 1)),
        tokens_seen,
        train_losses,
        val_losses,
        xlabel="Evaluations (every 5 steps)",
    ),
    out / "losses.png",
)
if matplotlib_available():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(lrs)), lrs)
    ax.set_xlabel("Steps")
    ax.set_ylabel("Learning rate")
    fig.tight_layout()
    show_or_save(fig, out / "lr.png")
print(f"learning rate: {lrs[0]:.2e} -> peak {max(lrs):.2e} -> {lrs[-1]:.2e}")
