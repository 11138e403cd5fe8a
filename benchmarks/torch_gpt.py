"""The PyTorch reference of the benchmarks: GPT-2 as ours computes it (fused QKV projection, tanh GELU,
pre-LayerNorm blocks), with an optional KV cache, holding a tinygrad_llm GPTModel's weights.

Benchmarks compare against it "running the same algorithm": the same weights, the same decoding loop or
training step. (tests/test_model_torch.py keeps a separate oracle with the book's three Q/K/V projections,
which also checks our fused layout.)
"""

from __future__ import annotations

import numpy as np

import tinygrad_llm as tl
from tinygrad_llm.model import GPTModel


def build_torch_gpt(torch, model: GPTModel):
    """A minimal PyTorch GPT-2 (fused QKV, as ours) with an optional KV cache, holding ``model``'s weights."""
    nn, Fnn = torch.nn, torch.nn.functional
    cfg = model.config

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            c = cfg.emb_dim
            self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
            self.qkv = nn.Linear(c, 3 * c, bias=cfg.qkv_bias)
            self.out_proj = nn.Linear(c, c)
            self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

        def attention(self, x, cache, start):
            b, t, c = x.shape
            h, hd = cfg.n_heads, c // cfg.n_heads
            q, k, v = self.qkv(x).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
            if cache is not None:
                if cache[0] is not None:
                    k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
                cache[0], cache[1] = k, v
            scores = (q / hd**0.5) @ k.transpose(-1, -2)  # (B, H, T, S)
            s = k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).triu(diagonal=start + 1)
            weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
            return self.out_proj((weights @ v).transpose(1, 2).reshape(b, t, c))

        def forward(self, x, cache=None, start=0):
            x = x + self.attention(self.norm1(x), cache, start)  # dropout 0: benchmarks train without it
            return x + self.fc2(Fnn.gelu(self.fc1(self.norm2(x)), approximate="tanh"))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
            self.blocks = nn.ModuleList([Block() for _ in range(cfg.n_layers)])
            self.final_norm = nn.LayerNorm(cfg.emb_dim)
            self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

        def forward(self, idx, caches=None, start=0):
            t = idx.shape[1]
            x = self.tok_emb(idx) + self.pos_emb(torch.arange(start, start + t, device=idx.device))
            for i, block in enumerate(self.blocks):
                x = block(x, None if caches is None else caches[i], start)
            return self.out_head(self.final_norm(x))

    tg = TorchGPT().eval()
    if cfg.tie_weights:
        tg.out_head.weight = tg.tok_emb.weight
    target = dict(tg.named_parameters())
    with torch.no_grad():
        for name, value in model.state_dict().items():
            target[torch_name(name)].copy_(torch.from_numpy(np.ascontiguousarray(tl.backend.to_numpy(value))))
    return tg


# our parameter names -> the PyTorch model's (substring replacements, in order)
TORCH_NAMES = {
    "W_qkv": "qkv",
    "ff.layers.0": "fc1",
    "ff.layers.2": "fc2",
    "trf_blocks": "blocks",
    ".att.": ".",
    ".scale": ".weight",
    ".shift": ".bias",
}


def torch_name(name: str) -> str:
    """The name in build_torch_gpt's model of our parameter ``name`` (e.g. trf_blocks.0.att.W_qkv.weight)."""
    for old, new in TORCH_NAMES.items():
        name = name.replace(old, new)
    return name


def torch_generate(torch, tg, ids: np.ndarray, max_new_tokens: int, context: int, use_cache: bool) -> np.ndarray:
    """Greedy decoding, the algorithm of tinygrad_llm.generate (prefill + one token per step with the cache)."""
    idx = torch.from_numpy(ids).to(next(tg.parameters()).device)  # on the model's device (CPU or GPU)
    caches = [[None, None] for _ in tg.blocks] if use_cache else None
    with torch.no_grad():
        for step in range(max_new_tokens):
            if not use_cache:
                logits = tg(idx[:, -context:])
            elif step == 0:
                logits = tg(idx, caches, 0)
            else:
                logits = tg(idx[:, -1:], caches, idx.shape[1] - 1)
            next_id = logits[:, -1, :].argmax(dim=-1, keepdim=True)
            idx = torch.cat([idx, next_id], dim=1)
    return idx.cpu().numpy()


def decay_groups(tg, weight_decay: float) -> list:
    """AdamW groups by our rule (optim.param_groups_for_weight_decay): decay Linear weight matrices only."""
    linear_weights = {id(m.weight) for m in tg.modules() if type(m).__name__ == "Linear"}
    decay = [p for p in tg.parameters() if id(p) in linear_weights and p.ndim == 2]
    other = [p for p in tg.parameters() if id(p) not in {id(q) for q in decay}]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
