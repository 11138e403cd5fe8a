# %% [markdown]
# # Chapter 5: pretraining on "The Verdict"
#
# A GPT learns to predict the next token of a 20,000-character story. The loss starts at ln 50257 ≈ 10.8
# (a uniform guess over GPT-2's vocabulary) and falls as training goes; after a few epochs the training
# loss keeps falling while the validation loss stops: the model memorises a text this short. Then the
# decoding strategies: greedy, and temperature with top-k sampling.

# %%
"""Chapter 5: pretraining on unlabeled data — the book's run on "The Verdict", then decoding strategies.

    python examples/ch05_pretrain_the_verdict.py                        # a CPU-sized GPT (small-cpu): minutes
    python examples/ch05_pretrain_the_verdict.py --preset gpt2-small    # the book's GPT-2 124M shape: a GPU's job

The book's settings but for the model's size (GPT_CONFIG_124M, 162M parameters untied, takes about an hour
on 2 CPU cores; small-cpu is 4 layers 128 wide with GPT-2's vocabulary, 13.7M parameters, most of them in
the 50,257-row embedding and output head): a context of 256, a 90/10 split, batches of 2 windows of 256 tokens,
AdamW (lr 4e-4, weight decay 0.1), 10 epochs, evaluation every 5 steps on 5 batches, a greedy sample of
"Every effort moves you" after each epoch. Then generation with temperature scaling and top-k sampling.
Writes losses.png (the book's figure 5.12) into --out.
"""

from __future__ import annotations

from pathlib import Path

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args, show_or_save  # flags; pictures inline or to files
from tinygrad_llm.data import create_dataloader
from tinygrad_llm.files import require_data_file
from tinygrad_llm.generate import generate, text_to_token_ids, token_ids_to_text
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import AdamW
from tinygrad_llm.tokenizer import get_tokenizer
from tinygrad_llm.train import calc_loss_loader
from tinygrad_llm.train.plot import plot_losses
from tinygrad_llm.train.simple import train_model_simple

# %%
parser = example_parser(__doc__)
parser.add_argument("--data", help="the-verdict.txt or its folder (default: $TINYGRAD_LLM_DATA)")
parser.add_argument(
    "--preset",
    default="small-cpu",
    help="model size: small-cpu finishes in minutes on a CPU; gpt2-small is the book's",
)
parser.add_argument("--epochs", type=positive_int, default=10, help="passes over the training text (the book: 10)")
parser.add_argument("--out", default="runs/ch05", help="folder for losses.png")
args = example_args(parser)
try:
    text_path = require_data_file("the-verdict.txt", args.data)
    tokenizer = get_tokenizer("gpt2")
except (FileNotFoundError, RuntimeError) as exc:
    parser.exit(1, f"error: {exc}\n")
text_data = text_path.read_text(encoding="utf-8")
print(f"{text_path}: {len(text_data):,} characters, {len(tokenizer.encode(text_data)):,} tokens")

# %% [markdown]
# ## 5.1 Training and validation data, and the loss before training
#
# The first 90% of the text for training, the rest for validation, cut into windows of 256 tokens.

# %%
# 5.1.3 training and validation sets: 90/10, windows of the context length side by side
config = GPTConfig.preset(args.preset, vocab_size=50257, context_length=256, drop_rate=0.1, qkv_bias=False)
split_idx = int(0.90 * len(text_data))
train_loader = create_dataloader(
    text_data[:split_idx],
    batch_size=2,
    max_length=config.context_length,
    stride=config.context_length,
    drop_last=True,
    shuffle=True,
    seed=123,
    tokenizer=tokenizer,
)
val_loader = create_dataloader(
    text_data[split_idx:],
    batch_size=2,
    max_length=config.context_length,
    stride=config.context_length,
    drop_last=False,
    shuffle=False,
    tokenizer=tokenizer,
)

tl.manual_seed(123)
model = GPTModel(config).to(args.device)
print(
    f"{args.preset} with GPT-2's {config.vocab_size:,}-token vocabulary and context {config.context_length}: "
    f"{model.num_parameters():,} parameters; {len(train_loader)} training batches per epoch"
)
with tl.no_grad():
    print(
        f"initial loss: train {calc_loss_loader(train_loader, model, args.device):.3f}, "
        f"val {calc_loss_loader(val_loader, model, args.device):.3f} (ln 50257 = 10.8: a uniform guess)"
    )

# %% [markdown]
# ## 5.2 Training
#
# The book's loop: for each batch, the loss, `backward()`, an AdamW step; every 5 steps both losses on a
# few batches, and after each epoch a greedy continuation of "Every effort moves you".

# %%
# 5.2 training: the book's loop and settings
optimizer = AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
train_losses, val_losses, tokens_seen = train_model_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    args.device,
    num_epochs=args.epochs,
    eval_freq=5,
    eval_iter=5,
    start_context="Every effort moves you",
    tokenizer=tokenizer,
)

# %% [markdown]
# The two curves (the book's figure 5.12): where the validation loss flattens while the training loss keeps
# falling, the model has started to memorise.

# %%
print(f"final: train loss {train_losses[-1]:.3f}, val loss {val_losses[-1]:.3f}")
show_or_save(
    plot_losses(
        list(range(1, len(train_losses) + 1)),
        tokens_seen,
        train_losses,
        val_losses,
        xlabel="Evaluations (every 5 steps)",
    ),
    Path(args.out) / "losses.png",
)

# %% [markdown]
# ## 5.3 Decoding strategies
#
# Greedy decoding always takes the most likely token; dividing the logits by a temperature above 1
# flattens the distribution, and top-k keeps only the k most likely tokens before sampling.

# %%
# 5.3 decoding strategies: greedy, then temperature scaling with top-k sampling
prompt = text_to_token_ids("Every effort moves you", tokenizer)
for label, options in (
    ("greedy", {}),
    ("temperature 1.4, top-k 25", {"temperature": 1.4, "top_k": 25, "seed": 123}),
):
    ids = generate(model, prompt, max_new_tokens=15, context_size=config.context_length, **options)
    print(f"{label}: {token_ids_to_text(ids, tokenizer)!r}")
