"""GPTConfig: the numbers that define a GPT, the presets (GPT-2's four sizes and small CPU ones),
parameter counts from the formula, and a memory estimate for training.
"""

from __future__ import annotations

import dataclasses
import json

GPT2_VOCAB = 50257
GPT2_CONTEXT = 1024


@dataclasses.dataclass
class GPTConfig:
    """The book's GPT_CONFIG_124M as a dataclass.

    vocab_size: number of token ids; context_length: the most positions a sequence may have;
    emb_dim: width of every token vector; n_heads: attention heads (emb_dim must divide by it);
    n_layers: transformer blocks; drop_rate: dropout everywhere (embeddings, attention, residuals);
    qkv_bias: bias in the query/key/value projection; tie_weights: the output head reuses the token
    embedding's weight (as GPT-2's released checkpoints).
    """

    vocab_size: int = GPT2_VOCAB
    context_length: int = GPT2_CONTEXT
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"GPTConfig: emb_dim {self.emb_dim} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig: drop_rate must be in [0, 1), got {self.drop_rate}")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    # --- presets --------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named configuration (see ``PRESETS``), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}: expected one of {sorted(PRESETS)}")
        return cls(**{**dataclasses.asdict(PRESETS[name]), **overrides})  # a subclass adds its own fields

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "GPTConfig":
        return cls.from_dict(json.loads(text))

    # --- sizes ------------------------------------------------------------------------------------
    def num_parameters(self, tied: bool | None = None) -> int:
        """Parameters from the architecture's formula (no model allocated); ``tied`` defaults to
        ``tie_weights``."""
        return count_parameters(self, self.tie_weights if tied is None else tied)


# GPT-2's published sizes (Radford et al. 2019), with the book's choices: dropout 0.1, no QKV bias
# (the book's GPT_CONFIG_124M; loading OpenAI's weights sets qkv_bias=True). Small ones train on a CPU.
PRESETS = {
    "gpt2-small": GPTConfig(emb_dim=768, n_heads=12, n_layers=12),
    "gpt2-medium": GPTConfig(emb_dim=1024, n_heads=16, n_layers=24),
    "gpt2-large": GPTConfig(emb_dim=1280, n_heads=20, n_layers=36),
    "gpt2-xl": GPTConfig(emb_dim=1600, n_heads=25, n_layers=48),
    # For tests and seconds-long runs: any vocabulary that fits in 256 ids (bytes, characters).
    "tiny": GPTConfig(vocab_size=256, context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0),
    # Trains on 2 CPU cores in minutes with a byte or character tokenizer (about 0.8M parameters).
    "mini": GPTConfig(vocab_size=256, context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.1),
    # A GPT-2-vocabulary model a laptop CPU can pretrain on the-verdict in minutes (the book's ch. 5
    # scale, smaller): 13.7M parameters untied (7.3M tied), most of them in the 50,257-row embedding and head.
    "small-cpu": GPTConfig(context_length=256, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.1),
}


def count_parameters(config: GPTConfig, tied: bool = False) -> int:
    """Parameters of a GPTModel from its configuration.

    per block: attention QKV  C*3C (+3C bias)      out_proj C*C + C
               feed-forward   C*4C + 4C            4C*C + C
               two LayerNorms 2 * 2C
    model:     token embedding V*C, position embedding T*C, final LayerNorm 2C, head C*V (0 when tied)
    """
    c, v, t = config.emb_dim, config.vocab_size, config.context_length
    attention = c * 3 * c + (3 * c if config.qkv_bias else 0) + c * c + c
    feed_forward = c * 4 * c + 4 * c + 4 * c * c + c
    block = attention + feed_forward + 2 * 2 * c
    head = 0 if tied else c * v
    return v * c + t * c + config.n_layers * block + 2 * c + head


def estimate_memory(
    config: GPTConfig,
    batch_size: int,
    context_length: int | None = None,
    bytes_per_value: int = 4,
    optimizer: str = "adamw",
    num_classes: int | None = None,
) -> dict:
    """Bytes needed to train ``config`` on batches of (batch_size, context_length) in float32.

    parameters, gradients (one per parameter), optimizer state (AdamW: two moments per parameter; SGD
    with momentum: one) and activations: the arrays the backward passes of this engine keep, per token
    and layer about 24 * emb_dim values (LayerNorm outputs, the QKV projection, the 4x feed-forward and
    its GELU, dropout masks) plus 4 * n_heads * T for the attention scores, softmax and dropout, and at
    the end the logits and their softmax (2 * vocab per token). An estimate, within tens of percent.
    ``num_classes``: a classifier's head (emb_dim -> num_classes, with a bias, as chapter 6 adds) in place
    of the vocabulary head. tinygrad_llm.memory adds LoRA and processes to it.
    """
    t = config.context_length if context_length is None else context_length
    if t > config.context_length:
        raise ValueError(f"estimate_memory: context_length {t} exceeds the model's {config.context_length}")
    c, h, v = config.emb_dim, config.n_heads, config.vocab_size
    n_params = config.num_parameters()
    if num_classes is not None:  # the vocabulary head replaced by the class head
        n_params = config.num_parameters(tied=True) + c * num_classes + num_classes
        v = num_classes
    moments = {"adamw": 2, "adam": 2, "sgd": 1, "none": 0}
    if optimizer not in moments:
        raise ValueError(f"estimate_memory: optimizer must be one of {sorted(moments)}, got {optimizer!r}")
    per_token = config.n_layers * (24 * c + 4 * h * t) + 4 * c + 2 * v
    result = {
        "parameters": n_params * bytes_per_value,
        "gradients": n_params * bytes_per_value,
        "optimizer": moments[optimizer] * n_params * bytes_per_value,
        "activations": batch_size * t * per_token * bytes_per_value,
    }
    result["total"] = sum(result.values())
    return result


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
