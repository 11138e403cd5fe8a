"""The encoder half: BERT (Devlin et al. 2018) built from the GPT's own blocks, in Hugging Face's layout.

    config = BertConfig.preset("bert-mini", vocab_size=261)
    model = BertForMaskedLM(config)
    logits = model(ids, attention_mask=mask)                 # (B, T) -> (B, T, vocab): the masked words
    hidden, pooled = model.bert(ids, attention_mask=mask)    # (B, T, H), (B, H) or None
    BertForSequenceClassification.from_pretrained("runs/bert")   # a run folder, or a Hugging Face BERT folder

What differs from the GPT (model/gpt.py) is three switches of the same TransformerBlock, not another block:
attention is bidirectional (``causal=False``: every token sees the whole sequence, so BERT is trained to
fill in masked words instead of predicting the next one), the LayerNorm comes after each residual sum
(``norm_first=False``, as in "Attention Is All You Need") and GELU is the exact erf form. The embeddings
add a third table, the segment ("token type": sentence A or B), and are normalised before the first block.
A padding mask (``attention_mask``, 1 = token, 0 = padding) keeps every query off the padded keys.

    ours                                  Hugging Face (BertModel; "bert." in front inside the task models)
    embeddings.word_embeddings.weight     embeddings.word_embeddings.weight        (also position_, token_type_)
    embeddings.LayerNorm.scale / .shift   embeddings.LayerNorm.weight / .bias
    encoder.N.att.W_qkv (3H, H)           encoder.layer.N.attention.self.query|key|value (H, H each, stacked)
    encoder.N.att.out_proj                encoder.layer.N.attention.output.dense
    encoder.N.norm1                       encoder.layer.N.attention.output.LayerNorm
    encoder.N.ff.layers.0 / .2            encoder.layer.N.intermediate.dense / output.dense
    encoder.N.norm2                       encoder.layer.N.output.LayerNorm
    pooler.dense                          pooler.dense
    mlm_dense, mlm_norm, mlm_bias         cls.predictions.transform.dense, .transform.LayerNorm, cls.predictions.bias
    classifier                            classifier

The configuration is in ``model/bert_config.py``, the loading and saving in ``model/bert_pretrained.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.functional._common import raw
from tinygrad_llm.model import bert_pretrained
from tinygrad_llm.model.bert_config import ACTIVATIONS, BertConfig
from tinygrad_llm.model.gpt import TransformerBlock
from tinygrad_llm.nn import Dropout, Embedding, LayerNorm, Linear, Module, Parameter, Sequential, init
from tinygrad_llm.tensor import Tensor

if TYPE_CHECKING:
    from pathlib import Path

    import numpy.typing as npt

    from tinygrad_llm.backend import Array


def _as_config(cfg) -> BertConfig:
    """A BertConfig, from itself or its dict (``to_dict()`` or a Hugging Face config.json's)."""
    return BertConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg


def _init_bert_weights(module: Module, std: float) -> None:
    """BERT's initialisation: every Linear and Embedding weight from N(0, std^2), biases 0 (LayerNorm: 1, 0)."""
    for m in module.modules():
        if isinstance(m, (Linear, Embedding)):
            init.normal_(m.weight, 0.0, std)
        if isinstance(m, Linear) and m.bias is not None:
            init.zeros_(m.bias)


class BertEmbeddings(Module):
    """word + position + segment embeddings, LayerNorm, dropout: (B, T) ids -> (B, T, H)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # Hugging Face's name
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.pad_token_id = cfg.pad_token_id

    def forward(self, ids: Array, token_type_ids: Array) -> Tensor:
        xp = backend.get_array_module(self.word_embeddings.weight.data)
        x = self.word_embeddings(ids)  # (B, T) -> (B, T, H)
        is_pad = ids == self.pad_token_id
        if bool(is_pad.any()):  # the [PAD] row never learns (torch's padding_idx, as Hugging Face's BERT)
            x = F.where(is_pad[..., None], x.detach(), x)
        x = x + self.position_embeddings(xp.arange(ids.shape[1]))  # + (T, H)
        x = x + self.token_type_embeddings(token_type_ids)  # + (B, T, H): sentence A (0) or B (1)
        return self.dropout(self.LayerNorm(x))


class BertPooler(Module):
    """tanh(dense(hidden of [CLS])): (B, T, H) -> (B, H), the sentence vector the classifier reads."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.dense(hidden[:, 0]).tanh()  # (B, T, H) -> (B, H) -> (B, H)


class _Pretrained:
    """from_pretrained / save_pretrained in the Hugging Face BERT layout, for every BERT class."""

    @classmethod
    def from_pretrained(
        cls, path_or_name: str | Path, device: str | None = None, dtype: npt.DTypeLike = np.float32
    ) -> Module:
        """From a Hugging Face BERT folder (config.json + model.safetensors), a run folder of ours, or a name
        (``bert-base-uncased``...: downloaded once and checked). In eval mode. Heads the folder lacks (the
        classifier of a pretrained BERT) keep their fresh initialisation, with a warning."""
        return bert_pretrained.load_pretrained(cls, path_or_name, device=device, dtype=dtype)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors with transformers' names (its BERT classes load them)."""
        return bert_pretrained.save_pretrained(self, directory)

    def extra_repr(self) -> str:
        return f"{self.num_parameters():,} parameters"


class BertModel(_Pretrained, Module):
    """The encoder: ids (B, T) -> (last hidden states (B, T, H), pooled [CLS] vector (B, H) or None)."""

    def __init__(self, cfg: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = cfg = _as_config(cfg)
        self.embeddings = BertEmbeddings(cfg)
        block = cfg.block_config()
        approximate = ACTIVATIONS[cfg.hidden_act]
        self.encoder = Sequential(
            *[
                TransformerBlock(
                    block,
                    causal=False,
                    norm_first=False,
                    hidden_dim=cfg.intermediate_size,
                    approximate=approximate,
                    norm_eps=cfg.layer_norm_eps,
                    attn_drop=cfg.attention_probs_dropout_prob,
                )
                for _ in range(cfg.num_hidden_layers)
            ]
        )
        self.pooler = BertPooler(cfg) if add_pooling_layer else None
        _init_bert_weights(self, cfg.initializer_range)
        if cfg.pad_token_id < cfg.vocab_size:
            self.embeddings.word_embeddings.weight.data[cfg.pad_token_id] = 0  # [PAD]'s vector starts at 0

    def forward(
        self,
        input_ids: Tensor | Array,
        attention_mask: Tensor | Array | None = None,
        token_type_ids: Tensor | Array | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        xp = backend.get_array_module(self.embeddings.word_embeddings.weight.data)
        ids = self._check_ids(raw(input_ids, xp))
        if token_type_ids is None:
            token_type_ids = xp.zeros_like(ids)
        else:
            token_type_ids = raw(token_type_ids, xp)
            if token_type_ids.shape != ids.shape:
                raise ValueError(f"BertModel: token_type_ids has shape {token_type_ids.shape}, input_ids {ids.shape}")
            if token_type_ids.size and (
                int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= self.config.type_vocab_size
            ):
                raise IndexError(f"BertModel: token_type_ids must lie in [0, {self.config.type_vocab_size})")
        if attention_mask is not None:
            attention_mask = raw(attention_mask, xp)
            if bool((attention_mask != 0).all()):
                attention_mask = None  # nothing padded: the unmasked softmax, the same numbers
        x = self.embeddings(ids, token_type_ids)  # (B, T) -> (B, T, H)
        for block in self.encoder:
            x = block(x, attention_mask=attention_mask)  # (B, T, H) -> (B, T, H)
        pooled = self.pooler(x) if self.pooler is not None else None  # (B, T, H) -> (B, H)
        return x, pooled

    def _check_ids(self, ids):
        cfg = self.config
        if ids.ndim != 2:
            raise ValueError(f"BERT: input_ids must have shape (batch, sequence), got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"BERT: input_ids must be integers, got dtype {ids.dtype}")
        if ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"BERT: a sequence of {ids.shape[1]} tokens is longer than max_position_embeddings "
                f"{cfg.max_position_embeddings}: truncate it"
            )
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            bad = int(ids.max()) if int(ids.max()) >= cfg.vocab_size else int(ids.min())
            raise IndexError(f"BERT: token id {bad} is outside the vocabulary [0, {cfg.vocab_size})")
        return ids


class BertForMaskedLM(_Pretrained, Module):
    """BERT with the masked-language-model head: ids (B, T) -> logits over the vocabulary (B, T, V).

    The head transforms each hidden state (dense, GELU, LayerNorm) and scores it against the word
    embeddings themselves (tied: one Parameter, as BERT), plus a bias per word.
    """

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg = _as_config(cfg)
        self.bert = BertModel(cfg, add_pooling_layer=False)
        self.mlm_dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.mlm_norm = LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlm_bias = Parameter(np.zeros(cfg.vocab_size, dtype=np.float32))
        _init_bert_weights(self.mlm_dense, cfg.initializer_range)

    def forward(
        self,
        input_ids: Tensor | Array,
        attention_mask: Tensor | Array | None = None,
        token_type_ids: Tensor | Array | None = None,
    ) -> Tensor:
        hidden, _ = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        h = F.gelu(self.mlm_dense(hidden), approximate=ACTIVATIONS[self.config.hidden_act])
        h = self.mlm_norm(h)
        # tied decoder: (B, T, H) @ (V, H)^T -> (B, T, V)
        return F.linear(h, self.bert.embeddings.word_embeddings.weight, self.mlm_bias)


class BertForSequenceClassification(_Pretrained, Module):
    """BERT with a classifier on the pooled [CLS] vector: ids (B, T) -> class logits (B, num_labels)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.config = cfg = _as_config(cfg)
        self.bert = BertModel(cfg, add_pooling_layer=True)
        self.dropout = Dropout(cfg.hidden_dropout_prob)
        self.classifier = Linear(cfg.hidden_size, cfg.num_labels)
        _init_bert_weights(self.classifier, cfg.initializer_range)

    def forward(
        self,
        input_ids: Tensor | Array,
        attention_mask: Tensor | Array | None = None,
        token_type_ids: Tensor | Array | None = None,
    ) -> Tensor:
        if attention_mask is None:  # padded batches (the classifier's usual input): the [PAD] ids say where
            xp = backend.get_array_module(self.classifier.weight.data)
            attention_mask = raw(input_ids, xp) != self.config.pad_token_id
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)  # (B, H)
        return self.classifier(self.dropout(pooled))  # (B, H) -> (B, num_labels)
