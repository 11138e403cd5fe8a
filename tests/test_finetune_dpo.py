"""Preference tuning (DPO): the book's collate and masks, the loss (ln 2 at the start, gradients, PyTorch's
formula), the precomputed reference, one epoch that moves the margin, and the command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm import Tensor
from tinygrad_llm.data import DataLoader
from tinygrad_llm.finetune.dpo import (
    compute_dpo_loss,
    compute_dpo_loss_batch,
    compute_dpo_loss_loader,
    compute_logprobs,
    evaluate_dpo_loss_loader,
    precompute_reference_logprobs,
    train_model_dpo_simple,
)
from tinygrad_llm.finetune.instruction import split_instruction_data
from tinygrad_llm.finetune.preference import PreferenceDataset, load_preference_data, preference_collate_fn
from tinygrad_llm.optim import AdamW

PAD = 50256


def test_collate_pads_to_a_common_length_and_masks_only_the_response():
    # prompts of 2 and 1 tokens; the mask also drops the two tokens after the prompt ("\n\n")
    items = [
        {"prompt": [1, 2], "chosen": [1, 2, 3, 4, 5, 6], "rejected": [1, 2, 3, 4, 7]},
        {"prompt": [8], "chosen": [8, 9, 10, 11], "rejected": [8, 9, 10, 12, 13, 14, 15]},
    ]
    batch = preference_collate_fn(items, pad_token_id=PAD)
    assert batch["chosen"].shape == batch["rejected"].shape == (2, 8)  # longest (7) + 1, for both keys
    np.testing.assert_array_equal(batch["chosen"], [[1, 2, 3, 4, 5, 6, PAD, PAD], [8, 9, 10, 11, PAD, PAD, PAD, PAD]])
    np.testing.assert_array_equal(batch["rejected"][1], [8, 9, 10, 12, 13, 14, 15, PAD])
    np.testing.assert_array_equal(
        batch["chosen_mask"].astype(int), [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        batch["rejected_mask"].astype(int), [[0, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 0]]
    )
    assert batch["chosen"].dtype == np.int64 and batch["chosen_mask"].dtype == bool
    short = preference_collate_fn(items, pad_token_id=PAD, allowed_max_length=5)
    assert short["chosen"].shape == (2, 5) and short["rejected_mask"].shape == (2, 5)
    unmasked = preference_collate_fn(items, pad_token_id=PAD, mask_prompt_tokens=False)
    assert unmasked["chosen_mask"][0].tolist() == [True] * 6 + [False] * 2  # only the padding is off


def test_the_books_split_and_masks_on_the_shared_data(shared_data):
    data = load_preference_data(shared_data / "instruction-data-with-preference.json")
    train, test, val = split_instruction_data(data)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    tokenizer = tl.get_tokenizer("gpt2")
    dataset = PreferenceDataset(train[:4], tokenizer)
    batch = dataset.get_batch([2, 0])
    assert batch["index"].tolist() == [2, 0]
    for row, entry in enumerate([train[2], train[0]]):
        for key in ("chosen", "rejected"):
            selected = batch[key][row][batch[f"{key}_mask"][row]]  # what DPO compares: the response only
            assert tokenizer.decode(selected.tolist()) == f"### Response:\n{entry[key]}"
    assert batch["chosen"][batch["chosen"] == PAD].size > 0  # padded with end-of-text


def test_bad_preference_file_names_the_record(tmp_path):
    path = tmp_path / "prefs.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": "a", "input": "", "chosen": "b", "rejected": "c"},
                {"instruction": "a", "input": "", "chosen": "b"},
            ]
        )
    )
    with pytest.raises(ValueError, match=r"record 1: 'rejected' is missing"):
        load_preference_data(path)


def _random_logprobs(rng, n=6, dtype=np.float64):
    return [
        Tensor(rng.normal(-2, 1, n).astype(dtype), requires_grad=requires) for requires in (True, True, False, False)
    ]


def test_loss_is_ln2_when_the_policy_is_the_reference():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(-2, 1, 5), rng.normal(-3, 1, 5)
    loss, chosen_reward, rejected_reward = compute_dpo_loss(Tensor(chosen), Tensor(rejected), chosen, rejected)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert chosen_reward == 0 and rejected_reward == 0


def test_loss_gradcheck_float64():
    rng = np.random.default_rng(1)
    policy_chosen, policy_rejected, reference_chosen, reference_rejected = _random_logprobs(rng)
    for beta in (0.1, 5.0):  # 5: the sigmoid's tails, where a naive log(sigmoid) loses every digit
        assert tl.gradcheck(
            lambda c, r: compute_dpo_loss(c, r, reference_chosen, reference_rejected, beta)[0],
            [policy_chosen, policy_rejected],
        )
    logits = Tensor(rng.normal(0, 2, (2, 5, 7)), requires_grad=True)
    labels = rng.integers(0, 7, (2, 5))
    mask = np.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=bool)
    for average in (True, False):
        assert tl.gradcheck(lambda x: compute_logprobs(x, labels, mask, average), [logits])
    x = Tensor(np.array([-800.0, -30.0, 0.0, 30.0, 800.0]), requires_grad=True)
    np.testing.assert_allclose(
        tl.functional.logsigmoid(x).numpy(), [-800.0, -30.0, -math.log(2), -9.357623e-14, 0], rtol=1e-6, atol=1e-300
    )
    assert tl.gradcheck(tl.functional.logsigmoid, [x])


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])  # the book's, and others: a loss that ignored beta fails
def test_loss_rewards_and_logprobs_equal_pytorch(torch, beta):
    """The book's compute_logprobs and compute_dpo_loss, written in PyTorch, on the same numbers."""
    tF = torch.nn.functional
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (3, 6, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 6))
    mask = rng.random((3, 6)) < 0.7
    mask[:, 1] = True  # every row selects a token
    t_logits, t_labels, t_mask = torch.tensor(logits), torch.tensor(labels), torch.tensor(mask)
    selected = torch.gather(tF.log_softmax(t_logits[:, :-1], -1), -1, t_labels[:, 1:, None]).squeeze(-1)
    book_mean = (selected * t_mask[:, 1:]).sum(-1) / t_mask[:, 1:].sum(-1)
    book_sum = (selected * t_mask[:, 1:]).sum(-1)
    np.testing.assert_allclose(compute_logprobs(Tensor(logits), labels, mask).numpy(), book_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        compute_logprobs(Tensor(logits), labels, mask, average=False).numpy(), book_sum.numpy(), rtol=1e-5
    )
    unmasked = torch.gather(tF.log_softmax(t_logits[:, :-1], -1), -1, t_labels[:, 1:, None]).squeeze(-1).mean(-1)
    np.testing.assert_allclose(compute_logprobs(Tensor(logits), labels).numpy(), unmasked.numpy(), rtol=1e-5)

    values = [rng.normal(-2, 1, 8) for _ in range(4)]
    ours = [Tensor(v, requires_grad=True) for v in values[:2]]
    theirs = [torch.tensor(v, requires_grad=True) for v in values[:2]]
    loss, chosen_reward, rejected_reward = compute_dpo_loss(*ours, values[2], values[3], beta)
    ref_chosen, ref_rejected = torch.tensor(values[2]), torch.tensor(values[3])
    t_loss = -tF.logsigmoid(beta * ((theirs[0] - theirs[1]) - (ref_chosen - ref_rejected))).mean()
    t_loss.backward()
    assert loss.item() == pytest.approx(t_loss.item(), rel=1e-12)
    assert chosen_reward == pytest.approx((theirs[0] - ref_chosen).mean().item(), rel=1e-12)
    assert rejected_reward == pytest.approx((theirs[1] - ref_rejected).mean().item(), rel=1e-12)
    loss.backward()
    for mine, other in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad, other.grad.numpy(), rtol=1e-12)


def _byte_preferences(n=32):
    """Short records (byte tokenizer) whose chosen answers share a polite phrasing."""
    rng = np.random.default_rng(3)
    words = ["cat", "sun", "tree", "blue", "river", "stone", "bird", "lamp"]
    records = []
    for i in range(n):
        word = words[i % len(words)]
        records.append(
            {
                "instruction": f"Say {word}.",
                "input": "",
                "output": word,
                "chosen": f"Sure, {word}, thank you.",
                "rejected": f"{word}. Go away{'!' * int(rng.integers(1, 3))}",
            }
        )
    return records


@pytest.fixture(scope="module")
def tiny_byte_model():
    tl.manual_seed(5)
    tokenizer = tl.get_tokenizer("byte")
    model = tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=192, n_layers=1))
    return model, tokenizer


def test_precomputed_reference_equals_running_it_and_starts_at_ln2(tiny_byte_model):
    model, tokenizer = tiny_byte_model
    dataset = PreferenceDataset(_byte_preferences(12), tokenizer)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, seed=1)
    model.eval()
    loss, chosen_reward, rejected_reward = compute_dpo_loss_loader(loader, model, model, beta=0.1)
    assert loss == pytest.approx(math.log(2), abs=1e-6)  # step 0: the policy is the reference
    assert chosen_reward == rejected_reward == 0
    batch = dataset.get_batch([3, 7, 1])
    running = compute_dpo_loss_batch(batch, model, model)[0].item()
    chosen, rejected = precompute_reference_logprobs(model, dataset, batch_size=5)
    batch = dataset.get_batch([3, 7, 1])
    np.testing.assert_allclose(batch["reference_chosen_logprobs"], chosen[[3, 7, 1]])
    assert compute_dpo_loss_batch(batch, model, None)[0].item() == pytest.approx(running, abs=1e-6)


def test_one_epoch_makes_the_training_margin_positive(tiny_byte_model):
    model, tokenizer = tiny_byte_model
    train_set = PreferenceDataset(_byte_preferences(32), tokenizer)
    val_set = PreferenceDataset(_byte_preferences(8), tokenizer)
    for dataset in (train_set, val_set):
        precompute_reference_logprobs(model, dataset)
    train_loader = DataLoader(train_set, batch_size=8, shuffle=True, seed=123)
    val_loader = DataLoader(val_set, batch_size=8, drop_last=False)
    before = evaluate_dpo_loss_loader(model, None, train_loader, val_loader, eval_iter=None)
    assert before["train_reward_margin"] == pytest.approx(0, abs=1e-5)
    optimizer = AdamW(model.named_parameters(), lr=1e-3, weight_decay=0.01)
    tracking = train_model_dpo_simple(
        model, None, train_loader, val_loader, optimizer, num_epochs=1, beta=0.1, eval_freq=2, eval_iter=2, log=None
    )
    assert tracking["steps"] == [0, 2] and len(tracking["train_losses"]) == 2
    after = evaluate_dpo_loss_loader(model, None, train_loader, val_loader, eval_iter=None)
    assert after["train_reward_margin"] > 0.05
    assert after["train_loss"] < math.log(2)


@pytest.mark.slow
def test_cli_finetune_dpo_end_to_end(tmp_path, tiny_byte_model):
    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune.io import save_finetuned
    from tinygrad_llm.train.plot import matplotlib_available

    model, tokenizer = tiny_byte_model
    save_finetuned(tmp_path / "start", model, tokenizer, {"task": "instruction"})
    data = tmp_path / "prefs.json"
    data.write_text(json.dumps(_byte_preferences(40)))  # train / test / validation: 34 / 4 / 2
    out = tmp_path / "dpo"
    code = main(
        [
            "finetune-dpo",
            "--init-from",
            str(tmp_path / "start"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--eval-freq",
            "2",
            "--eval-iter",
            "1",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["before"]["train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["history"]["step"] == [0, 2] and len(metrics["history"]["val_reward_margin"]) == 2
    assert metrics["after"]["train_reward_margin"] > 0
    assert (metrics["lr"], metrics["beta"], metrics["logprobs"], metrics["records"]) == (
        1e-3,
        0.1,
        "mean",
        {"train": 34, "val": 2},
    )
    for name in ("model.safetensors", "config.json", "tokenizer.json", "finetune.json"):
        assert (out / name).is_file()
    assert (out / "dpo-reward-margin.png").is_file() == matplotlib_available()
    reloaded = json.loads((out / "finetune.json").read_text())
    assert reloaded["tuning"] == "dpo"


@pytest.mark.slow
def test_sigterm_during_dpo_saves_the_model_marked_interrupted(tmp_path, tiny_byte_model):
    """A real SIGTERM while finetune-dpo trains: exit 143, the model saved as it was (finetune.json says
    "interrupted"), the folder kept and loadable, as finetune-classifier and finetune-instruct do."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tinygrad_llm.cli.common import load_model_and_tokenizer
    from tinygrad_llm.finetune.io import save_finetuned

    model, tokenizer = tiny_byte_model
    save_finetuned(tmp_path / "start", model, tokenizer, {"task": "instruction"})
    data = tmp_path / "prefs.json"
    data.write_text(json.dumps(_byte_preferences(40)))
    out = tmp_path / "dpo"
    root = str(Path(tl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": root}
    env.pop("TINYGRAD_LLM_DEBUG", None)
    command = [sys.executable, "-m", "tinygrad_llm", "finetune-dpo", "--init-from", str(tmp_path / "start")]
    command += ["--data", str(data), "--out", str(out), "--epochs", "100000", "--eval-freq", "1", "--eval-iter", "1"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        seen = []
        for line in child.stderr:  # wait until it is training: the first evaluation is printed
            seen.append(line)
            if line.startswith("Ep "):
                break
        assert child.poll() is None, "".join(seen)
        child.send_signal(signal.SIGTERM)
        stderr = "".join(seen) + child.stderr.read()
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "interrupted: saved the model as it was" in stderr, stderr
    meta = json.loads((out / "finetune.json").read_text())
    assert meta["interrupted"] is True and meta["tuning"] == "dpo"
    saved, _ = load_model_and_tokenizer(out, None)
    assert saved.config.vocab_size == tokenizer.n_vocab


def test_cli_finetune_dpo_bad_input(tmp_path, capsys):
    from tinygrad_llm.cli import main

    bad = tmp_path / "prefs.json"
    bad.write_text(json.dumps([{"instruction": "a", "chosen": 3, "rejected": "c"}] * 3))
    assert main(["finetune-dpo", "--init-from", str(tmp_path), "--data", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "record 0: 'chosen' is a int, not a string" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_records_without_preference_are_counted():
    tokenizer = tl.get_tokenizer("byte")
    records = _byte_preferences(4)
    records[1] = {**records[1], "rejected": records[1]["chosen"]}  # the same answer twice
    records[2] = {**records[2], "rejected": records[2]["chosen"] + " Extra words."}  # differs past the chosen
    chosen_length = len(PreferenceDataset(records, tokenizer)[2]["chosen"])
    assert PreferenceDataset(records, tokenizer).records_without_preference() == [1]
    for limit, expected in ((chosen_length, [1, 2]), (chosen_length + 1, [1])):
        assert PreferenceDataset(records, tokenizer, allowed_max_length=limit).records_without_preference() == expected
    # cut before the responses: every pair is its prompt and header twice
    prompt = len(PreferenceDataset(records, tokenizer)[0]["prompt"])
    assert PreferenceDataset(records, tokenizer, allowed_max_length=prompt).records_without_preference() == [0, 1, 2, 3]


def test_cli_refuses_pairs_that_teach_nothing_and_warns_on_some(tmp_path, tiny_byte_model, capsys):
    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune.io import save_finetuned

    model, tokenizer = tiny_byte_model
    save_finetuned(tmp_path / "start", model, tokenizer, {"task": "instruction"})
    same = [{**r, "rejected": r["chosen"]} for r in _byte_preferences(40)]  # train / test / val: 34 / 4 / 2
    data = tmp_path / "prefs.json"
    out = tmp_path / "dpo"
    base = ["finetune-dpo", "--init-from", str(tmp_path / "start"), "--data", str(data), "--out", str(out)]
    data.write_text(json.dumps(same))
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "nothing to train on: all 34 training records have the same chosen and rejected tokens" in err
    assert "Traceback" not in err and not out.exists()
    data.write_text(json.dumps(_byte_preferences(40)))
    assert main([*base, "--max-length", "8"]) == 1  # inside the prompt: chosen and rejected are cut the same
    assert "nothing to train on: all 34 training records" in capsys.readouterr().err and not out.exists()
    assert main([*base, "--max-length", "193"]) == 1  # the model's context is 192
    assert "--max-length 193 is longer than the model's context of 192" in capsys.readouterr().err
    data.write_text(json.dumps(same[:5] + _byte_preferences(40)[5:]))
    assert main([*base, "--epochs", "1", "--eval-freq", "10", "--eval-iter", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning: 5 of 34 training records have the same chosen and rejected tokens" in err
    assert (out / "model.safetensors").is_file()


def test_a_start_without_end_of_text_says_which_model_to_start_from(tmp_path, shared_data, capsys):
    """The README's offline route: DPO from a char-level run is refused with the way round (an
    instruction-tuned model of GPT-2's tokenizer), not only the missing token."""
    from tinygrad_llm.cli import main

    tokenizer = tl.get_tokenizer("char", text="abc def")
    tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=32)).save_pretrained(
        tmp_path / "run"
    )
    tokenizer.save(tmp_path / "run")
    data = shared_data / "instruction-data-with-preference.json"
    argv = ["finetune-dpo", "--init-from", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    said = capsys.readouterr().err
    assert "char tokenizer has no <|endoftext|>" in said and "tinygrad-llm finetune-instruct --out" in said
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("loop", ["train_model_dpo_simple", "train_model_dpo"])
def test_both_loops_train_with_the_beta_they_are_given(loop):
    """At the start the policy is the reference, so the loss's gradient is -beta / 2 times the log-ratio's:
    the first step's gradient with beta 2 is 20 times that with beta 0.1, for every parameter. A loop that
    dropped its beta (the command line's --beta) would give them equal."""
    from tinygrad_llm.finetune import dpo
    from tinygrad_llm.optim import SGD

    tokenizer = tl.get_tokenizer("byte")
    moves = {}
    for beta in (0.1, 2.0):
        tl.manual_seed(5)
        model = tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=192, n_layers=1))
        model.eval()  # no dropout: the same forward pass for both betas
        train_set = PreferenceDataset(_byte_preferences(8), tokenizer)
        precompute_reference_logprobs(model, train_set)
        loader = DataLoader(train_set, batch_size=8, drop_last=True)
        getattr(dpo, loop)(model, None, loader, loader, SGD(model.parameters(), lr=0.0), 1, beta, 100, 1, log=None)
        moves[beta] = np.concatenate([p.grad.ravel() for p in model.parameters()])  # the one step's gradient
    assert np.abs(moves[0.1]).max() > 0
    # float32 sums in another order: within 1e-5 of the largest element (a few cancel to ~1e-6 of it)
    np.testing.assert_allclose(moves[2.0], 20 * moves[0.1], rtol=1e-4, atol=1e-5 * np.abs(moves[2.0]).max())


class _Stopped(Exception):
    """Raised by the stand-in DPO loop: the test has what it came for, the command stops there."""


def test_cli_sum_logprobs_max_train_and_beta_change_what_dpo_trains_on(tmp_path, tiny_byte_model, monkeypatch, capsys):
    """finetune-dpo as far as its loop, which is replaced by one that keeps what it is given. --beta 0.37 reaches
    the loop (the default 0.1 without it). --max-train 8:
    the first 8 training records, not the split's 34. --sum-logprobs: each record's reference log-probability
    is the sum of its response tokens' log-probabilities (the DPO paper), without it their mean (the book);
    both computed here from the model's logits by hand; and the loop scores the policy the same way."""
    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune import dpo
    from tinygrad_llm.finetune.io import save_finetuned

    monkeypatch.delenv("TINYGRAD_LLM_DEBUG", raising=False)  # the stop is reported as an error, not raised
    model, tokenizer = tiny_byte_model
    save_finetuned(tmp_path / "start", model, tokenizer, {"task": "instruction"})
    records = _byte_preferences(40)  # train / test / validation: 34 / 4 / 2
    (tmp_path / "prefs.json").write_text(json.dumps(records))
    given = []

    def stand_in(model, reference, train_loader, val_loader, optimizer, epochs, beta, *args, average, **kwargs):
        given.append({"model": model, "dataset": train_loader.dataset, "average": average, "beta": beta})
        raise _Stopped("stopped where training starts")

    monkeypatch.setattr(dpo, "train_model_dpo", stand_in)
    base = ["finetune-dpo", "--init-from", str(tmp_path / "start"), "--data", str(tmp_path / "prefs.json")]
    base += ["--batch-size", "4", "--eval-iter", "1"]
    assert main([*base, "--out", str(tmp_path / "summed"), "--sum-logprobs", "--max-train", "8", "--beta", "0.37"]) == 1
    assert main([*base, "--out", str(tmp_path / "averaged")]) == 1
    assert capsys.readouterr().err.count("stopped where training starts") == 2
    summed, averaged = given
    train = split_instruction_data(records)[0]
    assert len(averaged["dataset"]) == len(train) == 34
    assert summed["dataset"].data == train[:8]
    assert (summed["beta"], averaged["beta"]) == (0.37, 0.1)
    assert (summed["average"], averaged["average"]) == (False, True)  # the loop scores the policy as below
    start = summed["model"].eval()
    for i in range(8):
        batch = summed["dataset"].get_batch([i])
        for key in ("chosen", "rejected"):
            ids, mask = batch[key], batch[f"{key}_mask"][0, 1:].astype(bool)  # the response tokens predicted
            with tl.no_grad():
                logits = start(ids).data[0, :-1].astype(np.float64)  # position t predicts token t + 1
            log_probs = logits - logits.max(-1, keepdims=True)
            log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
            by_hand = log_probs[np.arange(len(mask)), ids[0, 1:]][mask]
            assert 3 < len(by_hand) < 40
            assert batch[f"reference_{key}_logprobs"][0] == pytest.approx(by_hand.sum(), rel=1e-5)
            mean = averaged["dataset"].get_batch([i])[f"reference_{key}_logprobs"][0]
            assert mean == pytest.approx(by_hand.mean(), rel=1e-5)
