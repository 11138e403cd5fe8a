# %% [markdown]
# # The original transformer: an encoder, a decoder, and cross-attention
#
# "Attention Is All You Need" translated a sentence in one language into another: an encoder reads the
# whole source, a decoder writes the target one token at a time and, through cross-attention, asks the
# encoder's output what the source said. Here the task is small enough to learn in seconds on a CPU:
# reverse (or copy) a sequence of 10 digits. GPT keeps only the decoder half, BERT only the encoder half.

# %%
"""The original transformer ("Attention Is All You Need", Vaswani et al. 2017): an encoder and a decoder joined
by cross-attention, learning to reverse (or copy) sequences of digits, as in the Annotated Transformer.

    python examples/transformer_copy_task.py                  # reverse: under half a minute on 2 CPU cores
    python examples/transformer_copy_task.py --task copy

Both halves of the later models are here, made of this library's own modules:
  encoder  TransformerBlock(causal=False): every source token attends to every other one (BERT keeps this half)
  decoder  MultiHeadAttention, causal (GPT keeps this half), then cross-attention: each target
           position asks the encoder's output ("memory") what the source said, then the feed-forward
It trains with teacher forcing (the decoder reads the true target shifted right, behind a BOS token) and
decodes greedily: start from BOS, append the most likely token, repeat. It stops when every held-out
sequence comes out exactly right (or at --max-steps) and prints that accuracy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.cli.common import HelpFormatter  # defaults in --help
from tinygrad_llm.cli.example import example_args, in_notebook  # flags from the command line or a notebook
from tinygrad_llm.model import GPTConfig, MultiHeadAttention, TransformerBlock
from tinygrad_llm.model.gpt import FeedForward
from tinygrad_llm.nn import Dropout, Embedding, LayerNorm, Linear, Module, Sequential
from tinygrad_llm.optim import AdamW

BOS = 0  # the decoder's start token; digits are 1 .. vocab - 1


# %% [markdown]
# ## Cross-attention
#
# The same computation as self-attention, but the queries come from the decoder (B, T_tgt, d) and the keys
# and values from the encoder (B, T_src, d): the score matrix is (T_tgt, T_src), not square, and has no
# causal mask, since the whole source is known.


# %%
class CrossAttention(Module):
    """Multi-head attention whose queries come from the decoder and keys/values from the encoder.

    The same computation as MultiHeadAttention (scaled dot products, softmax, weighted values, heads
    joined by out_proj), with the projections split because the two inputs differ.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.W_q = Linear(d_model, d_model)
        self.W_kv = Linear(d_model, 2 * d_model)  # keys and values, fused as W_qkv is
        self.out_proj = Linear(d_model, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x, memory, memory_mask=None):
        b, t, d = x.shape  # decoder positions: (B, T_tgt, d)
        s = memory.shape[1]  # encoder positions: memory (B, T_src, d)
        h, hd = self.num_heads, self.head_dim
        q = self.W_q(x).reshape(b, t, h, hd).transpose(0, 2, 1, 3)  # (B, T_tgt, d) -> (B, H, T_tgt, hd)
        kv = self.W_kv(memory).reshape(b, s, 2, h, hd)  # (B, T_src, d) -> (B, T_src, 2d) -> (B, T_src, 2, H, hd)
        kv = kv.transpose(2, 0, 3, 1, 4)  # (B, T_src, 2, H, hd) -> (2, B, H, T_src, hd)
        k, v = kv[0], kv[1]  # (B, H, T_src, hd) each
        scores = q @ k.swapaxes(-1, -2)  # (B, H, T_tgt, hd) @ (B, H, hd, T_src) -> (B, H, T_tgt, T_src): not square
        # no causal mask: every target position may read the whole source; a padding mask if the source has one
        keep = None if memory_mask is None else (memory_mask != 0)[:, None, None, :]  # (B, T_src) -> (B, 1, 1, T_src)
        weights = self.dropout(F.masked_softmax(scores, keep, scale=1 / math.sqrt(hd)))  # rows sum to 1 over the source
        context = weights @ v  # (B, H, T_tgt, T_src) @ (B, H, T_src, hd) -> (B, H, T_tgt, hd)
        context = context.transpose(0, 2, 1, 3).reshape(b, t, d)  # (B, H, T_tgt, hd) -> (B, T_tgt, d)
        return self.out_proj(context)


# %% [markdown]
# ## The decoder block and the whole model
#
# A decoder block is a GPT block with cross-attention between its self-attention and its feed-forward.
# The encoder is a stack of the library's `TransformerBlock` without the causal mask.


# %%
class DecoderBlock(Module):
    """Causal self-attention (the GPT's MultiHeadAttention), cross-attention to the encoder, feed-forward: each
    around a residual path, normalised first (as the Annotated Transformer; the paper normalises after)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.self_att = MultiHeadAttention(
            cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, qkv_bias=True, causal=True
        )  # position i sees targets <= i
        self.norm_self = LayerNorm(cfg.emb_dim)
        self.cross = CrossAttention(cfg.emb_dim, cfg.n_heads, cfg.drop_rate)
        self.norm_cross = LayerNorm(cfg.emb_dim)
        self.ff = FeedForward(cfg)
        self.norm_ff = LayerNorm(cfg.emb_dim)
        self.drop = Dropout(cfg.drop_rate)

    def forward(self, x, memory, memory_mask=None):
        x = x + self.drop(self.self_att(self.norm_self(x)))  # (B, T_tgt, d)
        x = x + self.drop(self.cross(self.norm_cross(x), memory, memory_mask))  # reads memory (B, T_src, d)
        return x + self.drop(self.ff(self.norm_ff(x)))


class Transformer(Module):
    """source ids (B, T_src), target ids so far (B, T_tgt) -> next-target logits (B, T_tgt, vocab)."""

    def __init__(self, vocab_size: int, max_len: int, d_model=64, n_heads=4, n_layers=2, dropout=0.0):
        super().__init__()
        cfg = GPTConfig(
            vocab_size=vocab_size,
            context_length=max_len,
            emb_dim=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            drop_rate=dropout,
            qkv_bias=True,
        )
        self.src_emb, self.tgt_emb = Embedding(vocab_size, d_model), Embedding(vocab_size, d_model)
        self.pos_emb = Embedding(max_len, d_model)  # learned positions (the paper's sinusoids work as well)
        self.encoder = Sequential(*[TransformerBlock(cfg, causal=False) for _ in range(n_layers)])
        self.enc_norm = LayerNorm(d_model)
        self.decoder = Sequential(*[DecoderBlock(cfg) for _ in range(n_layers)])
        self.dec_norm = LayerNorm(d_model)
        self.out_head = Linear(d_model, vocab_size)
        for emb in (self.src_emb, self.tgt_emb, self.pos_emb):
            emb.weight.data *= 0.1  # small start: N(0, 1) embeddings would swamp a 64-wide model

    def encode(self, src):
        x = self.src_emb(src) + self.pos_emb(np.arange(src.shape[1]))  # (B, T_src, d)
        for block in self.encoder:
            x = block(x)  # bidirectional: (B, T_src, d) -> (B, T_src, d)
        return self.enc_norm(x)  # the "memory" every decoder layer reads

    def decode(self, tgt, memory):
        x = self.tgt_emb(tgt) + self.pos_emb(np.arange(tgt.shape[1]))  # (B, T_tgt, d)
        for block in self.decoder:
            x = block(x, memory)  # (B, T_tgt, d), attending to memory (B, T_src, d)
        return self.out_head(self.dec_norm(x))  # (B, T_tgt, vocab)

    def forward(self, src, tgt):
        return self.decode(tgt, self.encode(src))


# %% [markdown]
# ## Data, training and greedy decoding
#
# Training uses teacher forcing: the decoder reads the true target shifted right behind a start token
# (BOS), and every position's next token is predicted at once. Decoding has no true target: it starts
# from BOS and appends its own most likely token, one position at a time.


# %%
def make_batch(rng, batch: int, length: int, vocab: int, task: str):
    src = rng.integers(1, vocab, size=(batch, length))
    tgt = src[:, ::-1].copy() if task == "reverse" else src.copy()
    decoder_in = np.concatenate([np.full((batch, 1), BOS), tgt[:, :-1]], axis=1)  # shifted right behind BOS
    return src, decoder_in, tgt


def greedy_decode(model, src, length: int):
    """Start from BOS, feed what was decoded so far, append the argmax; (B, T_src) -> (B, length)."""
    with tl.no_grad():
        memory = model.encode(src)  # the encoder runs once
        out = np.full((src.shape[0], 1), BOS)
        for _ in range(length):
            logits = model.decode(out, memory)  # (B, t, vocab)
            out = np.concatenate([out, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    return out[:, 1:]


# %%
p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
p.add_argument("--task", choices=("reverse", "copy"), default="reverse", help="what the decoder must output")
p.add_argument("--vocab", type=int, default=11, help="10 digits + BOS, as the Annotated Transformer")
p.add_argument("--length", type=int, default=10, help="sequence length")
p.add_argument("--max-steps", type=int, default=1500, help="training steps at most (it stops at 100%% earlier)")
p.add_argument("--batch-size", type=int, default=64, help="sequences per step")
p.add_argument("--lr", type=float, default=3e-3, help="AdamW's peak learning rate, after 100 warm-up steps")
p.add_argument("--eval-every", type=int, default=100, help="steps between greedy decodings of the held-out set")
p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data")
p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(this small model runs on the CPU)")
args = example_args(p)

# %%
tl.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)
model = Transformer(args.vocab, args.length + 1)
optimizer = AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
held_out = make_batch(np.random.default_rng(args.seed + 1), 200, args.length, args.vocab, args.task)
print(f"{args.task} task: {model.num_parameters():,} parameters, sequences of {args.length} digits", file=sys.stderr)
start, accuracy = time.perf_counter(), 0.0
for step in range(1, args.max_steps + 1):
    lr = args.lr * min(1.0, step / 100)  # a short warmup: post-attention models dislike a cold start
    for group in optimizer.param_groups:
        group["lr"] = lr
    src, decoder_in, tgt = make_batch(rng, args.batch_size, args.length, args.vocab, args.task)
    loss = F.cross_entropy(model(src, decoder_in), tgt)  # teacher forcing: every position at once
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % args.eval_every == 0:
        model.eval()
        decoded = greedy_decode(model, held_out[0], args.length)
        model.train()
        accuracy = float((decoded == held_out[2]).all(axis=1).mean())
        print(
            f"step {step:5d}  loss {loss.item():.4f}  held-out sequences exactly right {accuracy:.1%}  "
            f"{time.perf_counter() - start:.0f}s",
            file=sys.stderr,
        )
        if accuracy == 1.0:
            break

# %% [markdown]
# One held-out sequence and what the model decodes from it.

# %%
src = held_out[0][:1]
print(f"source  {src[0].tolist()}\ndecoded {greedy_decode(model, src, args.length)[0].tolist()}")
print(f"held-out accuracy {accuracy:.1%} after {step} steps, {time.perf_counter() - start:.0f}s")
if accuracy < 1.0 and not in_notebook():
    sys.exit(1)  # the script's status says whether every held-out sequence came out right
