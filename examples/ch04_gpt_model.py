"""Chapter 4: implementing a GPT model from scratch to generate text.

    python examples/ch04_gpt_model.py [--device cpu|cuda] [--preset gpt2-small]

The configuration (the book's GPT_CONFIG_124M), layer normalisation and GELU on small inputs, a
transformer block, the whole GPTModel with its parameter count (163M untied, 124M with the output head
tied to the token embedding, as GPT-2) and memory, and untrained generation from "Hello, I am": random
weights give random tokens, which chapter 5's training fixes.
"""

from __future__ import annotations

import time

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import nn
from tinygrad_llm.cli.common import example_parser, run_example  # --help, --device, Ctrl-C
from tinygrad_llm.model import PRESETS, GPTConfig, GPTModel, TransformerBlock, estimate_memory, format_bytes

np.set_printoptions(precision=4, suppress=True)


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def load_tokenizer():
    """GPT-2's BPE when its files are available (TINYGRAD_LLM_DATA or tiktoken's cache), else bytes."""
    try:
        from tinygrad_llm.tokenizer import get_tokenizer

        return get_tokenizer("gpt2"), "gpt2"
    except Exception as exc:  # no tokenizer package yet, or no GPT-2 files offline
        print(f"(GPT-2 tokenizer unavailable: {str(exc).splitlines()[0][:120]}...; using UTF-8 bytes)")
        try:
            from tinygrad_llm.tokenizer import get_tokenizer

            return get_tokenizer("byte"), "byte"
        except ImportError:
            pass

        class Bytes:
            n_vocab = 256

            def encode(self, text, **_):
                return list(text.encode("utf-8"))

            def decode(self, ids):
                return bytes(i % 256 for i in ids).decode("utf-8", errors="replace")

        return Bytes(), "bytes"


def building_blocks(device: str) -> None:
    section("4.2 layer normalisation")
    tl.manual_seed(123)
    batch_example = tl.Tensor(np.random.default_rng(123).standard_normal((2, 5)).astype(np.float32), device=device)
    layer = nn.Sequential(nn.Linear(5, 6), nn.GELU()).to(device)  # the book uses ReLU here; GELU is GPT-2's
    out = layer(batch_example)  # (2, 5) -> (2, 6)
    print("outputs (2, 6):\n", out.numpy())
    print("mean:", out.mean(axis=-1).numpy(), "variance:", ((out - out.mean(-1, keepdims=True)) ** 2).mean(-1).numpy())
    ln = nn.LayerNorm(emb_dim=6).to(device)
    out_ln = ln(out)
    print(
        "after LayerNorm: mean",
        out_ln.mean(axis=-1).numpy(),
        "variance",
        ((out_ln - out_ln.mean(-1, keepdims=True)) ** 2).mean(-1).numpy(),
    )
    print("LayerNorm parameters:", [name for name, _ in ln.named_parameters()])

    section("4.3 GELU (tanh approximation) against ReLU")
    x = tl.Tensor(np.linspace(-3, 3, 7, dtype=np.float32), device=device)
    print("x:   ", x.numpy())
    print("GELU:", F.gelu(x).numpy())
    print("ReLU:", F.relu(x).numpy())


def transformer_block(cfg: GPTConfig, device: str) -> None:
    section("4.6 a transformer block keeps the shape")
    tl.manual_seed(123)
    x = tl.Tensor(np.random.default_rng(0).random((2, 4, cfg.emb_dim), dtype=np.float32), device=device)
    block = TransformerBlock(cfg).to(device)
    print("input shape:", x.shape, "-> output shape:", block(x).shape)
    print(
        f"one block: {block.num_parameters():,} parameters "
        f"(attention {block.att.num_parameters():,}, feed-forward {block.ff.num_parameters():,})"
    )


def the_model(cfg: GPTConfig, device: str, tokenizer, tokenizer_name: str) -> None:
    section(f"4.6 the GPT model ({tokenizer_name} tokenizer)")
    if tokenizer.n_vocab != cfg.vocab_size:
        cfg = GPTConfig.from_dict(dict(cfg.to_dict(), vocab_size=tokenizer.n_vocab))
        print(f"(vocab_size set to the tokenizer's {cfg.vocab_size})")
    batch = np.array([tokenizer.encode("Every effort moves you"), tokenizer.encode("Every day holds a")], dtype=object)
    width = min(len(row) for row in batch)
    batch = np.array([row[:width] for row in batch], dtype=np.int64)  # (2, T)
    print("batch of token ids:\n", batch)

    tl.manual_seed(123)
    start = time.perf_counter()
    model = GPTModel(cfg).to(device)
    print(f"allocated in {time.perf_counter() - start:.1f} s")
    model.eval()
    with tl.no_grad():
        logits = model(batch)  # (2, T) -> (2, T, vocab)
    print("output shape:", logits.shape)
    print("logits[0, :, :4]:\n", logits.numpy()[0, :, :4])

    total = model.num_parameters()
    print(f"\ntotal number of parameters: {total:,}")
    print("token embedding layer shape:", model.tok_emb.weight.shape)
    print("output layer shape:         ", model.out_head.weight.shape)
    tied = total - model.out_head.weight.size
    print(f"number of trainable parameters considering weight tying: {tied:,}")
    print(f"(the same from the configuration: {cfg.num_parameters():,} untied, {cfg.num_parameters(tied=True):,} tied)")
    print(f"total size of the model: {total * 4 / 1024**2:.2f} MB (float32)")
    mem = estimate_memory(cfg, batch_size=2, context_length=min(256, cfg.context_length))
    print(
        "training memory estimate, batch 2 x 256 tokens, AdamW: "
        + ", ".join(f"{k} {format_bytes(v)}" for k, v in mem.items())
    )

    section("4.7 generating text with the untrained model")
    encoded = tl.text_to_token_ids("Hello, I am", tokenizer)  # (1, T)
    print("encoded:", encoded.tolist(), "shape:", encoded.shape)
    out = tl.generate(model, encoded, max_new_tokens=6, context_size=cfg.context_length)  # greedy, KV cache
    print("output:", out.tolist(), "length:", out.shape[1])
    print("decoded:", repr(tl.token_ids_to_text(out, tokenizer)))
    print("(random weights, random continuation: chapter 5 trains the model)")


def main(argv=None) -> None:
    parser = example_parser(__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="gpt2-small",
        help="model size (gpt2-small needs about 0.7 GB of memory)",
    )
    args = parser.parse_args(argv)
    try:
        tl.Tensor([0.0], device=args.device)
    except RuntimeError as exc:
        parser.exit(1, f"error: {exc}\n")
    cfg = GPTConfig.preset(args.preset)
    section("4.1 the configuration (the book's GPT_CONFIG_124M for gpt2-small)")
    for key, value in cfg.to_dict().items():
        print(f"  {key}: {value}")
    building_blocks(args.device)
    transformer_block(cfg, args.device)
    tokenizer, name = load_tokenizer()
    the_model(cfg, args.device, tokenizer, name)


if __name__ == "__main__":
    run_example(main)
