# %% [markdown]
# # Tiny Shakespeare, character by character: a bigram model, then a GPT
#
# The path of freeCodeCamp's course (and of nanoGPT): one character is one token, 65 of them. A bigram model
# predicts the next character from the current one alone; a GPT looks at the 64 characters before it.
# The difference shows in the validation loss (about 2.5 against 1.9) and in the samples.

# %%
"""The freeCodeCamp path on Tiny Shakespeare, character level: a bigram model first, then a GPT.

    python examples/freecodecamp_shakespeare.py [--gpt-steps 2000] [--out runs/shakespeare]

1. A bigram language model: one embedding table whose row for a character holds the logits of the next one.
   It learns which letter follows which, and no more (val loss about 2.5).
2. A GPT with nanoGPT's CPU configuration (4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3 with cosine
   decay, dropout 0), trained with Trainer: attention lets it use the whole block (val loss about 1.9 after
   2,000 steps). Its run folder works with `tinygrad-llm generate --checkpoint` and `chat`.
"""

from __future__ import annotations

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import nn
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args, show_or_save  # flags; pictures inline or to files
from tinygrad_llm.data import GPTDataset
from tinygrad_llm.files import require_data_file
from tinygrad_llm.generate import generate
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW
from tinygrad_llm.tokenizer import get_tokenizer
from tinygrad_llm.train.figures import plot_grad_norms
from tinygrad_llm.train.plot import plot_losses
from tinygrad_llm.train.trainer import TrainConfig, Trainer


class BigramLanguageModel(nn.Module):
    """logits of the next character = a row of a (vocab, vocab) table picked by the current character."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx):
        return self.token_embedding_table(idx)  # (B, T) -> (B, T, vocab)


def train_bigram(train_ids, val_ids, vocab_size, steps: int, rng) -> BigramLanguageModel:
    model = BigramLanguageModel(vocab_size)
    optimizer = AdamW(model.parameters(), lr=1e-2)

    def batch(ids, block=8, size=32):
        starts = rng.integers(0, len(ids) - block - 1, size)
        x = np.stack([ids[s : s + block] for s in starts])
        y = np.stack([ids[s + 1 : s + block + 1] for s in starts])
        return x, y

    for step in range(steps + 1):
        x, y = batch(train_ids)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % (steps // 4) == 0:
            with tl.no_grad():
                val = np.mean([F.cross_entropy(model(vx), vy).item() for vx, vy in (batch(val_ids) for _ in range(20))])
            print(f"bigram step {step:5d}: train loss {loss.item():.3f}, val loss {val:.3f}")
    return model


# %%
parser = example_parser(__doc__)
parser.add_argument("--data", help="tinyshakespeare.txt or its folder (default: $TINYGRAD_LLM_DATA)")
parser.add_argument("--bigram-steps", type=positive_int, default=2000, help="training steps of the bigram model")
parser.add_argument(
    "--gpt-steps", type=positive_int, default=2000, help="training steps of the GPT (2,000 is nanoGPT's CPU run)"
)
parser.add_argument("--out", default="runs/shakespeare", help="the GPT's run folder (generate/chat read it)")
args = example_args(parser)
try:
    text = require_data_file("tinyshakespeare.txt", args.data).read_text(encoding="utf-8")
except FileNotFoundError as exc:
    parser.exit(1, f"error: {exc}\n")
tokenizer = get_tokenizer("char", text=text)
ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]
print(f"{len(text):,} characters, a vocabulary of {tokenizer.n_vocab}")

# %% [markdown]
# ## 1. The bigram model
#
# One (65, 65) table: the row of the current character holds the logits of the next one. It learns which
# letter tends to follow which, and its samples look like words only by accident.

# %%
tl.manual_seed(1337)
rng = np.random.default_rng(1337)
bigram = train_bigram(train_ids, val_ids, tokenizer.n_vocab, args.bigram_steps, rng)
sample = generate(bigram, np.zeros((1, 1), dtype=np.int64), max_new_tokens=200, temperature=1.0, seed=1)
print("bigram sample:\n" + tokenizer.decode(sample[0].tolist()) + "\n")

# %% [markdown]
# ## 2. A GPT with nanoGPT's CPU settings
#
# 4 layers, 4 heads, 128 wide, 64 characters of context, trained by the library's `Trainer` (warmup,
# cosine decay, clipping, evaluation and checkpoints into `--out`, which `tinygrad-llm generate` reads).

# %%
config = GPTConfig(vocab_size=tokenizer.n_vocab, context_length=64, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0)
model = GPTModel(config).to(args.device)
train = TrainConfig(
    max_steps=args.gpt_steps,
    batch_size=12,
    lr=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    weight_decay=0.1,
    betas=(0.9, 0.99),
    grad_clip=1.0,
    eval_interval=250,
    eval_iters=20,
)
trainer = Trainer(
    model,
    GPTDataset(train_ids, 64, stride=1),
    GPTDataset(val_ids, 64, stride=64),
    train,
    args.out,
    tokenizer=tokenizer,
    device=args.device,
)
history = trainer.fit()

# %% [markdown]
# The losses, and the gradient norm of each layer at each evaluation (on a log scale): they shrink as the
# loss falls, and no layer's gradient vanishes or explodes.

# %%
steps = [r["step"] for r in history]
tokens = [r["tokens_seen"] for r in history]
show_or_save(
    plot_losses(steps, tokens, [r["train_loss"] for r in history], [r["val_loss"] for r in history]),
    trainer.out_dir / "losses.png",
)
show_or_save(plot_grad_norms(trainer.grad_norm_history), trainer.out_dir / "grad_norms.png")

# %%
print(
    f"GPT: val loss {history[-1]['val_loss']:.3f} after {history[-1]['step']} steps ({history[-1]['elapsed_s']:.0f}s)"
)
sample = generate(model, np.zeros((1, 1), dtype=np.int64), max_new_tokens=300, context_size=64, temperature=1.0, seed=1)
print("GPT sample:\n" + tokenizer.decode(sample[0].tolist()))
