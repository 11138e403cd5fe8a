"""tinygrad_llm: a GPT built from scratch on a tensor/autograd engine built from scratch.

    import tinygrad_llm as tl
    from tinygrad_llm import functional as F

    x = tl.Tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    loss = F.softmax(x).max()
    loss.backward()
    x.grad  # a numpy (or cupy) array of x's shape and dtype
"""
from tinygrad_llm import functional
from tinygrad_llm.backend import cuda_available, manual_seed
from tinygrad_llm.gradcheck import gradcheck
from tinygrad_llm.tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad

__version__ = "0.1.0"

__all__ = [
    "Function", "Tensor", "cuda_available", "enable_grad", "functional", "gradcheck", "is_grad_enabled",
    "manual_seed", "no_grad",
]
