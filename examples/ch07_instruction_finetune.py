# %% [markdown]
# # Chapter 7: fine-tuning a GPT to follow instructions
#
# 1,100 instruction/response pairs in the Alpaca prompt format. A batch pads its sequences with the
# end-of-text token and sets every target after the first one to -100, which the loss ignores. The model
# trains with chapter 5's loop, then answers test instructions it has not seen, and the answers are scored.

# %%
"""Chapter 7: fine-tuning a GPT to follow instructions.

    python examples/ch07_instruction_finetune.py [--init-from RUN_DIR|gpt2] [--epochs 2] [--judge-url URL]
                                                 [--device cpu|cuda]

The book's pipeline on instruction-data.json ($TINYGRAD_LLM_DATA): Alpaca prompts, the 85/10/5 split,
InstructionDataset with the custom collate (end-of-text padding, -100 past the first end-of-text),
training with chapter 5's loop, answers to the test instructions, scores. Without pretrained weights the
model is trained from scratch on 935 records and its answers are poor: the point is the pipeline; with
--init-from gpt2-medium (the book's choice) they become useful. With --judge-url (an Ollama /api/chat
endpoint) a judge model scores the answers 0-100, as the book; offline metrics need no server.
"""

from __future__ import annotations

import json

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args  # flags from the command line or a notebook
from tinygrad_llm.data import DataLoader
from tinygrad_llm.files import find_data_file
from tinygrad_llm.finetune import (
    InstructionDataset,
    custom_collate_fn,
    format_input,
    generate_test_responses,
    load_instruction_data,
    score_responses,
    split_instruction_data,
)
from tinygrad_llm.finetune.judge import OllamaJudge
from tinygrad_llm.optim import AdamW
from tinygrad_llm.train.simple import train_model_simple

# %%
parser = example_parser(__doc__)
parser.add_argument(
    "--init-from",
    default=None,
    help="a 'tinygrad-llm train' run folder, or a GPT-2 name/folder "
    "such as gpt2-medium, the book's (default: a small model "
    "from scratch)",
)
parser.add_argument("--epochs", type=positive_int, default=2, help="passes over the training records")
parser.add_argument("--max-test", type=positive_int, default=5, help="test instructions to answer")
parser.add_argument(
    "--judge-url",
    default=None,
    help="an Ollama-compatible /api/chat URL to score the answers 0-100, as the book (default: offline scores only)",
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
# ## The data, a prompt, and the collate function
#
# Three sequences of lengths 5, 2 and 3 become inputs (3, 5) padded with 50256, and targets shifted by
# one with -100 wherever there is nothing to predict.

# %%
data = load_instruction_data(find_data_file("instruction-data.json") or "instruction-data.json")
train_data, test_data, val_data = split_instruction_data(data[: args.records])
print(f"{len(train_data)} train / {len(test_data)} test / {len(val_data)} validation records")
print("=== a prompt ===\n" + format_input(data[50]) + f"\n\n### Response:\n{data[50]['output']}")
print("=== the collate function on the book's example ===")
inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
print(inputs, targets, sep="\n")

# %% [markdown]
# ## Training
#
# From GPT-2's weights with `--init-from` (the book uses gpt2-medium), else a small GPT from scratch: then
# the answers are poor, and the point is the pipeline.

# %%
if args.init_from:
    from argparse import Namespace

    from tinygrad_llm.finetune.recipe import load_start_model

    model, tokenizer, _ = load_start_model(
        Namespace(init_from=args.init_from, emb_dim=None, n_layers=None, n_heads=None, dropout=None)
    )
    lr = 5e-5
else:
    tokenizer = tl.get_tokenizer("gpt2")
    model = tl.GPTModel(tl.GPTConfig.preset("small-cpu", context_length=256, drop_rate=0.0, n_layers=2))
    lr = 1e-3
model.to(args.device)
allowed = model.config.context_length
train_loader = DataLoader(
    InstructionDataset(train_data, tokenizer, allowed_max_length=allowed),
    batch_size=8,
    shuffle=True,
    drop_last=True,
    seed=123,
)
val_loader = DataLoader(
    InstructionDataset(val_data, tokenizer, allowed_max_length=allowed), batch_size=8, drop_last=False
)
optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.1)
train_model_simple(
    model,
    train_loader,
    val_loader,
    optimizer,
    args.device,
    num_epochs=args.epochs,
    eval_freq=20,
    eval_iter=5,
    start_context=format_input(val_data[0]),
    tokenizer=tokenizer,
)

# %% [markdown]
# ## Answers to unseen instructions, and their scores
#
# Offline scores compare each answer with the expected one; `--judge-url` asks a larger model (through
# Ollama) for a 0-100 score, as the book does.

# %%
responses = generate_test_responses(model, tokenizer, test_data[: args.max_test], max_new_tokens=64, device=args.device)
for entry in responses[:3]:
    print(
        f"\n{format_input(entry)}\n\nCorrect response:\n>> {entry['output']}\n"
        f"Model response:\n>> {entry['model_response']}\n" + "-" * 40
    )
print("offline scores:", json.dumps(score_responses(responses)))
if args.judge_url:
    print("judge:", OllamaJudge(url=args.judge_url).score_entries(responses)["average"])
