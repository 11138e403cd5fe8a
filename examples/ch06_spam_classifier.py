# %% [markdown]
# # Chapter 6: fine-tuning a GPT to classify spam
#
# A GPT becomes a classifier: its 50,257-way output head is replaced by a 2-way one (ham, spam), and only
# the output at the last token, the one that has seen the whole message, is read. The SMS Spam Collection
# is balanced, split 70/10/20 and padded to one length; then the book's training loop, the accuracies,
# and two new messages classified.

# %%
"""Chapter 6: fine-tuning a GPT to classify SMS messages as spam or not spam.

    python examples/ch06_spam_classifier.py [--init-from RUN_DIR|gpt2] [--epochs 8] [--device cpu|cuda]

The book's steps on the SMS Spam Collection ($TINYGRAD_LLM_DATA/sms_spam_collection, else a checked
download from UCI): balance ham and spam, split 70/10/20, pad every message to one length, replace the
vocabulary head by a 2-class Linear, train, and classify new texts from the last token's output.

Without GPT-2 weights (no network) it trains a small model from scratch with the byte tokenizer, all
layers trainable: about 94-95% test accuracy in a few minutes on a laptop CPU. With --init-from it starts
from a pretrained model and uses the book's recipe (last block + final norm + head, lr 5e-5).

This is the book's loop, step by step. ``tinygrad-llm finetune-classifier`` trains the measured from-scratch
recipe instead, chosen on validation accuracy alone by ``benchmarks/spam_recipe.py`` (its test accuracy in
the README and benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args  # flags from the command line or a notebook
from tinygrad_llm.data import DataLoader
from tinygrad_llm.finetune import (
    SpamDataset,
    add_classification_head,
    calc_accuracy_loader,
    classify_text,
    create_balanced_dataset,
    find_spam_file,
    random_split,
    read_sms_spam,
    set_trainable,
    train_classifier_simple,
    trainable_parameters,
)
from tinygrad_llm.optim import AdamW

# %%
parser = example_parser(__doc__)
parser.add_argument(
    "--init-from",
    default=None,
    help="a 'tinygrad-llm train' run folder, or a GPT-2 name/folder (default: a small model from scratch)",
)
parser.add_argument("--epochs", type=positive_int, default=8, help="passes over the training messages")
args = example_args(parser)
tl.manual_seed(123)

# %% [markdown]
# ## The data
#
# 747 spam messages against 4,825 ham: the ham is cut down to 747 so that guessing gives 50%.

# %%
print("=== data ===")
texts, labels = read_sms_spam(find_spam_file())
print(f"{len(texts)} messages: {labels.count(0)} ham, {labels.count(1)} spam")
texts, labels = create_balanced_dataset(texts, labels, seed=123)
splits = random_split(texts, labels, 0.7, 0.1, seed=123)
print({name: len(part[0]) for name, part in splits.items()})

# %% [markdown]
# ## The model and its new head
#
# Without `--init-from` a small GPT is trained from scratch on bytes, every layer trainable; from GPT-2's
# weights the book trains only the last block, the final norm and the new head.

# %%
print("\n=== model ===")
if args.init_from:
    from argparse import Namespace

    from tinygrad_llm.finetune.recipe import load_start_model

    model, tokenizer, described = load_start_model(
        Namespace(init_from=args.init_from, emb_dim=None, n_layers=None, n_heads=None, dropout=None)
    )
    recipe, lr, max_length = "last-block", 5e-5, None
else:  # from scratch: bytes, a 2-layer 64-wide GPT, every layer trainable
    tokenizer, recipe, lr, max_length = tl.get_tokenizer("byte"), "all", 1e-3, 160
    model = tl.GPTModel(
        tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=max_length, drop_rate=0.1)
    )
    described = "a fresh 2-layer GPT (from scratch)"
train_set = SpamDataset(*splits["train"], tokenizer, max_length=max_length)
max_length = min(train_set.max_length, model.config.context_length)
train_set = SpamDataset(*splits["train"], tokenizer, max_length=max_length)
val_set = SpamDataset(*splits["validation"], tokenizer, max_length=max_length)
test_set = SpamDataset(*splits["test"], tokenizer, max_length=max_length)
add_classification_head(model, num_classes=2)  # out_head: Linear(emb_dim, 2)
set_trainable(model, recipe)
if args.device:
    model.to(args.device)
print(
    f"{described}: {model.num_parameters(trainable_only=True):,} of {model.num_parameters():,} parameters "
    f"trainable ({recipe}); messages padded to {max_length} tokens"
)

train_loader = DataLoader(train_set, batch_size=16, shuffle=True, drop_last=True, seed=123)
val_loader = DataLoader(val_set, batch_size=16, drop_last=False)
test_loader = DataLoader(test_set, batch_size=16, drop_last=False)
optimizer = AdamW(trainable_parameters(model), lr=lr, weight_decay=0.1)

# %% [markdown]
# ## Training and accuracy
#
# The cross-entropy of the last token's two logits against the label; accuracy on all three splits after.

# %%
print("\n=== training ===")
start = time.perf_counter()
train_classifier_simple(
    model, train_loader, val_loader, optimizer, args.device, num_epochs=args.epochs, eval_freq=50, eval_iter=5
)
print(f"training took {time.perf_counter() - start:.0f}s")
for name, loader in (("Training", train_loader), ("Validation", val_loader), ("Test", test_loader)):
    print(f"{name} accuracy: {calc_accuracy_loader(loader, model, args.device) * 100:.2f}%")

# %% [markdown]
# ## Classifying new messages

# %%
print("\n=== classifying new texts ===")
for text in (
    "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
    "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
):
    print(f"{classify_text(text, model, tokenizer, max_length=max_length):>8}: {text}")
