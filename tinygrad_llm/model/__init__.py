"""The GPT-2 architecture: configuration and presets, attention with a KV cache, blocks, the model."""
from tinygrad_llm.model.attention import KVCache, LayerKVCache, MultiHeadAttention
from tinygrad_llm.model.config import PRESETS, GPTConfig, count_parameters, estimate_memory, format_bytes
from tinygrad_llm.model.gpt import FeedForward, GPTModel, TransformerBlock

__all__ = ["FeedForward", "GPTConfig", "GPTModel", "KVCache", "LayerKVCache", "MultiHeadAttention", "PRESETS",
           "TransformerBlock", "count_parameters", "estimate_memory", "format_bytes"]
