"""BERT's configuration: ``BertConfig`` (transformers.BertConfig's fields) and its named sizes, ``BERT_PRESETS``.

Its own module so that the model (``model/bert.py``) and its loader (``model/bert_pretrained.py``) both
import it without importing each other: the model imports the loader, the loader only this.
"""

from __future__ import annotations

import dataclasses
import json

from tinygrad_llm.model.config import GPTConfig

ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}  # hidden_act -> F.gelu's approximate


@dataclasses.dataclass
class BertConfig:
    """transformers.BertConfig's fields and defaults (BERT-base), those this BERT uses.

    num_labels: classes of BertForSequenceClassification; pad_token_id: the id of [PAD] (tells the
    classifier's inputs where the padding is when no attention_mask is given).
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BertConfig: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"BertConfig: hidden_act {self.hidden_act!r} is not supported: expected one of {sorted(ACTIVATIONS)}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"BertConfig: {name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "BertConfig":
        """A named size (see ``BERT_PRESETS``), any field overridden by keyword."""
        if name not in BERT_PRESETS:
            raise ValueError(f"unknown BERT preset {name!r}: expected one of {sorted(BERT_PRESETS)}")
        return dataclasses.replace(BERT_PRESETS[name], **overrides)

    @classmethod
    def from_gpt_config(cls, gpt: GPTConfig, **overrides) -> "BertConfig":
        """The BERT of a GPT's size (width, depth, heads, 4x feed-forward, context), to compare the two halves
        at one budget; dropout is the GPT's."""
        fields = dict(
            vocab_size=gpt.vocab_size,
            hidden_size=gpt.emb_dim,
            num_hidden_layers=gpt.n_layers,
            num_attention_heads=gpt.n_heads,
            intermediate_size=4 * gpt.emb_dim,
            max_position_embeddings=gpt.context_length,
            hidden_dropout_prob=gpt.drop_rate,
            attention_probs_dropout_prob=gpt.drop_rate,
        )
        return cls(**{**fields, **overrides})

    def block_config(self) -> GPTConfig:
        """The GPTConfig whose TransformerBlock is one BERT layer (QKV with bias, as BERT's projections)."""
        return GPTConfig(
            vocab_size=self.vocab_size,
            context_length=self.max_position_embeddings,
            emb_dim=self.hidden_size,
            n_heads=self.num_attention_heads,
            n_layers=self.num_hidden_layers,
            drop_rate=self.hidden_dropout_prob,
            qkv_bias=True,
        )

    def to_dict(self) -> dict:
        """Hugging Face's config.json fields (model_type "bert"), readable by transformers.BertConfig."""
        return {"model_type": "bert", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """From ``to_dict()`` or a Hugging Face BERT config.json (fields this BERT ignores are dropped;
        ``id2label`` gives num_labels)."""
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"BertConfig.from_dict: model_type is {d.get('model_type')!r}, not 'bert'")
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in known}
        if "num_labels" not in fields and isinstance(d.get("id2label"), dict):
            fields["num_labels"] = len(d["id2label"])
        if fields.get("pad_token_id") is None:
            fields.pop("pad_token_id", None)
        return cls(**fields)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


BERT_PRESETS = {
    "bert-base": BertConfig(),  # 110M parameters with the 30,522-token WordPiece vocabulary
    "bert-large": BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    # Google's small BERTs (Turc et al. 2019, "Well-Read Students Learn Better")
    "bert-tiny": BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "bert-mini": BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-small": BertConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
}
