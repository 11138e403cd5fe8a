"""The encoder beside the decoder: one classifier training step (forward + backward) of BERT and GPT of the same
size on the same padded batch, interleaved; and the two operations where they differ, each beside the GPT's.

    python benchmarks/encoder.py                  # the tiny preset, batch 16 x 160 (the spam runs' shape)
    python benchmarks/encoder.py --preset mini --batch-size 8 --length 128

Prints medians and ratios (BERT / GPT): the step, the exact erf GELU against the tanh GELU on the
feed-forward's activations (both Numba kernels), and the padded attention softmax (F.masked_softmax, NumPy)
against the causal one (F.causal_softmax, the compiled kernel).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine, time_interleaved

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.finetune.classifier import add_classification_head
from tinygrad_llm.model import BertConfig, BertForSequenceClassification, GPTConfig, GPTModel


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=160)
    p.add_argument("--vocab", type=int, default=261, help="byte tokenizer + [PAD] [CLS] [SEP] [MASK]")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print_machine()
    tl.manual_seed(0)
    shape = GPTConfig.preset(args.preset, vocab_size=args.vocab, context_length=args.length, drop_rate=0.1)
    gpt = add_classification_head(GPTModel(shape), 2).train()
    bert = BertForSequenceClassification(BertConfig.from_gpt_config(shape, pad_token_id=args.vocab - 4)).train()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.vocab - 4, size=(args.batch_size, args.length))
    lengths = rng.integers(args.length // 8, args.length, size=args.batch_size)  # padded messages, as the spam data
    ids[np.arange(args.length)[None, :] >= lengths[:, None]] = args.vocab - 4
    labels = rng.integers(0, 2, size=args.batch_size)

    def step(model, read):
        def run():
            model.zero_grad()
            F.cross_entropy(read(model(ids)), labels).backward()

        return run

    medians = time_interleaved(
        {"gpt": step(gpt, lambda out: out[:, -1, :]), "bert": step(bert, lambda out: out)}, repeats=args.repeats
    )
    print(
        f"training step, batch {args.batch_size} x {args.length}, {args.preset}: GPT {medians['gpt'] * 1e3:.1f} ms, "
        f"BERT {medians['bert'] * 1e3:.1f} ms, ratio {medians['bert'] / medians['gpt']:.2f}x"
    )

    x = tl.Tensor(
        rng.standard_normal((args.batch_size, args.length, 4 * shape.emb_dim)).astype(np.float32), requires_grad=True
    )

    def gelu(approximate):
        def run():
            F.gelu(x, approximate=approximate).sum().backward()

        return run

    medians = time_interleaved({"tanh": gelu("tanh"), "erf": gelu("none")}, repeats=args.repeats)
    print(
        f"GELU forward + backward on {tuple(x.shape)}: tanh {medians['tanh'] * 1e3:.1f} ms, exact erf "
        f"{medians['erf'] * 1e3:.1f} ms, ratio {medians['erf'] / medians['tanh']:.2f}x (kernels unless "
        f"TINYGRAD_LLM_KERNELS=numpy)"
    )

    scores = tl.Tensor(
        rng.standard_normal((args.batch_size, shape.n_heads, args.length, args.length)).astype(np.float32),
        requires_grad=True,
    )
    keep = (ids != args.vocab - 4)[:, None, None, :]

    def softmax(masked):
        def run():
            y = F.masked_softmax(scores, keep, 0.125) if masked else F.causal_softmax(scores, 0.125)
            y.sum().backward()

        return run

    medians = time_interleaved({"causal": softmax(False), "padded": softmax(True)}, repeats=args.repeats)
    print(
        f"attention softmax forward + backward on {tuple(scores.shape)}: causal (kernel) "
        f"{medians['causal'] * 1e3:.1f} ms, padded (NumPy) {medians['padded'] * 1e3:.1f} ms, ratio "
        f"{medians['padded'] / medians['causal']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
