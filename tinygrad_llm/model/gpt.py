"""The GPT-2 architecture of chapter 4: FeedForward, TransformerBlock, GPTModel.

    config = GPTConfig.preset("gpt2-small")
    model = GPTModel(config)
    logits = model(np.array([[15496, 11, 314, 716]]))  # (1, 4) token ids -> (1, 4, 50257)

Parameter names are the book's (``tok_emb``, ``pos_emb``, ``trf_blocks.0.att.W_qkv``, ``final_norm.scale``,
``out_head``...), so its weight-loading code reads the same here.
"""
from __future__ import annotations

import numpy as np

from tinygrad_llm import functional as F
from tinygrad_llm.functional._common import first_out_of_range
from tinygrad_llm.model import pretrained
from tinygrad_llm.model.attention import KVCache, LayerKVCache, MultiHeadAttention
from tinygrad_llm.model.config import GPTConfig
from tinygrad_llm.nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, Sequential
from tinygrad_llm.tensor import Tensor, is_grad_enabled


class FeedForward(Module):
    """Position-wise MLP: emb_dim -> 4 * emb_dim -> GELU -> emb_dim, (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = Sequential(
            Linear(cfg.emb_dim, 4 * cfg.emb_dim),  # (B, T, C) -> (B, T, 4C)
            GELU(),
            Linear(4 * cfg.emb_dim, cfg.emb_dim),  # (B, T, 4C) -> (B, T, C)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TransformerBlock(Module):
    """Pre-LayerNorm block: x + drop(att(norm1(x))), then x + drop(ff(norm2(x))); (B, T, C) -> (B, T, C)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg.emb_dim, d_out=cfg.emb_dim, context_length=cfg.context_length,
                                      dropout=cfg.drop_rate, num_heads=cfg.n_heads, qkv_bias=cfg.qkv_bias)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, cache: LayerKVCache | None = None) -> Tensor:
        shortcut = x  # the residual path carries x around the attention
        x = self.norm1(x)
        x = self.att(x, cache=cache)  # (B, T, C) -> (B, T, C)
        x = self.drop_shortcut(x)
        x = x + shortcut

        shortcut = x  # and around the feed-forward network
        x = self.norm2(x)
        x = self.ff(x)  # (B, T, C) -> (B, T, C)
        x = self.drop_shortcut(x)
        return x + shortcut


class GPTModel(Module):
    """GPT-2: token ids (B, T) -> next-token logits (B, T, vocab_size).

    ``cfg`` is a GPTConfig or the book's dict (``{"vocab_size": 50257, "context_length": 1024, ...}``).
    With ``cfg.tie_weights`` the output head uses the token embedding's weight (one Parameter, counted once).
    """

    def __init__(self, cfg: GPTConfig | dict):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = GPTConfig.from_dict(cfg)
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPTModel: expected a GPTConfig or a dict, got {type(cfg).__name__}")
        self.config = cfg
        self.tok_emb = Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = Dropout(cfg.drop_rate)
        self.trf_blocks = Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # (vocab, C) both: one Parameter, two uses

    def forward(self, in_idx, cache: KVCache | None = None) -> Tensor:
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T): a NumPy/CuPy integer array or a Tensor.

        With a ``cache`` (a KVCache, under ``no_grad``), the ids continue the sequence the cache has seen:
        their positions start at ``cache.length``, and their keys and values are appended to it.
        """
        ids = in_idx.data if isinstance(in_idx, Tensor) else in_idx
        ids = ids if hasattr(ids, "dtype") else np.asarray(ids)
        cfg = self.config
        if ids.ndim != 2:
            raise ValueError(f"GPTModel: token ids must have shape (batch, sequence), got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"GPTModel: token ids must be integers, got dtype {ids.dtype}")
        batch, num_tokens = ids.shape
        # Checked once, where the ids are: on the host for NumPy ids (no GPU wait), before they move.
        bad, _ = first_out_of_range(ids, cfg.vocab_size)
        if bad is not None:
            raise IndexError(f"GPTModel: token id {bad} is outside the vocabulary [0, {cfg.vocab_size}): was the "
                             f"text encoded with the tokenizer this model was trained with?")
        start = 0
        if cache is not None:
            if is_grad_enabled():
                raise RuntimeError("GPTModel: a KV cache is for inference: call the model under no_grad() "
                                   "(gradients do not flow through cached keys and values)")
            if len(cache.layers) != cfg.n_layers:
                raise ValueError(f"GPTModel: KV cache has {len(cache.layers)} layers, the model {cfg.n_layers}")
            start = cache.length
        if start + num_tokens > cfg.context_length:
            where = f" after {start} cached positions" if start else ""
            raise ValueError(f"GPTModel: a sequence of {num_tokens} tokens{where} is longer than the context "
                             f"length {cfg.context_length}: crop it to the last {cfg.context_length - start} "
                             f"tokens")

        tok_embeds = F.embedding(ids, self.tok_emb.weight, check=False)  # (B, T) -> (B, T, C); checked above
        pos_embeds = self.pos_emb.weight[start:start + num_tokens]  # positions start..start+T-1: (T, C)
        x = tok_embeds + pos_embeds  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.drop_emb(x)
        if cache is None:
            x = self.trf_blocks(x)  # (B, T, C) -> (B, T, C)
        else:
            for block, layer_cache in zip(self.trf_blocks, cache.layers):
                x = block(x, cache=layer_cache)  # (B, T, C) -> (B, T, C)
        x = self.final_norm(x)
        return self.out_head(x)  # (B, T, C) -> (B, T, vocab)

    def new_cache(self, max_length: int | None = None) -> KVCache:
        """An empty KV cache for this model (capacity: the context length unless given smaller)."""
        length = self.config.context_length if max_length is None else min(max_length, self.config.context_length)
        return KVCache(self.config.n_layers, length)

    @classmethod
    def from_pretrained(cls, path_or_name, device: str | None = None, dtype=np.float32,
                        drop_rate: float | None = None) -> "GPTModel":
        """A model with weights from a Hugging Face GPT-2 folder (config.json + model.safetensors), a name
        (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``: downloaded once, checked), or one of our
        run folders. In eval mode; see ``tinygrad_llm.model.pretrained``."""
        return pretrained.load_pretrained(cls, path_or_name, device=device, dtype=dtype, drop_rate=drop_rate)

    def save_pretrained(self, directory):
        """Write config.json + model.safetensors in the Hugging Face GPT-2 layout (transformers loads it)."""
        return pretrained.save_pretrained(self, directory)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"
