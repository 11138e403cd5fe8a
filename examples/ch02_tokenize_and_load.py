# %% [markdown]
# # Chapter 2: working with text data
#
# A model reads numbers, not text. This chapter turns Edith Wharton's short story "The Verdict" into what a
# GPT takes in: words and punctuation split by a regex, token ids from a vocabulary, byte-pair encoding
# (GPT-2's, and a small one trained here), input/target windows that slide over the ids, and finally
# token + position embeddings, a (batch, tokens, width) tensor.

# %%
"""Chapter 2: working with text data, on Edith Wharton's "The Verdict".

    python examples/ch02_tokenize_and_load.py [--data FOLDER_OR_FILE] [--device cpu|cuda]

1. read the text, split it into words and punctuation with a regex
2. a vocabulary and SimpleTokenizerV1; SimpleTokenizerV2 with <|unk|> and <|endoftext|>
3. byte-pair encoding: GPT-2's tokenizer (tiktoken), and a small BPE trained here on the text itself
4. next-token pairs with a sliding window; GPTDataset and create_dataloader batches
5. token embeddings + absolute position embeddings: the input of the GPT model

the-verdict.txt is found in --data (a file, or a folder holding it), else in $TINYGRAD_LLM_DATA.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.cli.common import example_parser  # --help, --device
from tinygrad_llm.cli.example import example_args  # flags from the command line or a notebook
from tinygrad_llm.data import GPTDataset, create_dataloader
from tinygrad_llm.files import require_data_file
from tinygrad_llm.tokenizer import (
    GPT2FilesNotFound,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    get_tokenizer,
    train_bpe,
)

FILENAME = "the-verdict.txt"


parser = example_parser(__doc__)
parser.add_argument("--data", help="the-verdict.txt, or a folder holding it (default: $TINYGRAD_LLM_DATA)")
args = example_args(parser)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def find_text(data: str | None) -> Path:
    """--data (a file or a folder with the-verdict.txt), else $TINYGRAD_LLM_DATA/the-verdict.txt."""
    return require_data_file(FILENAME, data)


# ---- 2.2-2.4 word-level tokenizers ----------------------------------------------------------------------


def simple_tokenizers(raw_text: str) -> None:
    section("2.2 tokenizing text")
    print("total number of characters:", len(raw_text))
    print(raw_text[:99])
    preprocessed = re.split(r'([,.:;?_!"()\']|--|\s)', raw_text)
    preprocessed = [item.strip() for item in preprocessed if item.strip()]
    print("number of words and punctuation marks:", len(preprocessed))
    print(preprocessed[:30])

    section("2.3 token ids: SimpleTokenizerV1")
    vocab = build_vocab(raw_text, special_tokens=())
    print("vocabulary size:", len(vocab))
    print("first entries:", list(vocab.items())[:8])
    tokenizer = SimpleTokenizerV1(vocab)
    text = """"It's the last he painted, you know," Mrs. Gisburn said with pardonable pride."""
    ids = tokenizer.encode(text)
    print("ids:", ids)
    print("decoded:", tokenizer.decode(ids))
    try:
        tokenizer.encode("Hello, do you like tea?")
    except KeyError as exc:
        print("V1 on an unknown word:", exc)

    section("2.4 special context tokens: SimpleTokenizerV2")
    vocab = build_vocab(raw_text)  # + <|endoftext|> and <|unk|>
    print("vocabulary size:", len(vocab), "last entries:", list(vocab.items())[-3:])
    tokenizer = SimpleTokenizerV2(vocab)
    text = " <|endoftext|> ".join(("Hello, do you like tea?", "In the sunlit terraces of the palace."))
    print(text)
    print("ids:", tokenizer.encode(text))
    print("decoded:", tokenizer.decode(tokenizer.encode(text)))


# ---- 2.5 byte-pair encoding -----------------------------------------------------------------------------


def byte_pair_encoding(raw_text: str, gpt2) -> None:
    section("2.5 byte pair encoding: GPT-2's tokenizer")
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    integers = gpt2.encode(text, allowed_special={"<|endoftext|>"})  # as the book; without it encode raises
    print("ids:", integers)
    print("decoded:", gpt2.decode(integers))
    word = "Akwirw ier"
    pieces = [gpt2.decode([i]) for i in gpt2.encode(word)]
    print(f"an unknown word {word!r} is split into known pieces:", pieces)
    print("vocabulary:", gpt2.n_vocab, "end of text id:", gpt2.eot_id)

    print("\na byte-level BPE trained on the-verdict itself (vocabulary 500):")
    small = train_bpe(raw_text, 500)
    for tok in (small, get_tokenizer("byte"), get_tokenizer("char", text=raw_text), gpt2):
        ids = tok.encode(raw_text)
        print(
            f"  {tok.name:5s} n_vocab={tok.n_vocab:6d}: {len(ids):6d} tokens, round trip "
            f"{'ok' if tok.decode(ids) == raw_text else 'FAILED'}"
        )
    print("  first merges learned:", [small.token_bytes[i].decode("utf-8", "replace") for i in range(256, 266)])


# ---- 2.6 sliding windows and data loaders ---------------------------------------------------------------


def data_sampling(raw_text: str, gpt2):
    section("2.6 data sampling with a sliding window")
    enc_text = gpt2.encode(raw_text)
    print("tokens in the text:", len(enc_text))
    enc_sample = enc_text[50:]
    context_size = 4
    x, y = enc_sample[:context_size], enc_sample[1 : context_size + 1]
    print(f"x: {x}\ny:      {y}")
    for i in range(1, context_size + 1):
        context, desired = enc_sample[:i], enc_sample[i]
        print(f"{gpt2.decode(context):>30s} ----> {gpt2.decode([desired])}")

    dataset = GPTDataset(enc_text, max_length=4, stride=1)
    print("\n", dataset)
    dataloader = create_dataloader(raw_text, batch_size=1, max_length=4, stride=1, shuffle=False, tokenizer=gpt2)
    data_iter = iter(dataloader)
    print("first batch:", [a.tolist() for a in next(data_iter)])
    print("second batch:", [a.tolist() for a in next(data_iter)])

    dataloader = create_dataloader(raw_text, batch_size=8, max_length=4, stride=4, shuffle=False, tokenizer=gpt2)
    inputs, targets = next(iter(dataloader))
    print(f"batch of 8, max_length 4, stride 4 ({len(dataloader)} batches per epoch)")
    print("inputs:\n", inputs, "\ntargets:\n", targets)
    return dataloader


# ---- 2.7-2.8 token and position embeddings --------------------------------------------------------------


def embeddings(dataloader, device: str) -> None:
    section("2.7 token embeddings")
    rng = np.random.default_rng(123)
    vocab_size, output_dim = 6, 3
    weight = tl.Tensor(rng.standard_normal((vocab_size, output_dim)).astype(np.float32), device=device)
    print("embedding weight (6 ids x 3 dims):\n", weight.numpy())
    print("embedding of id 3:", F.embedding(np.array([3]), weight).numpy())
    print(
        "embeddings of ids [2, 3, 5, 1] (a row lookup, no arithmetic):\n",
        F.embedding(np.array([2, 3, 5, 1]), weight).numpy(),
    )

    section("2.8 encoding word positions")
    vocab_size, output_dim, max_length = 50257, 256, 4
    token_embedding = tl.Tensor(0.02 * rng.standard_normal((vocab_size, output_dim)).astype(np.float32), device=device)
    pos_embedding = tl.Tensor(0.02 * rng.standard_normal((max_length, output_dim)).astype(np.float32), device=device)
    inputs, _ = next(iter(dataloader))
    print("token ids:", inputs.shape)
    token_embeddings = F.embedding(inputs, token_embedding)  # (8, 4) -> (8, 4, 256)
    print("token embeddings:", token_embeddings.shape)
    pos_embeddings = F.embedding(np.arange(max_length), pos_embedding)  # (4,) -> (4, 256)
    print("position embeddings:", pos_embeddings.shape)
    input_embeddings = token_embeddings + pos_embeddings  # (8, 4, 256) + (4, 256) broadcast
    print("input embeddings:", input_embeddings.shape, "on", input_embeddings.device)


# %% [markdown]
# Read the text, and GPT-2's vocabulary (from the data folder: nothing is downloaded when it is there).

# %%
try:
    tl.Tensor(np.zeros(1, dtype=np.float32), device=args.device)
    path = find_text(args.data)
    raw_text = path.read_text(encoding="utf-8")
    # GPT-2's vocab.bpe + encoder.json: beside the text (a data folder's gpt2/) or via $TINYGRAD_LLM_DATA
    gpt2 = get_tokenizer("gpt2", path=path.parent if (path.parent / "gpt2").is_dir() else None)
except (RuntimeError, FileNotFoundError, GPT2FilesNotFound, ValueError) as exc:
    parser.exit(1, f"error: {exc}\n")
print(f"reading {path}")

# %% [markdown]
# ## 2.2-2.4 Word-level tokenizers
#
# A regex splits on whitespace and punctuation; the sorted set of pieces is the vocabulary (about 1,130
# entries). `SimpleTokenizerV1` fails on a word it has never seen; `SimpleTokenizerV2` maps it to
# `<|unk|>` and marks the boundary between two texts with `<|endoftext|>`.

# %%
simple_tokenizers(raw_text)

# %% [markdown]
# ## 2.5 Byte-pair encoding
#
# GPT-2's tokenizer never meets an unknown word: it splits it into known pieces, down to single bytes.
# The table compares four tokenizers on the whole text: fewer tokens for a larger vocabulary.

# %%
byte_pair_encoding(raw_text, gpt2)

# %% [markdown]
# ## 2.6 Sliding windows
#
# The target of each position is the next token: targets are the inputs shifted by one. A data loader
# cuts the ids into windows of `max_length`, `stride` apart, and stacks them into (batch, max_length).

# %%
dataloader = data_sampling(raw_text, gpt2)

# %% [markdown]
# ## 2.7-2.8 Embeddings
#
# An embedding is a row lookup in a (vocabulary, width) matrix: (8, 4) ids become (8, 4, 256). Position
# embeddings (4, 256) are added to every row of the batch by broadcasting.

# %%
embeddings(dataloader, args.device)
