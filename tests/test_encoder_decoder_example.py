"""examples/transformer_copy_task.py: the original encoder-decoder transformer learns to reverse digit sequences
to 100% of held-out sequences exactly right, with greedy decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_examples import execute_script

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "transformer_copy_task.py"


def test_cross_attention_shapes_and_decoder_causality():
    _, example = execute_script(EXAMPLE, "--max-steps", "1", "--eval-every", "1")  # its classes, one step run
    model = example["Transformer"](vocab_size=11, max_len=9, d_model=16, n_heads=2, n_layers=1)
    src, tgt = np.array([[1, 2, 3, 4, 5, 6, 7]]), np.array([[0, 4, 2]])
    memory = model.encode(src)
    assert memory.shape == (1, 7, 16)
    logits = model.decode(tgt, memory)
    assert logits.shape == (1, 3, 11)  # one row per target position, over a source of another length
    changed = model.decode(np.array([[0, 4, 9]]), memory)  # a later target token changes nothing before it
    np.testing.assert_allclose(changed.data[:, :2], logits.data[:, :2], rtol=1e-6)
    other_source = model.decode(tgt, model.encode(src[:, ::-1]))  # the decoder does read the source
    assert not np.allclose(other_source.data, logits.data)


@pytest.mark.slow
def test_reverse_task_reaches_100_percent(capsys):
    status, _ = execute_script(EXAMPLE, "--task", "reverse", "--max-steps", "400", "--eval-every", "50")
    assert status == 0  # 0 only at 100%
    assert "held-out accuracy 100.0%" in capsys.readouterr().out
