# %% [markdown]
# # Chapter 5, the end: OpenAI's GPT-2 weights in the model built by hand
#
# The GPTModel of chapter 4 has exactly GPT-2's layout, so OpenAI's trained weights drop into it: read
# from the Hugging Face files (config.json + model.safetensors) straight into NumPy arrays. Then the
# prompt "Every effort moves you" is continued, greedily and with sampling: now the text reads as English.

# %%
"""Chapter 5, the end: loading OpenAI's pretrained GPT-2 weights into the model built by hand.

    python examples/ch05_load_gpt2.py --model gpt2          # online: downloaded once (548 MB), checked
    python examples/ch05_load_gpt2.py --path FOLDER         # offline: a Hugging Face GPT-2 folder

The book loads the weights from OpenAI's TensorFlow checkpoint; here they come from the Hugging Face
layout (config.json + model.safetensors) straight into NumPy arrays, with neither TensorFlow nor PyTorch.
Then the book's prompt, "Every effort moves you", is continued greedily and with temperature + top-k
sampling, as in section 5.3.

Offline, with no weights on the machine: on a computer with network, download config.json and
model.safetensors from https://huggingface.co/openai-community/gpt2 (or run this example there once and
copy ~/.cache/tinygrad_llm/models/gpt2), then pass the folder with --path.
"""

from __future__ import annotations

import time

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm.cli.common import example_parser, positive_int  # --help, --device
from tinygrad_llm.cli.example import example_args  # flags from the command line or a notebook
from tinygrad_llm.model import GPTModel
from tinygrad_llm.model.pretrained import HF_MODELS, PretrainedError

PROMPT = "Every effort moves you"


parser = example_parser(__doc__)
which = parser.add_mutually_exclusive_group()
which.add_argument(
    "--model",
    default="gpt2",
    choices=list(HF_MODELS),
    help="a GPT-2 size to download once into the cache (default gpt2, 124M)",
)
which.add_argument("--path", default=None, help="a local Hugging Face GPT-2 folder (config.json + model.safetensors)")
parser.add_argument("--prompt", default=PROMPT, help="the text to continue")
parser.add_argument("--max-new-tokens", type=positive_int, default=25, help="tokens to generate")
args = example_args(parser)

try:
    tokenizer = tl.get_tokenizer("gpt2")
except Exception as exc:  # no local vocabulary and no network
    parser.exit(1, f"error: GPT-2's tokenizer is unavailable ({str(exc).splitlines()[0]})\n")

# %% [markdown]
# ## Loading the weights
#
# Downloaded once into the cache (548 MB for the 124M model, checked against its published size and
# hash), or read from `--path`. Each Hugging Face tensor is matched to one parameter of our model, shapes
# checked; the output head shares the token embedding's weights, as in GPT-2.

# %%
source = args.path or args.model
start = time.perf_counter()
try:
    model = GPTModel.from_pretrained(source, device=args.device)
except PretrainedError as exc:
    parser.exit(
        1,
        f"error: cannot load GPT-2 weights from {source!r}: {exc}\n\nThere are no GPT-2 weights here and "
        "they cannot be downloaded. Get config.json and model.safetensors from "
        "https://huggingface.co/openai-community/gpt2 on a machine with network, copy them here, and run "
        "again with --path FOLDER (or set TINYGRAD_LLM_CACHE to a cache folder that holds models/gpt2/).\n",
    )
cfg = model.config
print(
    f"loaded {source} in {time.perf_counter() - start:.1f}s: {model.num_parameters():,} parameters, "
    f"{cfg.n_layers} layers, {cfg.n_heads} heads, {cfg.emb_dim} wide, context {cfg.context_length}, "
    f"qkv_bias={cfg.qkv_bias}, output head tied to the token embedding: {cfg.tie_weights}"
)

# %% [markdown]
# ## Generating text
#
# Greedy decoding repeats itself after a while; temperature 1.5 with the 50 most likely tokens gives more
# varied text (our random generator is not PyTorch's, so the sample differs from the book's).

# %%
idx = tl.text_to_token_ids(args.prompt, tokenizer)  # (1, T)
greedy = tl.generate(model, idx, max_new_tokens=args.max_new_tokens, context_size=cfg.context_length)
print(f"\ngreedy (temperature 0):\n  {tl.token_ids_to_text(greedy, tokenizer)!r}")
tl.manual_seed(123)  # the book's seed; our generator differs from torch's, so the text differs from the book's
sampled = tl.generate(
    model,
    idx,
    max_new_tokens=args.max_new_tokens,
    context_size=cfg.context_length,
    temperature=1.5,
    top_k=50,
    seed=123,
)
print(f"\ntemperature 1.5, top-k 50 (the book's section 5.3 settings):\n  {tl.token_ids_to_text(sampled, tokenizer)!r}")
assert np.array_equal(greedy[:, : idx.shape[1]], idx)
