"""The GPT-2 architecture: configuration and presets, attention with a KV cache, blocks, the model; and the
encoder half, BERT, built from the same blocks; NgramGPTModel, the spam recipe's GPT with hashed n-grams."""

from tinygrad_llm.model.attention import KVCache, LayerKVCache, MultiHeadAttention
from tinygrad_llm.model.bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from tinygrad_llm.model.bert_config import BERT_PRESETS, BertConfig
from tinygrad_llm.model.book_weights import load_weights_into_gpt, params_from_hf
from tinygrad_llm.model.config import PRESETS, GPTConfig, count_parameters, estimate_memory, format_bytes
from tinygrad_llm.model.gpt import FeedForward, GPTModel, TransformerBlock
from tinygrad_llm.model.ngram_gpt import NgramGPTConfig, NgramGPTModel

__all__ = [
    "BERT_PRESETS",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "FeedForward",
    "GPTConfig",
    "GPTModel",
    "KVCache",
    "LayerKVCache",
    "MultiHeadAttention",
    "NgramGPTConfig",
    "NgramGPTModel",
    "PRESETS",
    "TransformerBlock",
    "count_parameters",
    "estimate_memory",
    "format_bytes",
    "load_weights_into_gpt",
    "params_from_hf",
]
