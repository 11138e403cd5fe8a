"""GPTModel against PyTorch: the book's chapter 4 GPT written in torch, the same weights, the same logits,
and the same gradient for every parameter after a cross-entropy backward.

The torch model keeps the book's three separate projections W_query, W_key, W_value; ours fuses them into
W_qkv, so copying the weights also checks the fused layout (queries, keys, values along the output axis).
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm.model import GPTConfig, GPTModel


def build_torch_gpt(torch, cfg: GPTConfig):
    nn = torch.nn

    class LayerNorm(nn.Module):
        def __init__(self, emb_dim):
            super().__init__()
            self.eps = 1e-5
            self.scale = nn.Parameter(torch.ones(emb_dim))
            self.shift = nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            mean = x.mean(dim=-1, keepdim=True)
            var = x.var(dim=-1, keepdim=True, unbiased=False)
            return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift

    class GELU(nn.Module):
        def forward(self, x):
            return (
                0.5
                * x
                * (
                    1
                    + torch.tanh(
                        torch.sqrt(torch.tensor(2.0 / torch.pi, dtype=x.dtype)) * (x + 0.044715 * torch.pow(x, 3))
                    )
                )
            )

    class MultiHeadAttention(nn.Module):
        def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
            super().__init__()
            self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
            self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
            self.out_proj = nn.Linear(d_out, d_out)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

        def forward(self, x):
            b, num_tokens, d_in = x.shape
            keys = self.W_key(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            values = self.W_value(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            attn_scores = queries @ keys.transpose(2, 3)
            mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
            attn_scores.masked_fill_(mask_bool, -torch.inf)
            attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = (attn_weights @ values).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
            return self.out_proj(context)

    class FeedForward(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(c.emb_dim, 4 * c.emb_dim), GELU(), nn.Linear(4 * c.emb_dim, c.emb_dim)
            )

        def forward(self, x):
            return self.layers(x)

    class TransformerBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.att = MultiHeadAttention(c.emb_dim, c.emb_dim, c.context_length, c.drop_rate, c.n_heads, c.qkv_bias)
            self.ff = FeedForward(c)
            self.norm1, self.norm2 = LayerNorm(c.emb_dim), LayerNorm(c.emb_dim)
            self.drop_shortcut = nn.Dropout(c.drop_rate)

        def forward(self, x):
            x = self.drop_shortcut(self.att(self.norm1(x))) + x
            return self.drop_shortcut(self.ff(self.norm2(x))) + x

    class TorchGPT(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.tok_emb = nn.Embedding(c.vocab_size, c.emb_dim)
            self.pos_emb = nn.Embedding(c.context_length, c.emb_dim)
            self.drop_emb = nn.Dropout(c.drop_rate)
            self.trf_blocks = nn.Sequential(*[TransformerBlock(c) for _ in range(c.n_layers)])
            self.final_norm = LayerNorm(c.emb_dim)
            self.out_head = nn.Linear(c.emb_dim, c.vocab_size, bias=False)
            if c.tie_weights:
                self.out_head.weight = self.tok_emb.weight

        def forward(self, in_idx):
            _, seq_len = in_idx.shape
            x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(seq_len, device=in_idx.device))
            x = self.trf_blocks(self.drop_emb(x))
            return self.out_head(self.final_norm(x))

    return TorchGPT(cfg)


def copy_weights_into_torch(torch, ours: GPTModel, theirs) -> None:
    """Our state_dict into the book's torch model: W_qkv splits into W_query, W_key, W_value."""
    target = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, value in ours.state_dict().items():
            if ".att.W_qkv." in name:
                for part, chunk in zip(("W_query", "W_key", "W_value"), np.split(value, 3, axis=0)):
                    target[name.replace("W_qkv", part)].copy_(torch.from_numpy(chunk.copy()))
            else:
                target[name].copy_(torch.from_numpy(value.copy()))


def torch_grad_of(torch, theirs, name: str) -> np.ndarray:
    params = dict(theirs.named_parameters())
    if ".att.W_qkv." in name:
        return np.concatenate([params[name.replace("W_qkv", p)].grad.numpy() for p in ("W_query", "W_key", "W_value")])
    return params[name].grad.numpy()


# The two implementations sum in different orders. Measured worst errors, relative to each tensor's largest
# entry: float32 logits 4e-7, gradients 5e-7; float64 1e-15. Tolerances: float32 1e-5 (20x margin),
# float64 1e-10; gradients use atol = rtol * max|grad| (small entries of a tensor carry its rounding).
TOLERANCES = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype,tie", [(np.float32, False), (np.float64, False), (np.float64, True)])
def test_logits_and_every_gradient_match_torch(torch, dtype, tie):
    torch.manual_seed(0)
    tl.manual_seed(0)
    cfg = GPTConfig(
        vocab_size=50,
        context_length=16,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        qkv_bias=True,
        tie_weights=tie,
    )
    ours = GPTModel(cfg).to(dtype=dtype)
    rng = np.random.default_rng(0)
    for p in ours.parameters():  # perturb LayerNorm's 1/0 init so every parameter has a generic gradient
        p.data[...] += (0.1 * rng.standard_normal(p.shape)).astype(dtype)
    theirs = build_torch_gpt(torch, cfg).to(torch.float64 if dtype == np.float64 else torch.float32)
    copy_weights_into_torch(torch, ours, theirs)
    ids = rng.integers(0, cfg.vocab_size, size=(3, 12))
    targets = rng.integers(0, cfg.vocab_size, size=(3, 12))

    logits = ours(ids)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    t_logits = theirs(torch.from_numpy(ids))
    t_loss = torch.nn.functional.cross_entropy(t_logits.flatten(0, 1), torch.from_numpy(targets).flatten())
    t_loss.backward()

    tol = TOLERANCES[dtype]
    assert logits.dtype == dtype
    np.testing.assert_allclose(logits.data, t_logits.detach().numpy(), **tol)
    np.testing.assert_allclose(loss.item(), t_loss.item(), **tol)
    names = [n for n, _ in ours.named_parameters()]
    assert len(names) == 2 + 12 * cfg.n_layers + 2 + (0 if tie else 1)
    for name, p in ours.named_parameters():
        want = torch_grad_of(torch, theirs, name)
        scale = np.abs(want).max()
        assert scale > 0, name
        np.testing.assert_allclose(p.grad, want, rtol=tol["rtol"], atol=tol["rtol"] * scale, err_msg=name)


def test_gpt2_small_shape_logits_match_torch(torch):
    """A full-width (768, 12 heads) block stack, 2 layers, float32: the sizes GPT-2 really uses."""
    tl.manual_seed(1)
    cfg = GPTConfig.preset("gpt2-small", vocab_size=1000, n_layers=2, drop_rate=0.0, qkv_bias=True)
    ours = GPTModel(cfg).eval()
    theirs = build_torch_gpt(torch, cfg).eval()
    copy_weights_into_torch(torch, ours, theirs)
    ids = np.random.default_rng(0).integers(0, 1000, size=(2, 64))
    with torch.no_grad():
        want = theirs(torch.from_numpy(ids)).numpy()
    with tl.no_grad():
        got = ours(ids).data
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
