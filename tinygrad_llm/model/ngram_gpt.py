"""A GPT whose tokens also carry hashed n-gram embeddings: the from-scratch spam classifier's model.

    config = NgramGPTConfig.preset("tiny", vocab_size=257, ngram_sizes=(2, 3, 4), ngram_buckets=2048)
    model = NgramGPTModel(config)                 # GPTModel + ngram_emb: ids (B, T) -> logits (B, T, vocab)

Not GPT-2 and not the book: an experiment (nn/ngram.py says why a byte-level classifier trained on a thousand
messages wants it), so it lives beside the book's ``GPTModel``, in its own class, and ``GPTModel`` stays the
book's. It is a subclass, not a hook inside GPTModel, because everything but the first block's input is the
book's: it changes ``embed`` (token + position, plus the n-grams) and ``cache_class`` (a cache that also keeps
the last ids, which the next call's n-grams reach back to), nothing else. It sits in model/ rather than
finetune/ because it is a whole language model (it generates, with a KV cache and padded prompts, as the
book's does) and the loaders of run folders (finetune.io, ``from_pretrained`` of our layout) must build it.

Its parameters are the book's with ``ngram_emb.tables.N.weight`` added; a config.json with ``ngram_sizes`` and
``ngram_buckets`` (as the recipe has always written) reads back into an ``NgramGPTConfig`` (``config_from_dict``).
There is no Hugging Face GPT-2 equivalent: ``save_pretrained`` refuses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.model import pretrained
from tinygrad_llm.model.attention import KVCache
from tinygrad_llm.model.config import GPTConfig
from tinygrad_llm.model.gpt import GPTModel, TransformerBlock, host_mask
from tinygrad_llm.model.pretrained import PretrainedError
from tinygrad_llm.nn import Dropout, Embedding, LayerNorm, Linear, Module, Sequential
from tinygrad_llm.nn.ngram import BOUNDARY, HashedNGramEmbedding
from tinygrad_llm.safetensors_file import SafetensorsFile
from tinygrad_llm.tensor import Tensor

if TYPE_CHECKING:
    import numpy.typing as npt

    from tinygrad_llm.backend import Array


@dataclasses.dataclass
class NgramGPTConfig(GPTConfig):
    """GPTConfig plus one table of ``ngram_buckets`` rows per n in ``ngram_sizes`` (distinct, each >= 2)."""

    ngram_sizes: tuple = (2, 3, 4)
    ngram_buckets: int = 2048

    def __post_init__(self):
        super().__post_init__()
        sizes = self.ngram_sizes
        if (
            not isinstance(sizes, (list, tuple))
            or not sizes
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in sizes)
            or len(set(sizes)) != len(sizes)
        ):
            raise ValueError(
                f"NgramGPTConfig: ngram_sizes must be distinct integers >= 2 (e.g. (2, 3, 4)), got {sizes!r}"
            )
        self.ngram_sizes = tuple(sizes)  # a JSON list reads back as the same tuple
        if isinstance(self.ngram_buckets, bool) or not isinstance(self.ngram_buckets, int) or self.ngram_buckets < 1:
            raise ValueError(f"NgramGPTConfig: ngram_buckets must be a positive integer, got {self.ngram_buckets!r}")

    def num_parameters(self, tied: bool | None = None) -> int:
        """The GPT's formula (config.count_parameters) plus the n-gram tables, len(sizes) * buckets * C."""
        return super().num_parameters(tied) + len(self.ngram_sizes) * self.ngram_buckets * self.emb_dim


class NgramKVCache(KVCache):
    """A KVCache that also keeps ``recent_ids``: the last max(n) - 1 ids seen (B, k), for the next call's n-grams."""

    def __init__(self, n_layers: int, max_length: int):
        super().__init__(n_layers, max_length)
        self.recent_ids = None

    def reset(self) -> None:
        super().reset()
        self.recent_ids = None


class NgramGPTModel(GPTModel):
    """GPTModel whose first block sees token + position + hashed n-gram embeddings (``ngram_emb``, nn/ngram.py).

    ``__init__`` is the book's written out with one line more, rather than ``super().__init__`` and the tables
    after it: the random draws then come in the order the recipe's measured runs drew them (token, position,
    n-gram tables, blocks, head), so a seed gives the model it always gave, bit for bit."""

    config_class = NgramGPTConfig
    cache_class = NgramKVCache  # it also keeps the last ids, for the n-grams of the next call

    def __init__(self, cfg: NgramGPTConfig | dict):
        Module.__init__(self)
        cfg = NgramGPTConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        if type(cfg) is not NgramGPTConfig:
            raise TypeError(f"NgramGPTModel: expected an NgramGPTConfig or a dict, got {type(cfg).__name__}")
        self.config = cfg
        self.tok_emb = Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = Embedding(cfg.context_length, cfg.emb_dim)
        self.ngram_emb = HashedNGramEmbedding(cfg.ngram_sizes, cfg.ngram_buckets, cfg.emb_dim)
        self.drop_emb = Dropout(cfg.drop_rate)
        self.trf_blocks = Sequential(*[TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # (vocab, C) both: one Parameter, two uses

    def embed(
        self, ids: Array, cache: NgramKVCache | None = None, attention_mask: Tensor | Array | None = None
    ) -> Tensor:
        x = super().embed(ids, cache, attention_mask)  # token + position: (B, T) -> (B, T, C)
        return x + self.ngram_embeds(ids, cache, attention_mask)  # (B, T, C) + (B, T, C)

    def ngram_embeds(
        self, ids: Array, cache: NgramKVCache | None = None, attention_mask: Tensor | Array | None = None
    ) -> Tensor:
        """The n-gram vectors of ``ids`` (B, T) -> (B, T, C): padding (0 in ``attention_mask``) reads as the
        boundary, so each row is as it would be alone; with a cache the n-grams reach back into the ids it has
        seen (``cache.recent_ids``), so a cached step gives what the whole sequence gives."""
        xp = backend.get_array_module(ids)
        start = 0 if cache is None else cache.length
        if attention_mask is not None:
            is_token = backend.to_device(host_mask(attention_mask)[:, start:] != 0, backend.device_of(ids))  # (B, T)
            ids = xp.where(is_token, ids, BOUNDARY)  # (B, T)
        context = cache.recent_ids if cache is not None and start > 0 else None  # (B, k) or None
        embeds = self.ngram_emb(ids, context=context)  # (B, T) -> (B, T, C)
        if cache is not None:  # the last max(n) - 1 ids, for the n-grams of the next call
            seen = ids if context is None else xp.concatenate([context, ids.astype(context.dtype)], axis=1)
            cache.recent_ids = seen[:, -self.ngram_emb.context_size :]
        return embeds

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: npt.DTypeLike = np.float32,
        drop_rate: float | None = None,
    ) -> "NgramGPTModel":
        """One of our run folders (config.json with n-gram fields + model.safetensors); the tables' sizes are
        checked against the file's header before anything is allocated."""
        folder = Path(path)
        config = NgramGPTConfig.from_json((folder / pretrained.CONFIG_FILE).read_text(encoding="utf-8"))
        weights = SafetensorsFile(folder / pretrained.WEIGHTS_FILE, error=PretrainedError)
        check_tables_fit_header(config, weights, folder / pretrained.CONFIG_FILE)
        return pretrained.load_pretrained(cls, folder, device=device, dtype=dtype, drop_rate=drop_rate)

    def save_pretrained(self, directory: str | Path) -> NoReturn:
        raise PretrainedError(
            f"save_pretrained: a model with n-gram embeddings (ngram_sizes "
            f"{self.config.ngram_sizes}) has no Hugging Face GPT-2 equivalent; save it as a run "
            "folder instead (tinygrad_llm.checkpoint, or finetune.io.save_finetuned)"
        )


def config_from_dict(d: dict) -> GPTConfig:
    """A config.json of our layout: an NgramGPTConfig when it has n-gram fields, else the book's GPTConfig."""
    return NgramGPTConfig.from_dict(d) if "ngram_sizes" in d or "ngram_buckets" in d else GPTConfig.from_dict(d)


def model_class(config: GPTConfig) -> type:
    """The model a configuration builds: NgramGPTModel for an NgramGPTConfig, else GPTModel."""
    return NgramGPTModel if isinstance(config, NgramGPTConfig) else GPTModel


def check_tables_fit_header(config: GPTConfig, st: SafetensorsFile, config_file: str | Path) -> None:
    """The n-gram tables config.json claims against the weights file's header, before anything is allocated
    (as pretrained.check_config_fits_header does for the rest): a file without tables for an NgramGPTConfig,
    or with tables for a GPTConfig, is named here."""
    tables = sorted(key for key in st.entries if key.startswith("ngram_emb.tables."))
    sizes = getattr(config, "ngram_sizes", ())
    buckets = getattr(config, "ngram_buckets", None)
    if len(tables) != len(sizes) or any(len(st.shape(key)) != 2 or st.shape(key)[0] != buckets for key in tables):
        raise PretrainedError(
            f"{config_file}: ngram_sizes = {list(sizes)} and ngram_buckets = {buckets}, but "
            f"{st.path.name} holds {len(tables)} n-gram table(s) of "
            f"{sorted({st.shape(key)[0] for key in tables})} rows (config.json and the weights "
            "do not belong together)"
        )
