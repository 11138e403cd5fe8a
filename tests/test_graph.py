"""tl.graph / tl.plot_graph: the DOT text parses, has one node per recorded operation and tensor, names
parameters by module, shows gradient norms, and collapses modules below a depth."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import functional as F
from tinygrad_llm import tensor as engine
from tinygrad_llm.nn import Linear, Module

NODE = re.compile(r'^(\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r"^(\w+) -> (\w+);$")


def parse_dot(text: str):
    """A small parser for the DOT this library writes: nodes (id -> label, attributes, enclosing cluster
    labels), edges, and clusters. Fails on anything it does not recognise, or unbalanced braces."""
    lines = [line.strip() for line in text.strip().splitlines()]
    assert lines[0] == "digraph G {" and lines[-1] == "}"
    nodes, edges, stack, clusters = {}, [], [], []
    for line in lines[1:-1]:
        if line.startswith("subgraph cluster_") and line.endswith("{"):
            stack.append(None)
        elif line.startswith("label=") and stack and stack[-1] is None:
            stack[-1] = re.match(r'label="((?:[^"\\]|\\.)*)"', line).group(1)
            clusters.append(stack[-1])
        elif line == "}":
            assert stack, "unbalanced }"
            stack.pop()
        elif m := NODE.match(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            nodes[m.group(1)] = {"label": m.group(2).replace("\\n", "\n"), "attrs": m.group(3), "in": list(stack)}
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
        elif line.startswith(("node [", "rankdir=")):
            continue
        else:
            raise AssertionError(f"unparsed DOT line: {line!r}")
    assert not stack, "unbalanced {"
    for a, b in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    return nodes, edges, clusters


def recorded(root):
    """Operations and tensors reachable from root, counted independently of tinygrad_llm.graph."""
    ops, tensors, stack = {}, {id(root): root}, [root]
    while stack:
        t = stack.pop()
        if t.creator is not None and id(t.creator) not in ops:
            ops[id(t.creator)] = t.creator
            for x in t.creator.inputs:
                if id(x) not in tensors:
                    tensors[id(x)] = x
                    stack.append(x)
    return list(ops.values()), list(tensors.values())


def boxes(nodes):
    return {k: v for k, v in nodes.items() if "shape=box," in v["attrs"]}


def ellipses(nodes):
    return {k: v for k, v in nodes.items() if "shape=ellipse" in v["attrs"]}


def test_an_expression_has_one_node_per_operation_and_tensor_and_edges_as_the_data_flows():
    x = tl.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * 2.0 + x.exp()).sum()  # x is used twice: one tensor node, two edges out
    y.backward(retain_graph=True)
    nodes, edges, _ = parse_dot(tl.graph(y))
    ops, tensors = recorded(y)
    assert (
        sorted(v["label"] for v in boxes(nodes).values())
        == sorted(op.name for op in ops)
        == ["Add", "Exp", "Mul", "Sum"]
    )
    assert len(ellipses(nodes)) == len(tensors) == 6  # x, 2.0, x*2, exp(x), the sum of both, y
    assert len(edges) == sum(len(op.inputs) + 1 for op in ops)  # each input in, each output out
    x_node = next(k for k, v in nodes.items() if v["label"].startswith("(3,) float32\ngrad norm"))
    assert sum(1 for a, _ in edges if a == x_node) == 2
    norm = float(np.linalg.norm(x.grad))
    assert f"grad norm {norm:.3g}" in nodes[x_node]["label"]
    assert any(v["label"] == "2\n() float32" for v in nodes.values())  # a constant shows its value
    assert "grad norm" not in tl.graph(y, grads=False)


def tiny_gpt_loss(n_layers=2):
    tl.manual_seed(0)
    cfg = tl.GPTConfig.preset("tiny", n_layers=n_layers, vocab_size=32, context_length=8, emb_dim=16, n_heads=2)
    model = tl.GPTModel(cfg)
    ids = np.random.default_rng(0).integers(0, 32, (2, 8))
    loss = F.cross_entropy(model(ids), ids)
    loss.backward(retain_graph=True)
    return model, loss


def test_a_whole_gpt_names_every_parameter_and_frames_every_module():
    model, loss = tiny_gpt_loss()
    nodes, edges, clusters = parse_dot(tl.graph(loss))
    ops, tensors = recorded(loss)
    assert len(boxes(nodes)) == len(ops) and len(ellipses(nodes)) == len(tensors)
    labels = [v["label"] for v in nodes.values()]
    for name, p in model.named_parameters():
        mine = [label for label in labels if label.split("\n")[0] == name]
        assert len(mine) == 1, name
        assert f"grad norm {float(np.linalg.norm(p.grad)):.3g}" in mine[0]
        assert f"{tuple(p.shape)} float32" in mine[0]
    for frame in (
        "GPTModel",
        "trf_blocks.0 (TransformerBlock)",
        "trf_blocks.1.att (MultiHeadAttention)",
        "trf_blocks.1.ff.layers.0 (Linear)",
        "final_norm (LayerNorm)",
    ):
        assert frame in clusters
    causal = next(v for v in nodes.values() if v["label"] == "CausalAttention")
    assert (
        causal["in"][-1] == "trf_blocks.0.att (MultiHeadAttention)"
        or causal["in"][-1] == "trf_blocks.1.att (MultiHeadAttention)"
    )
    cross_entropy = next(v for v in nodes.values() if v["label"] == "CrossEntropy")
    assert cross_entropy["in"] == []  # the loss was computed outside the model


def test_depth_collapses_each_block_into_one_box_with_its_gradient_norm():
    model, loss = tiny_gpt_loss(n_layers=3)
    ops, _ = recorded(loss)
    nodes, edges, clusters = parse_dot(tl.graph(loss, depth=2))
    collapsed = {k: v for k, v in nodes.items() if "shape=box3d" in v["attrs"]}
    assert sorted(v["label"].split("\n")[0] for v in collapsed.values()) == [
        f"trf_blocks.{i} (TransformerBlock)" for i in range(3)
    ]
    n_inside = [int(re.search(r"(\d+) operations", v["label"]).group(1)) for v in collapsed.values()]
    assert sum(n_inside) + len(boxes(nodes)) == len(ops)  # every operation is drawn or counted in a box
    block0 = next(v for v in collapsed.values() if v["label"].startswith("trf_blocks.0 "))
    grads = [p.grad for p in model.trf_blocks[0].parameters()]
    assert f"{len(grads)} parameters" in block0["label"]
    assert f"grad norm {np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)):.3g}" in block0["label"]
    assert not any("att" in c for c in clusters)  # nothing inside a block is drawn
    # the blocks form a chain: each box has one tensor in and one out
    for box in collapsed:
        assert sum(1 for _, b in edges if b == box) == 1 and sum(1 for a, _ in edges if a == box) == 1
    assert len(parse_dot(tl.graph(loss, depth=0))[0]) < len(nodes)  # the whole model: one box
    with pytest.raises(ValueError, match="depth"):
        tl.graph(loss, depth=-1)


def test_module_path_is_recorded_and_restored_even_when_forward_fails():
    class Broken(Module):
        def __init__(self):
            super().__init__()
            self.fc = Linear(3, 2)

        def forward(self, x):
            self.fc(x)
            raise RuntimeError("boom")

    net = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        net(tl.Tensor(np.ones((1, 3), dtype=np.float32)))
    assert engine._state.module_path == ()
    y = net.fc(tl.Tensor(np.ones((1, 3), dtype=np.float32)))
    assert y.creator.module_path == (net.fc,)
    assert (y * 2.0).creator.module_path == ()


def test_a_released_graph_says_how_to_keep_it():
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        tl.graph(y)


def test_plot_graph_without_graphviz_explains_and_writes_the_dot_text(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    written = tl.plot_graph(y, tmp_path / "graph.svg")
    assert written == tmp_path / "graph.dot" and not (tmp_path / "graph.svg").exists()
    message = capsys.readouterr().err
    assert "Graphviz" in message and "apt install graphviz" in message and "graph.dot" in message
    parse_dot(written.read_text())
    assert tl.plot_graph(y, tmp_path / "graph.svg") is None  # an existing graph.dot is left alone
    with pytest.raises(ValueError, match=r"\.svg"):
        tl.plot_graph(y, tmp_path / "graph.jpeg")


def test_plot_graph_renders_with_dot(tmp_path, monkeypatch):
    """A stand-in ``dot`` on PATH records what it is given, so the call is checked without Graphviz."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    fake.write_text(f'#!/bin/sh\ncat > {tmp_path}/received.dot\necho "<svg>$1</svg>"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    assert tl.plot_graph(y, tmp_path / "graph.svg") == tmp_path / "graph.svg"
    assert (tmp_path / "graph.svg").read_text().strip() == "<svg>-Tsvg</svg>"
    assert (tmp_path / "received.dot").read_text() == tl.graph(y)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt install graphviz)")
def test_graphviz_renders_a_gpt_graph(tmp_path):
    _, loss = tiny_gpt_loss()
    path = tl.plot_graph(loss, tmp_path / "graph.png", depth=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_study_gradients_example_answers_its_questions(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "study_gradients.py"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no Graphviz: DOT text only, quicker
    result = subprocess.run(
        [sys.executable, str(example), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "x.grad           = [3.0, 5.0, 7.0]" in out
    assert "after a 2nd backward, x.grad = [6.0, 10.0, 14.0]" in out
    assert "y -> s = a + b -> b = 2a -> a = exp(x) -> x" in out
    assert "p.grad            = None" in out and "x.grad = [6.0, -8.0]" in out
    nodes, _, clusters = parse_dot((tmp_path / "attention_head.dot").read_text())
    assert "CausalAttention" in [v["label"] for v in nodes.values()] and "W_qkv (Linear)" in clusters
    nodes, _, _ = parse_dot((tmp_path / "gpt_depth2.dot").read_text())
    assert sum("shape=box3d" in v["attrs"] for v in nodes.values()) == 2
