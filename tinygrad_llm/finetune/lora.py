"""LoRA, appendix E: train a low-rank update ``A @ B`` beside each frozen Linear instead of the Linear itself.

    freeze(model)                                   # every base weight: requires_grad False
    replace_linear_with_lora(model, rank=16, alpha=16)
    count_trainable_parameters(model)               # only the adapters' A and B
    ...train...
    merge_lora(model)                               # W + scale * (A @ B)^T into plain Linears, for export

For a Linear ``y = x W^T + b`` (W: (out, in)), LoRA adds ``scale * (x @ A @ B)`` with A (in, rank) and
B (rank, out): ``W^T`` receives the update ``scale * A @ B``, of rank <= ``rank``. B starts at zero, so the
adapted model is exactly the base model until training moves B.

Scale: ``alpha / rank``, as the LoRA paper (Hu et al., 2021) and the issue specify. The book's appendix E
multiplies by ``alpha`` alone; its rank 16, alpha 16 corresponds here to alpha = 256 (scale 16).

Fused attention projection: this project's attention computes queries, keys and values with one
(emb, 3 * emb) Linear ``W_qkv`` where the book has three (emb, emb) Linears. A single LoRA on the fused
layer would have ``rank * (emb + 3 * emb)`` parameters instead of the book's ``3 * rank * (emb + emb)``, and
a differently shaped update (one rank-r matrix shared by Q, K and V). So ``replace_linear_with_lora``
gives ``W_qkv`` three LoRAs, one per output block (query, key, value), each ``(emb -> emb)``: the same
parameters and the same function as the book's three adapted Linears (``split_qkv=False`` for one LoRA).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm import functional as F
from tinygrad_llm.nn import Embedding, Linear, Module, ModuleList, Parameter, init
from tinygrad_llm.tensor import Tensor

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.model.config import GPTConfig


class LoRALayer(Module):
    """x (..., in_dim) -> scale * (x @ A @ B) (..., out_dim), with A (in_dim, rank), B (rank, out_dim).

    A: Kaiming-uniform with a = sqrt(5), as the book's ``torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))``.
    torch takes the fan-in of a 2-D tensor from its second axis, which for A (in_dim, rank) is ``rank``:
    bound = gain * sqrt(3 / rank) with gain = sqrt(2 / (1 + 5)), i.e. U(-1/sqrt(rank), 1/sqrt(rank)).
    B: zeros. scale = alpha / rank.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, dtype: np.dtype | type = np.float32):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"LoRALayer: rank must be a positive integer, got {rank!r}")
        if not math.isfinite(float(alpha)):
            raise ValueError(f"LoRALayer: alpha must be a finite number, got {alpha!r}")
        self.in_dim, self.out_dim, self.rank, self.alpha = in_dim, out_dim, int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.A = Parameter(np.empty((in_dim, rank), dtype=dtype))
        bound = math.sqrt(2.0 / (1.0 + 5.0)) * math.sqrt(3.0 / rank)  # = 1 / sqrt(rank)
        init.uniform_(self.A, -bound, bound)
        self.B = Parameter(np.zeros((rank, out_dim), dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        # (..., in) @ (in, r) -> (..., r) @ (r, out) -> (..., out); the rank-r bottleneck keeps it cheap
        return (x @ self.A @ self.B) * self.scale

    def delta_weight(self) -> Array:
        """The update this adapter adds to W^T, as a raw array (in_dim, out_dim): scale * A @ B."""
        return (self.A.data @ self.B.data) * self.scale

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, alpha={self.alpha:g}"


class LinearWithLoRA(Module):
    """A Linear plus its LoRA update: ``linear(x) + lora(x)``, (..., in) -> (..., out).

    ``n_splits`` > 1 gives each of that many equal blocks of the output its own LoRA (``lora`` is then a
    ModuleList: for the fused ``W_qkv``, lora.0 for queries, lora.1 for keys, lora.2 for values), which is
    what separate Linears each with its own LoRA compute.
    """

    def __init__(self, linear: Linear, rank: int, alpha: float, n_splits: int = 1):
        super().__init__()
        if not isinstance(linear, Linear):
            raise TypeError(f"LinearWithLoRA: expected a Linear, got {type(linear).__name__}")
        if n_splits < 1 or linear.out_features % n_splits:
            raise ValueError(
                f"LinearWithLoRA: out_features {linear.out_features} does not split into {n_splits} equal blocks"
            )
        self.linear = linear
        self.n_splits = n_splits
        dtype = linear.weight.dtype
        block = linear.out_features // n_splits
        if n_splits == 1:
            self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha, dtype=dtype)
        else:
            self.lora = ModuleList(
                [LoRALayer(linear.in_features, block, rank, alpha, dtype=dtype) for _ in range(n_splits)]
            )
        if linear.weight.device != "cpu":
            self.lora.to(linear.weight.device)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        if self.n_splits == 1:
            update = self.lora(x)  # (..., in) -> (..., out)
        else:  # one (..., out / n) block per LoRA, side by side: (..., out)
            update = F.concatenate([lora(x) for lora in self.lora], axis=-1)
        return self.linear(x) + update

    def delta_weight(self) -> Array:
        """What the adapters add to ``linear.weight`` (out, in), as a raw array."""
        if self.n_splits == 1:
            return self.lora.delta_weight().T  # (in, out) -> (out, in)
        blocks = [lora.delta_weight() for lora in self.lora]  # n x (in, out / n)
        xp = backend.get_array_module(blocks[0])
        return xp.concatenate(blocks, axis=1).T  # (in, out) -> (out, in)

    def merged_linear(self) -> Linear:
        """A plain Linear equal to this one: weight W + delta, the same bias (new arrays; self is unchanged)."""
        merged = Linear(
            self.in_features, self.out_features, bias=self.linear.bias is not None, dtype=self.linear.weight.dtype
        )
        if self.linear.weight.device != "cpu":
            merged.to(self.linear.weight.device)
        merged.weight.data[...] = self.linear.weight.data + self.delta_weight()
        if self.linear.bias is not None:
            merged.bias.data[...] = self.linear.bias.data
        merged.weight.requires_grad_(self.linear.weight.requires_grad)
        if merged.bias is not None:
            merged.bias.requires_grad_(self.linear.bias.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return f"n_splits={self.n_splits}" if self.n_splits > 1 else ""


def freeze(model: Module) -> Module:
    """requires_grad False on every parameter (the book's ``for param in model.parameters(): ...``)."""
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    return model


def replace_linear_with_lora(model: Module, rank: int, alpha: float, split_qkv: bool = True) -> Module:
    """Replace every Linear inside ``model`` by ``LinearWithLoRA`` (in place, recursively), as the book.

    The new A and B are trainable; the wrapped Linears keep their ``requires_grad`` (freeze the model first,
    as the book, to train only the adapters). A fused attention projection ``W_qkv`` gets one LoRA per
    query/key/value block when ``split_qkv`` (see the module docstring). A Linear whose weight is tied to an
    Embedding's (GPT-2's output head with ``tie_weights``) is left as it is: merging an adapter into it would
    untie it. Returns ``model``.
    """
    tied = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    _replace(model, rank, alpha, split_qkv, tied)
    return model


def _replace(module: Module, rank: int, alpha: float, split_qkv: bool, tied: set) -> None:
    for name, child in list(module._modules.items()):
        if isinstance(child, LinearWithLoRA):
            continue  # already adapted
        if isinstance(child, Linear):
            if id(child.weight) in tied:
                continue
            n_splits = 3 if split_qkv and name == "W_qkv" else 1
            setattr(module, name, LinearWithLoRA(child, rank, alpha, n_splits=n_splits))
        else:
            _replace(child, rank, alpha, split_qkv, tied)


def merge_lora(model: Module) -> Module:
    """Fold every adapter into its Linear: each LinearWithLoRA becomes a plain Linear with W + scale (A B)^T.

    The merged model computes the same function with the original architecture (so ``state_dict`` has the
    base model's names and loads into a plain GPTModel). In place; returns ``model``.
    """
    for name, child in list(model._modules.items()):
        if isinstance(child, LinearWithLoRA):
            setattr(model, name, child.merged_linear())
        else:
            merge_lora(child)
    return model


def count_trainable_parameters(model: Module) -> int:
    """Scalars in the parameters with requires_grad (the book's ``sum(p.numel() ... if p.requires_grad)``)."""
    return model.num_parameters(trainable_only=True)


def lora_parameter_count(config: GPTConfig, rank: int, num_classes: int | None = 2, split_qkv: bool = True) -> int:
    """Trainable parameters after ``replace_linear_with_lora`` on a frozen GPTModel, from its config alone.

    Every Linear (in -> out) gets rank * (in + out). Per block: the attention projection (three
    (C -> C) LoRAs when ``split_qkv``, else one C -> 3C), out_proj C -> C, the feed-forward C -> 4C and
    4C -> C. The output head: C -> num_classes (a classifier, as the book), or C -> vocab when None.
    For gpt2-small, rank 16, two classes: 2,666,528, the book's figure.
    """
    c = config.emb_dim
    per = lambda fan_in, fan_out: rank * (fan_in + fan_out)  # noqa: E731
    qkv = 3 * per(c, c) if split_qkv else per(c, 3 * c)
    block = qkv + per(c, c) + per(c, 4 * c) + per(4 * c, c)
    head = per(c, num_classes if num_classes is not None else config.vocab_size)
    return config.n_layers * block + head
