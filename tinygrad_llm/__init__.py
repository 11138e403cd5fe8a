"""tinygrad_llm: a GPT built from scratch on a tensor/autograd engine built from scratch.

import tinygrad_llm as tl
from tinygrad_llm import functional as F

x = tl.Tensor([[1.0, 2.0, 3.0]], requires_grad=True)
loss = F.softmax(x).max()
loss.backward()
x.grad  # a numpy (or cupy) array of x's shape and dtype
"""

from tinygrad_llm import functional, nn, runtime
from tinygrad_llm.backend import cuda_available, manual_seed
from tinygrad_llm.generate import (
    generate,
    generate_stream,
    generate_text_simple,
    pad_prompts,
    text_to_token_ids,
    token_ids_to_text,
)
from tinygrad_llm.gradcheck import gradcheck
from tinygrad_llm.graph import graph, plot_graph
from tinygrad_llm.model import GPTConfig, GPTModel
from tinygrad_llm.optim import SGD, AdamW, clip_grad_norm_
from tinygrad_llm.tensor import Function, Tensor, enable_grad, grad, is_grad_enabled, no_grad
from tinygrad_llm.tokenizer import get_tokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "AdamW",
    "SGD",
    "clip_grad_norm_",
    "get_tokenizer",
    "load_tokenizer",
    "Function",
    "GPTConfig",
    "GPTModel",
    "Tensor",
    "cuda_available",
    "enable_grad",
    "functional",
    "generate",
    "generate_stream",
    "generate_text_simple",
    "grad",
    "gradcheck",
    "graph",
    "is_grad_enabled",
    "manual_seed",
    "nn",
    "no_grad",
    "pad_prompts",
    "plot_graph",
    "runtime",
    "text_to_token_ids",
    "token_ids_to_text",
]
