"""One progress display for every training command: a line for the first step and then every interval
without a terminal (the bar itself is tqdm's), with the job's ETA; and the fine-tunings step it."""

from __future__ import annotations

import time

import numpy as np

from tinygrad_llm.train.progress import Progress, format_duration


def test_lines_without_a_terminal_say_where_the_job_is_and_when_it_ends(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    lines = []
    progress = Progress(total=10, log=lines.append, interval_s=15.0)  # pytest: not a terminal, no bar
    for _ in range(4):
        clock[0] += 10.0  # a step every 10 s
        progress.step(np.float64(0.5), tok_s="1,000")
    assert lines == [
        "step      1/10  loss 0.5000  1,000 tok/s  10.0s  eta 1m30s",  # the first step: a sign of life
        "step      3/10  loss 0.5000  1,000 tok/s  30.0s  eta 1m10s",  # then once 15 s have passed
    ]
    progress.write("Ep 1 (Step 000003): Train loss 0.500, Val loss 0.600")
    assert lines[-1].startswith("Ep 1")
    resumed = Progress(total=10, log=lines.append, done=8)  # a resumed job: its pace is this session's
    clock[0] += 5.0
    resumed.step()
    assert lines[-1] == "step      9/10  5.0s  eta 5s"
    quiet = Progress(total=10, log=lines.append, enabled=False)  # a process other than 0
    quiet.step(1.0)
    assert quiet.done == 1 and lines[-1] == "step      9/10  5.0s  eta 5s"


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


def test_the_classifier_loop_steps_the_bar_once_per_optimizer_step():
    import tinygrad_llm as tl
    from tinygrad_llm.finetune.classifier import train_classifier
    from tinygrad_llm.model import GPTConfig, GPTModel
    from tinygrad_llm.nn import Linear
    from tinygrad_llm.optim import AdamW

    tl.manual_seed(0)
    model = GPTModel(GPTConfig.preset("tiny", vocab_size=16, context_length=8))
    model.out_head = Linear(model.config.emb_dim, 2)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 16, (4, 8)), rng.integers(0, 2, 4)) for _ in range(3)]
    lines = []
    bar = Progress(total=2 * len(batches), log=lines.append, interval_s=0.0)
    train_classifier(model, batches, batches, AdamW(model.parameters()), None, max_epochs=2, log=None, bar=bar)
    assert bar.done == 6 and [line.split()[1] for line in lines] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
