"""The layers a GPT is made of: Linear, Embedding, LayerNorm, GELU, Dropout.

Parameter names and shapes follow PyTorch (``Linear.weight`` is (out, in)) except LayerNorm, which uses
the book's names ``scale`` and ``shift`` (the book's chapter 4 LayerNorm, whose names its GPT-2 weight
loader uses); ``weight``/``bias`` are read-only aliases for readers coming from torch.
"""

from __future__ import annotations

import numpy as np

from tinygrad_llm import functional as F
from tinygrad_llm.backend import Array
from tinygrad_llm.nn import init
from tinygrad_llm.nn.module import Module, Parameter
from tinygrad_llm.tensor import Tensor


class Linear(Module):
    """y = x W^T + b, x (..., in_features) -> y (..., out_features); W is (out, in) as torch.

    Initialised as torch.nn.Linear: weight and bias from U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = init.linear_bound(in_features)
        self.weight = init.uniform_(Parameter(np.empty((out_features, in_features), dtype=dtype)), -bound, bound)
        self.bias = init.uniform_(Parameter(np.empty(out_features, dtype=dtype)), -bound, bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer ids (...) -> rows (..., embedding_dim); weight from N(0, 1) as torch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=np.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = init.normal_(Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype)))

    def forward(self, ids: Tensor | Array | list) -> Tensor:
        return F.embedding(ids, self.weight)  # (...) -> (..., embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise each vector over its last axis to mean 0 and variance 1, then ``* scale + shift``.

    Parameters ``scale`` (ones) and ``shift`` (zeros), of shape (emb_dim,), named as the book's LayerNorm;
    the variance is the biased one (divide by n), as GPT-2 and torch.nn.LayerNorm.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.emb_dim, self.eps = emb_dim, eps
        self.scale = Parameter(np.ones(emb_dim, dtype=dtype))
        self.shift = Parameter(np.zeros(emb_dim, dtype=dtype))

    @property
    def weight(self) -> Parameter:
        """torch's name for ``scale``."""
        return self.scale

    @property
    def bias(self) -> Parameter:
        """torch's name for ``shift``."""
        return self.shift

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.scale, self.shift, eps=self.eps)  # (..., emb_dim) -> same

    def extra_repr(self) -> str:
        return f"{self.emb_dim}, eps={self.eps}"


class GELU(Module):
    """GELU as a module: GPT-2's tanh approximation by default, BERT's exact one with approximate="none"
    (torch.nn.GELU's argument, with the other default)."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU: approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Inverted dropout with probability ``p`` while training; the identity after ``eval()``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
