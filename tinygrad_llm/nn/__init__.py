"""Modules: the containers (Module, Parameter, ModuleList, Sequential) and the layers of a GPT.

from tinygrad_llm import nn
layer = nn.Linear(768, 3072)
"""

from tinygrad_llm.nn import init
from tinygrad_llm.nn.layers import GELU, Dropout, Embedding, LayerNorm, Linear
from tinygrad_llm.nn.module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "Dropout",
    "Embedding",
    "GELU",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "Sequential",
    "init",
]
