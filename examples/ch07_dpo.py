# %% [markdown]
# # Chapter 7, bonus: preference tuning with DPO
#
# Each instruction comes with two answers, a polite one (chosen) and a rude one (rejected). Direct
# preference optimisation raises the model's log-probability of the chosen answer relative to a frozen
# copy of itself, and lowers that of the rejected one; the reward margin, chosen minus rejected, should
# grow from 0 during training.

# %%
"""Chapter 7, bonus: preference tuning with direct preference optimization (DPO).

    python examples/ch07_dpo.py [--init-from RUN_DIR|gpt2-medium] [--sft-epochs 1] [--dpo-lr 5e-5]

The book's notebook on instruction-data-with-preference.json ($TINYGRAD_LLM_DATA): the 85/10/5 split, each
instruction with a chosen (polite) and a rejected (rude) response, the collate function that pads both to one
length and masks everything but the response, the DPO loss against a frozen reference model, and the reward
margins before and after one epoch.

GPT-2's weights cannot be downloaded everywhere, so by default the example first instruction-tunes a small
GPT (GPT-2's tokenizer, 2 blocks of 64) from scratch on the same records' ``output`` fields (chapter 7), and
then preference-tunes it. A from-scratch model this small needs a larger learning rate than the book's
5e-6 for a 355M pretrained model: --dpo-lr 5e-5 here. With --init-from an instruction-tuned GPT-2 medium and
--dpo-lr 5e-6 it is the book's run (loss 0.693 -> ~0.61, margins ~2 after 116 steps).
The same run from the command line: ``tinygrad-llm finetune-dpo --init-from RUN --out OUT``.
"""

from __future__ import annotations

import time

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args, show_or_save  # flags; pictures inline or to files
from tinygrad_llm.data import DataLoader
from tinygrad_llm.files import find_data_file
from tinygrad_llm.finetune import InstructionDataset, format_input, split_instruction_data
from tinygrad_llm.finetune.dpo import evaluate_dpo_loss_loader, precompute_reference_logprobs, train_model_dpo_simple
from tinygrad_llm.finetune.preference import PreferenceDataset, load_preference_data, preference_collate_fn
from tinygrad_llm.optim import AdamW
from tinygrad_llm.train import train_model_simple
from tinygrad_llm.train.plot import plot_values

# %%
parser = example_parser(__doc__)
parser.add_argument(
    "--init-from",
    default=None,
    help="an instruction-tuned run folder or GPT-2 name/folder (default: instruction-tune a small GPT from scratch)",
)
parser.add_argument("--sft-epochs", type=positive_int, default=1, help="instruction-tuning epochs of the fresh model")
parser.add_argument(
    "--dpo-lr",
    type=float,
    default=None,
    help="DPO learning rate (default: 5e-5 for a fresh model, 5e-6 with --init-from)",
)
parser.add_argument("--beta", type=float, default=0.1, help="DPO's beta: how far the policy may move")
parser.add_argument(
    "--max-length", type=positive_int, default=128, help="allowed_max_length: tokens per sequence (the book: 1024)"
)
parser.add_argument("--plot", default=None, metavar="PNG", help="write the reward-margin plot here")
parser.add_argument(
    "--save-sft",
    default=None,
    metavar="DIR",
    help="save the instruction-tuned model here (then: tinygrad-llm finetune-dpo --init-from DIR)",
)
parser.add_argument(
    "--records",
    type=positive_int,
    default=None,
    help="use only the first N of the 1,100 records, for a quick look (default: all)",
)
args = example_args(parser)
tl.manual_seed(123)

# %% [markdown]
# ## The data and the collate function
#
# A batch holds both answers padded to one length, with masks that keep only the response tokens: the
# prompt is the same for both and must not count in the loss.

# %%
data = load_preference_data(
    find_data_file("instruction-data-with-preference.json") or "instruction-data-with-preference.json"
)
train_data, test_data, val_data = split_instruction_data(data[: args.records])
print(f"{len(train_data)} train / {len(test_data)} test / {len(val_data)} validation records")
entry = data[50]
print(
    f"=== a preference pair ===\n{format_input(entry)}\n\n### Response:\n"
    f"chosen:   {entry['chosen']}\nrejected: {entry['rejected']}"
)
print("=== the collate function: padded sequences and response-only masks ===")
# prompt [1, 2]; 9, 9 stand for the two "\n" tokens that open "### Response:", masked with the prompt
batch = preference_collate_fn([{"prompt": [1, 2], "chosen": [1, 2, 9, 9, 3, 4, 5], "rejected": [1, 2, 9, 9, 6]}])
print("chosen  ", batch["chosen"][0], batch["chosen_mask"][0].astype(int))
print("rejected", batch["rejected"][0], batch["rejected_mask"][0].astype(int))

# %% [markdown]
# ## The starting model
#
# DPO starts from an instruction-tuned model. Without GPT-2's weights, a small GPT is instruction-tuned
# here first, as in chapter 7.

# %%
if args.init_from:
    from argparse import Namespace

    from tinygrad_llm.finetune.recipe import load_start_model

    model, tokenizer, _ = load_start_model(
        Namespace(init_from=args.init_from, emb_dim=None, n_layers=None, n_heads=None, dropout=0.0)
    )
    dpo_lr = args.dpo_lr or 5e-6
else:
    print("\n=== instruction fine-tuning a small GPT from scratch (chapter 7) ===")
    tokenizer = tl.get_tokenizer("gpt2")
    model = tl.GPTModel(
        tl.GPTConfig.preset("small-cpu", context_length=args.max_length, emb_dim=64, n_layers=2, drop_rate=0.0)
    )
    if args.device:
        model.to(args.device)
    sft_loader = DataLoader(
        InstructionDataset(train_data, tokenizer, allowed_max_length=args.max_length),
        batch_size=8,
        shuffle=True,
        seed=123,
    )
    val_sft = DataLoader(
        InstructionDataset(val_data, tokenizer, allowed_max_length=args.max_length), batch_size=8, drop_last=False
    )
    start = time.perf_counter()
    train_model_simple(
        model,
        sft_loader,
        val_sft,
        AdamW(model.parameters(), lr=2e-3, weight_decay=0.1),
        args.device,
        num_epochs=args.sft_epochs,
        eval_freq=40,
        eval_iter=3,
        start_context=format_input(val_data[0]),
        tokenizer=tokenizer,
    )
    print(f"({time.perf_counter() - start:.0f}s)")
    dpo_lr = args.dpo_lr or 5e-5
    if args.save_sft:
        from tinygrad_llm.finetune.io import save_finetuned

        save_finetuned(args.save_sft, model, tokenizer, {"task": "instruction", "prompt_format": "alpaca"})
if args.device:
    model.to(args.device)

# %% [markdown]
# ## DPO
#
# The loss is -log sigmoid(beta * (policy's log-ratio of chosen over rejected - the reference's)): ln 2 =
# 0.693 at the start, where the policy is the reference.

# %%
print("\n=== DPO ===")
train_set = PreferenceDataset(train_data, tokenizer, allowed_max_length=args.max_length)
val_set = PreferenceDataset(val_data, tokenizer, allowed_max_length=args.max_length)
# The reference model is the starting model, frozen: its log-probabilities are computed once, here, so it
# needs no second copy in memory (the book keeps a copy and runs it at every step: the same numbers).
start = time.perf_counter()
for dataset in (train_set, val_set):
    precompute_reference_logprobs(model, dataset, batch_size=8, device=args.device)
print(f"reference log-probabilities of {len(train_set) + len(val_set)} pairs: {time.perf_counter() - start:.0f}s")
train_loader = DataLoader(train_set, batch_size=8, shuffle=True, drop_last=True, seed=123)
val_loader = DataLoader(val_set, batch_size=8, drop_last=False)
before = evaluate_dpo_loss_loader(model, None, train_loader, val_loader, args.beta, eval_iter=5, device=args.device)
print(
    f"before: train loss {before['train_loss']:.3f}, val loss {before['val_loss']:.3f} (ln 2 = 0.693), "
    f"margins {before['train_reward_margin']:.3f} / {before['val_reward_margin']:.3f}"
)
optimizer = AdamW(model.parameters(), lr=dpo_lr, weight_decay=0.01)
start = time.perf_counter()
tracking = train_model_dpo_simple(
    model,
    None,
    train_loader,
    val_loader,
    optimizer,
    num_epochs=1,
    beta=args.beta,
    eval_freq=10,
    eval_iter=2,
    device=args.device,
)
print(f"({time.perf_counter() - start:.0f}s)")
after = evaluate_dpo_loss_loader(model, None, train_loader, val_loader, args.beta, eval_iter=None, device=args.device)
print(
    f"after one epoch (all {len(train_set)} / {len(val_set)} pairs): train loss {after['train_loss']:.3f}, "
    f"val loss {after['val_loss']:.3f}; reward margin train {after['train_reward_margin']:.3f}, "
    f"val {after['val_reward_margin']:.3f} (chosen {after['val_chosen_reward']:+.3f}, "
    f"rejected {after['val_rejected_reward']:+.3f})"
)

# %% [markdown]
# The reward margin during training (written to `--plot` on the command line): above 0, the model prefers
# the chosen answers more than the reference did.

# %%
margins = [
    np.subtract(tracking[f"{s}_chosen_rewards"], tracking[f"{s}_rejected_rewards"]).tolist() for s in ("train", "val")
]
fig = plot_values(
    tracking["steps"],
    tracking["tokens_seen"],
    *margins,
    label="reward margin",
    xlabel="Steps",
    top_xlabel="Tokens seen",
)
show_or_save(fig, args.plot)
