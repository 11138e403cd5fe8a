"""The GPT-2 architecture of chapter 4: FeedForward, TransformerBlock, GPTModel.

    config = GPTConfig.preset("gpt2-small")
    model = GPTModel(config)
    logits = model(np.array([[15496, 11, 314, 716]]))  # (1, 4) token ids -> (1, 4, 50257)

Parameter names are the book's (``tok_emb``, ``pos_emb``, ``trf_blocks.0.ff.layers.0``, ``final_norm.scale``,
``out_head``...) except one: the query, key and value projections are fused into ``att.W_qkv`` (the book's
``W_query``, ``W_key``, ``W_value`` stacked), so the book's own weight-loading code does not run unchanged.
``load_weights_into_gpt(gpt, params)`` (model/book_weights.py) takes the book's chapter-5 ``params`` dict and
does the c_attn split's equivalent; ``GPTModel.from_pretrained`` reads Hugging Face folders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.functional._common import first_out_of_range
from tinygrad_llm.model import pretrained
from tinygrad_llm.model.attention import KVCache, LayerKVCache, MultiHeadAttention
from tinygrad_llm.model.config import GPTConfig
from tinygrad_llm.nn import GELU, Dropout, Embedding, LayerNorm, Linear, Module, Sequential
from tinygrad_llm.tensor import Tensor, is_grad_enabled

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from tinygrad_llm.backend import Array


class FeedForward(Module):
    """Position-wise MLP: emb_dim -> hidden_dim -> GELU -> emb_dim, (B, T, C) -> (B, T, C).

    hidden_dim defaults to 4 * emb_dim (GPT-2, BERT); ``approximate`` is the GELU's: "tanh" for GPT-2,
    "none" (the exact erf form) for BERT.
    """

    def __init__(self, cfg: GPTConfig, hidden_dim: int | None = None, approximate: str = "tanh"):
        super().__init__()
        hidden_dim = hidden_dim or 4 * cfg.emb_dim
        self.layers = Sequential(
            Linear(cfg.emb_dim, hidden_dim),  # (B, T, C) -> (B, T, 4C)
            GELU(approximate),
            Linear(hidden_dim, cfg.emb_dim),  # (B, T, 4C) -> (B, T, C)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class TransformerBlock(Module):
    """One block of attention and feed-forward, each around a residual path; (B, T, C) -> (B, T, C).

    GPT (the defaults): causal attention, pre-LayerNorm: x + drop(att(norm1(x))), then x + drop(ff(norm2(x))).
    BERT (``causal=False, norm_first=False``): bidirectional attention, post-LayerNorm as in the original
    transformer: norm1(x + drop(att(x))), then norm2(x + drop(ff(x))). The same modules either way.
    hidden_dim / approximate: the feed-forward's width and GELU; attn_drop: dropout on the attention
    weights (default cfg.drop_rate, as everywhere else).
    """

    def __init__(
        self,
        cfg: GPTConfig,
        causal: bool = True,
        norm_first: bool = True,
        hidden_dim: int | None = None,
        approximate: str = "tanh",
        norm_eps: float = 1e-5,
        attn_drop: float | None = None,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate if attn_drop is None else attn_drop,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
            causal=causal,
        )
        self.ff = FeedForward(cfg, hidden_dim, approximate)
        self.norm1 = LayerNorm(cfg.emb_dim, eps=norm_eps)
        self.norm2 = LayerNorm(cfg.emb_dim, eps=norm_eps)
        self.drop_shortcut = Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, cache: LayerKVCache | None = None, attention_mask: Array | None = None) -> Tensor:
        if not self.norm_first:  # post-norm (BERT, "Attention Is All You Need")
            x = self.norm1(x + self.drop_shortcut(self.att(x, cache=cache, attention_mask=attention_mask)))
            return self.norm2(x + self.drop_shortcut(self.ff(x)))
        shortcut = x  # the residual path carries x around the attention
        x = self.norm1(x)
        x = self.att(x, cache=cache, attention_mask=attention_mask)  # (B, T, C) -> (B, T, C)
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
    Variants change ``embed`` (what goes into the first block), e.g. ``NgramGPTModel`` (model/ngram_gpt.py).
    """

    config_class = GPTConfig  # what a config.json of this model reads into
    cache_class = KVCache  # what new_cache() makes

    def __init__(self, cfg: GPTConfig | dict):
        super().__init__()
        cfg = self.config_class.from_dict(cfg) if isinstance(cfg, dict) else cfg
        if type(cfg) is not self.config_class:  # a variant's config builds the variant's model, not this one
            raise TypeError(
                f"{type(self).__name__}: expected a {self.config_class.__name__} or a dict, got {type(cfg).__name__}"
            )
        self.config = cfg
        self.tok_emb = Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = Dropout(cfg.drop_rate)
        self.trf_blocks = Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # (vocab, C) both: one Parameter, two uses

    def forward(
        self, in_idx: Tensor | Array, cache: KVCache | None = None, attention_mask: Tensor | Array | None = None
    ) -> Tensor:
        """Logits (B, T, vocab) for token ids ``in_idx`` (B, T): a NumPy/CuPy integer array or a Tensor.

        With a ``cache`` (a KVCache, under ``no_grad``), the ids continue the sequence the cache has seen:
        their positions start at ``cache.length``, and their keys and values are appended to it.
        ``attention_mask`` (B, cache.length + T), 1 = token and 0 = padding, is for batches of prompts
        left-padded to one length: no query attends to a pad, and each row's positions count its tokens
        only (its first real token is position 0), so every row computes what it would alone.
        """
        ids = self.check_inputs(in_idx, cache, attention_mask)
        x = self.embed(ids, cache, attention_mask)  # token + position embeddings: (B, T) -> (B, T, C)
        x = self.drop_emb(x)
        if cache is None and attention_mask is None:
            x = self.trf_blocks(x)  # (B, T, C) -> (B, T, C)
        else:  # each block reads and extends its own layer of the cache
            layer_caches = cache.layers if cache is not None else [None] * len(self.trf_blocks)
            for block, layer_cache in zip(self.trf_blocks, layer_caches):
                x = block(x, cache=layer_cache, attention_mask=attention_mask)  # (B, T, C) -> (B, T, C)
        x = self.final_norm(x)
        return self.out_head(x)  # (B, T, C) -> (B, T, vocab)

    def embed(self, ids: Array, cache: KVCache | None = None, attention_mask: Tensor | Array | None = None) -> Tensor:
        """Token plus position embeddings of the checked ids (B, T) -> (B, T, C): the first block's input."""
        start = 0 if cache is None else cache.length
        tok_embeds = F.embedding(ids, self.tok_emb.weight, check=False)  # (B, T) -> (B, T, C); checked already
        if attention_mask is None:
            pos_embeds = self.pos_emb.weight[start : start + ids.shape[1]]  # positions start..start+T-1: (T, C)
        else:  # each row counts its own tokens: a pad takes position 0 (it is never attended to)
            positions = np.maximum(np.cumsum(host_mask(attention_mask) != 0, axis=1) - 1, 0)[:, start:]  # (B, T)
            pos_embeds = F.embedding(positions, self.pos_emb.weight)  # (B, T) -> (B, T, C)
        return tok_embeds + pos_embeds  # (B, T, C) + (T, C) -> (B, T, C)

    def check_inputs(
        self, in_idx: Tensor | Array, cache: KVCache | None = None, attention_mask: Tensor | Array | None = None
    ) -> Array:
        """The token ids as an integer array (B, T), checked against the vocabulary, the cache and the context
        length (with the mask's shape); an error names what does not fit."""
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
            raise IndexError(
                f"GPTModel: token id {bad} is outside the vocabulary [0, {cfg.vocab_size}): was the "
                f"text encoded with the tokenizer this model was trained with?"
            )
        start = 0
        if cache is not None:
            if is_grad_enabled():
                raise RuntimeError(
                    "GPTModel: a KV cache is for inference: call the model under no_grad() "
                    "(gradients do not flow through cached keys and values)"
                )
            if len(cache.layers) != cfg.n_layers:
                raise ValueError(f"GPTModel: KV cache has {len(cache.layers)} layers, the model {cfg.n_layers}")
            start = cache.length
        if start + num_tokens > cfg.context_length:
            where = f" after {start} cached positions" if start else ""
            raise ValueError(
                f"GPTModel: a sequence of {num_tokens} tokens{where} is longer than the context "
                f"length {cfg.context_length}: crop it to the last {cfg.context_length - start} "
                f"tokens"
            )
        mask_shape = None if attention_mask is None else np.shape(attention_mask)  # no copy: its .shape
        if mask_shape is not None and mask_shape != (batch, start + num_tokens):
            raise ValueError(
                f"GPTModel: attention_mask has shape {mask_shape}, expected "
                f"(batch, cached + new tokens) = ({batch}, {start + num_tokens})"
            )
        return ids

    def new_cache(self, max_length: int | None = None) -> KVCache:
        """An empty KV cache for this model (capacity: the context length unless given smaller)."""
        length = self.config.context_length if max_length is None else min(max_length, self.config.context_length)
        return self.cache_class(self.config.n_layers, length)

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | Path,
        device: str | None = None,
        dtype: npt.DTypeLike = np.float32,
        drop_rate: float | None = None,
    ) -> "GPTModel":
        """A model with weights from a Hugging Face GPT-2 folder (config.json + model.safetensors), a name
        (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``: downloaded once, checked), or one of our
        run folders. In eval mode; see ``tinygrad_llm.model.pretrained``."""
        return pretrained.load_pretrained(cls, path_or_name, device=device, dtype=dtype, drop_rate=drop_rate)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors in the Hugging Face GPT-2 layout (transformers loads it)."""
        return pretrained.save_pretrained(self, directory)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"


def host_mask(attention_mask: Tensor | Array) -> np.ndarray:
    """A padding mask (B, S) as a host NumPy array: the positions are counted on the host."""
    return backend.to_numpy(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
