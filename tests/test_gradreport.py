"""tinygrad-llm gradcheck: the whole-model report passes on a small model of every preset's shape, and
says NOT OK with exit status 1 when an operation's backward is broken; --op checks one operation."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import run_cli

from tinygrad_llm.cli import main
from tinygrad_llm.functional import activation, arithmetic
from tinygrad_llm.model import PRESETS

SMALL = ["--n-layers", "1", "--vocab-size", "24", "--context-length", "5", "--directions", "1"]


def report_lines(text: str) -> dict:
    """{parameter name: the words after it} for each line of the table."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[-1] == "OK":
            rows[parts[0]] = "NOT OK" if parts[-2] == "NOT" else "OK"
    return rows


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_shape_passes(preset, capsys):
    """Each preset's head count (gpt2-xl's 25 heads, ...) at a width of two numbers per head."""
    heads = PRESETS[preset].n_heads
    assert main(["gradcheck", "--preset", preset, "--emb-dim", str(2 * heads), *SMALL]) == 0
    out = capsys.readouterr().out
    rows = report_lines(out)
    assert len(rows) == 16 and set(rows.values()) == {"OK"}  # 1 block: 11 parameters, and 5 around it
    assert f"n_heads {heads}" in out
    assert out.strip().splitlines()[-1].startswith("OK: all 16 parameters agree")


def test_a_broken_backward_is_not_ok(monkeypatch, capsys):
    """GELU's backward 1% too large: the feed-forward's first layer and everything before it are wrong,
    the output head (which GELU's backward does not reach) is still right."""
    right = activation.GELUFunction.backward
    monkeypatch.setattr(activation.GELUFunction, "backward", lambda self, gy: right(self, gy) * 1.01)
    assert main(["gradcheck", "--emb-dim", "8", "--n-heads", "2", *SMALL]) == 1
    out = capsys.readouterr().out
    rows = report_lines(out)
    assert rows["trf_blocks.0.ff.layers.0.weight"] == "NOT OK"
    assert rows["tok_emb.weight"] == "NOT OK"
    assert rows["out_head.weight"] == "OK" and rows["trf_blocks.0.ff.layers.2.weight"] == "OK"
    assert out.strip().splitlines()[-1].startswith("NOT OK:")


def test_op_checks_one_operation_and_fails_when_it_is_broken(monkeypatch, capsys):
    assert main(["gradcheck", "--op", "matmul", "--cases", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK") == 5 and "OK: matmul passed all 4 cases" in out
    right = arithmetic.MatMul.backward
    monkeypatch.setattr(
        arithmetic.MatMul, "backward", lambda self, gy: tuple(None if g is None else g * 0.5 for g in right(self, gy))
    )
    assert main(["gradcheck", "--op", "matmul", "--cases", "4"]) == 1
    out = capsys.readouterr().out
    assert "NOT OK: matmul failed 4 of 4 cases" in out and "analytic" in out


def test_every_listed_operation_passes_its_own_check():
    from tinygrad_llm.gradreport import OP_CASES, check_op

    for name in OP_CASES:
        failures = [message for _, message in check_op(name, n_cases=2, seed=1) if message]
        assert not failures, (name, failures)


def test_the_command_line_contract():
    result = run_cli("gradcheck", "--op", "softmax", "--cases", "2")
    assert result.returncode == 0 and result.stdout.strip().endswith("OK: softmax passed all 2 cases")
    result = run_cli("gradcheck", "--op", "nope")
    assert result.returncode == 1 and "unknown operation 'nope'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("gradcheck", "--checkpoint", "somewhere", "--n-layers", "2")
    assert result.returncode == 1 and "drop --n-layers" in result.stderr
    assert main(["gradcheck", "--op", "list"]) == 0


def test_check_model_gradients_refuses_float32():
    import tinygrad_llm as tl
    from tinygrad_llm import functional as F
    from tinygrad_llm.gradreport import check_model_gradients

    model = tl.GPTModel(tl.GPTConfig(vocab_size=8, context_length=4, emb_dim=4, n_heads=2, n_layers=1))
    ids = np.zeros((1, 4), dtype=np.int64)
    with pytest.raises(TypeError, match="float64"):
        check_model_gradients(lambda: F.cross_entropy(model(ids), ids), model.named_parameters())


def test_eps_and_rtol_change_what_is_measured_and_what_passes(capsys):
    """The same model, batch and directions each time. Central differences err by about eps^2 f'''/6: --eps
    0.1 measures an error 4 times that of --eps 0.05, far above the default's; --rtol is the line between OK
    and NOT OK, just above the largest error passing and just below it failing."""
    import re

    def worst(*flags) -> tuple[int, float]:
        code = main(["gradcheck", "--emb-dim", "8", "--n-heads", "2", *SMALL, "--directions", "0", *flags])
        verdict = capsys.readouterr().out.strip().splitlines()[-1]
        return code, float(re.search(r"relative error ([-+.e0-9]+)", verdict).group(1))

    code, tiny = worst()
    assert code == 0 and tiny < 1e-6
    code, half = worst("--eps", "0.05")
    code_large, large = worst("--eps", "0.1")
    assert code == code_large == 1 and large > 1e-3
    assert large / half == pytest.approx(4, rel=0.1)  # (0.1 / 0.05)^2: the truncation error of the step
    assert worst("--eps", "0.1", "--rtol", f"{large * 1.05:.6e}") == (0, large)
    assert worst("--eps", "0.1", "--rtol", f"{large * 0.95:.6e}") == (1, large)
