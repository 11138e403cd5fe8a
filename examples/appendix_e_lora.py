# %% [markdown]
# # Appendix E: LoRA, fine-tuning with few parameters
#
# LoRA freezes a weight matrix W (in, out) and learns a low-rank change beside it: two small matrices A
# (in, r) and B (r, out), with B starting at zero so that training starts from the pretrained model. The
# layer computes x W + (alpha / r) x A B. With r = 16 that is 2% of GPT-2's parameters to train.

# %%
"""Appendix E: parameter-efficient fine-tuning with LoRA.

    python examples/appendix_e_lora.py [--rank 16] [--alpha 16] [--epochs 3] [--device cpu|cuda]

1. The counts on GPT-2 124M's configuration (no weights needed): 124M parameters, then with every Linear
   frozen and adapted at rank 16, 2,666,528 trainable ones (the book's figure; this project's fused QKV
   projection gets one LoRA per query/key/value block so that it matches).
2. LoRA at work on a small model: a spam classifier is trained from scratch for one epoch, then frozen,
   and only the rank-r adapters A and B learn from there, as the book trains GPT-2 with LoRA. At the end
   the adapters are merged into plain Linear weights (W + scale * (A B)^T), which give the same outputs.
"""

from __future__ import annotations

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args  # flags from the command line or a notebook
from tinygrad_llm.data import DataLoader
from tinygrad_llm.finetune import (
    SpamDataset,
    add_classification_head,
    calc_accuracy_loader,
    count_trainable_parameters,
    create_balanced_dataset,
    find_spam_file,
    freeze,
    lora_parameter_count,
    merge_lora,
    random_split,
    read_sms_spam,
    replace_linear_with_lora,
    set_trainable,
    train_classifier_simple,
    trainable_parameters,
)
from tinygrad_llm.optim import AdamW

# %%
parser = example_parser(__doc__)
parser.add_argument("--rank", type=positive_int, default=16, help="LoRA rank r: A is (in, r), B is (r, out)")
parser.add_argument(
    "--alpha", type=float, default=16.0, help="LoRA alpha: the adapters' output is scaled by alpha / rank"
)
parser.add_argument("--epochs", type=positive_int, default=3, help="epochs of LoRA training after the base model's one")
args = example_args(parser)

# %% [markdown]
# ## The counts on GPT-2 124M
#
# From the configuration alone, no weights needed: each Linear of in x out gains r (in + out) parameters.

# %%
print("=== LoRA on GPT-2 124M (from the configuration) ===")
config = tl.GPTConfig.preset("gpt2-small")
print(
    f"total parameters (untied, 2-class head): "
    f"{config.num_parameters() - config.emb_dim * config.vocab_size + config.emb_dim * 2 + 2:,}"
)
print(
    f"trainable with LoRA rank 16, one adapter per Q/K/V block: {lora_parameter_count(config, 16, 2):,} "
    "(the book: 2,666,528)"
)
print(
    f"trainable with one adapter on the fused QKV projection:    "
    f"{lora_parameter_count(config, 16, 2, split_qkv=False):,}"
)

# %% [markdown]
# ## LoRA at work on a small spam classifier
#
# A tiny GPT learns spam for one epoch with every layer trainable; then it is frozen, and only the
# adapters learn. At the end the adapters are merged into plain weights, W + (alpha / r) A B, which give
# the same outputs at no extra cost per token.

# %%
print("\n=== LoRA on a small spam classifier ===")
tl.manual_seed(123)
tokenizer = tl.get_tokenizer("byte")
texts, labels = create_balanced_dataset(*read_sms_spam(find_spam_file()), seed=123)
splits = random_split(texts, labels, 0.7, 0.1, seed=123)
sets = {name: SpamDataset(*part, tokenizer, max_length=96) for name, part in splits.items()}
loaders = {
    name: DataLoader(ds, batch_size=16, shuffle=name == "train", drop_last=name == "train", seed=123)
    for name, ds in sets.items()
}
model = tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=96))
add_classification_head(model, 2)
model.to(args.device)
set_trainable(model, "all")
print("1) the base model: one epoch with every layer trainable")
train_classifier_simple(
    model,
    loaders["train"],
    loaders["validation"],
    AdamW(trainable_parameters(model), lr=1e-3),
    args.device,
    1,
    1000,
    5,
)
freeze(model)
replace_linear_with_lora(model, rank=args.rank, alpha=args.alpha)
print(
    f"2) frozen, LoRA rank {args.rank} alpha {args.alpha:g} (scale {args.alpha / args.rank:g}): "
    f"{count_trainable_parameters(model):,} of {model.num_parameters():,} parameters trainable"
)
train_classifier_simple(
    model,
    loaders["train"],
    loaders["validation"],
    AdamW(trainable_parameters(model), lr=1e-3),
    args.device,
    args.epochs,
    1000,
    5,
)
test_accuracy = calc_accuracy_loader(loaders["test"], model, args.device)
ids = sets["test"].input_ids[:8]
adapted = tl.backend.to_numpy(model(ids).data).copy()
merge_lora(model)
merged = tl.backend.to_numpy(model(ids).data)
print(
    f"test accuracy {test_accuracy * 100:.2f}%; merged into plain Linears: max |difference| of the "
    f"outputs {np.abs(merged - adapted).max():.2e}, {model.num_parameters():,} parameters"
)
