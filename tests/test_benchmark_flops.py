"""The FLOP count benchmarks/train.py divides by a step's time (its GFLOP/s and share of the SGEMM peak): the
formula against the products a training step really makes, counted at ``runtime.matmul``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import runtime
from tinygrad_llm.model import GPTConfig, GPTModel

# loaded by its path: benchmarks/ on sys.path would shadow packages (its kernels.py, Hugging Face's kernels)
_common = load_script(Path(__file__).parents[1] / "benchmarks/_common.py", "benchmarks_common")
product_parameters, step_flops_per_token = _common.product_parameters, _common.step_flops_per_token


def test_product_parameters_are_the_blocks_projections_and_the_head():
    config = GPTConfig.preset("gpt2-small", context_length=64, drop_rate=0.0)  # untied, as the step benchmark
    model = GPTModel(config)
    layers, width = config.n_layers, config.emb_dim
    assert product_parameters(model) == layers * 12 * width * width + config.vocab_size * width


@pytest.mark.parametrize("batch", [1, 3])
def test_step_flops_equal_the_products_a_forward_and_backward_make(monkeypatch, batch):
    config = GPTConfig(vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0)
    tl.manual_seed(0)
    model = GPTModel(config)
    counted = []
    product = runtime.matmul

    def counting(a, b):
        out = product(a, b)
        # (..., m, k) @ (..., k, n): 2 m k n FLOPs for each of the broadcast leading entries
        counted.append(2 * out.size * a.shape[-1])
        return out

    monkeypatch.setattr(runtime, "matmul", counting)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, (batch, config.context_length))
    loss = F.cross_entropy(model(ids).reshape(-1, config.vocab_size), ids.reshape(-1))
    loss.backward()
    assert sum(counted) == step_flops_per_token(model) * batch * config.context_length
