"""Chapter 7: the prompt format, the collate function's exact tensors, the split, data errors, the judge."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tinygrad_llm.finetune.instruction import (
    InstructionDataset,
    custom_collate_fn,
    format_input,
    load_instruction_data,
    split_instruction_data,
)
from tinygrad_llm.finetune.judge import JudgeError, OllamaJudge, exact_match, rouge_l, score_responses, token_f1

PAD = 50256
X = -100


def test_format_input_is_the_books():
    entry = {"instruction": "Convert to passive voice.", "input": "The chef cooks the meal.", "output": "..."}
    assert format_input(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nConvert to passive voice.\n\n### Input:\nThe chef cooks the meal."
    )
    assert format_input({**entry, "input": ""}).endswith("### Instruction:\nConvert to passive voice.")


def test_collate_pads_keeps_first_end_of_text_and_ignores_the_rest():
    # the book's example: [0, 1, 2, 3, 4], [5, 6], [7, 8, 9]
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], pad_token_id=PAD)
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]])
    np.testing.assert_array_equal(targets, [[1, 2, 3, 4, PAD], [6, PAD, X, X, X], [8, 9, PAD, X, X]])
    assert inputs.dtype == np.int64 and targets.dtype == np.int64


def test_collate_truncates_to_allowed_max_length():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6]], pad_token_id=PAD, allowed_max_length=3)
    np.testing.assert_array_equal(inputs, [[0, 1, 2], [5, 6, PAD]])
    np.testing.assert_array_equal(targets, [[1, 2, 3], [6, PAD, X]])


def test_collate_masks_the_prompt_tokens():
    # prompts of 3 and 1 tokens: targets predicting prompt tokens 1..2 are ignored
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6]], pad_token_id=PAD, prompt_lengths=[3, 1])
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD]])
    np.testing.assert_array_equal(targets, [[X, X, 3, 4, PAD], [6, PAD, X, X, X]])


def test_collate_keeps_an_end_of_text_inside_the_text():
    """Padding is found by position: a genuine end-of-text in the text stays a target (the book's
    value-based mask would ignore it)."""
    inputs, targets = custom_collate_fn([[1, PAD, 2], [3]], pad_token_id=PAD)
    np.testing.assert_array_equal(targets, [[PAD, 2, PAD], [PAD, X, X]])


def test_instruction_dataset_batches(shared_data):
    from tinygrad_llm.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    data = load_instruction_data(shared_data / "instruction-data.json")
    train, test, val = split_instruction_data(data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    dataset = InstructionDataset(train[:4], tokenizer, mask_inputs=True)
    inputs, targets = dataset.get_batch([0, 1])
    first = dataset[0]
    assert inputs.shape == targets.shape == (2, max(len(dataset[0]), len(dataset[1])))
    np.testing.assert_array_equal(inputs[0, : len(first)], first)
    prompt = dataset.prompt_lengths[0]
    assert prompt == len(tokenizer.encode(format_input(train[0])))
    assert np.all(targets[0, : prompt - 1] == X) and targets[0, prompt - 1] == first[prompt]
    assert targets[0, len(first) - 1] == PAD


def test_bad_instruction_files_name_the_record(tmp_path):
    cases = {
        "dict.json": ({"instruction": "a", "output": "b"}, "expected a JSON list"),
        "missing.json": ([{"instruction": "a", "output": "b"}, {"instruction": "c"}], r"record 1: 'output' is missing"),
        "notobj.json": ([{"instruction": "a", "output": "b"}, "text"], "record 1 is a str"),
        "badtype.json": ([{"instruction": 3, "output": "b"}], "record 0: 'instruction' is a int"),
        "empty.json": ([], "empty"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message) as info:
            load_instruction_data(path)
        assert name in str(info.value)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instruction_data(tmp_path / "broken.json")


def test_offline_metrics():
    assert exact_match("The cake is baked.", "the cake is baked") == 1.0
    assert exact_match("cake baked", "the cake is baked") == 0.0
    assert token_f1("the cake", "the cake is baked") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert rouge_l("cake the baked", "the cake is baked") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    scores = score_responses([{"output": "yes", "model_response": "yes"}, {"output": "no", "model_response": "x"}])
    assert scores == {"exact_match": 0.5, "token_f1": 0.5, "rouge_l": 0.5, "n": 2}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_judge_is_a_clear_error():
    url = f"http://127.0.0.1:{_closed_port()}/api/chat"
    judge = OllamaJudge(url=url, timeout=5)
    with pytest.raises(JudgeError, match="cannot reach the judge at http://127.0.0.1"):
        judge.check()
    with pytest.raises(ValueError, match="http"):
        OllamaJudge(url="localhost:11434")


def test_cli_with_unreachable_judge_writes_nothing(tmp_path, shared_data, capsys):
    from tinygrad_llm.cli import main

    out = tmp_path / "run"
    code = main(
        [
            "finetune-instruct",
            "--data",
            str(shared_data / "instruction-data.json"),
            "--preset",
            "tiny",
            "--judge-url",
            f"http://127.0.0.1:{_closed_port()}/api/chat",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot reach the judge" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_rejects_a_bad_instruction_file(tmp_path, capsys):
    from tinygrad_llm.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"input": "c"}]))
    out = tmp_path / "run"
    assert main(["finetune-instruct", "--data", str(bad), "--preset", "tiny", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.json: record 1: 'instruction' is missing" in err
    assert not out.exists()


@pytest.mark.slow
def test_cli_finetune_instruct_end_to_end(tmp_path, shared_data):
    """A tiny from-scratch run on a slice of the data: the model, the responses file and the metrics."""
    from tinygrad_llm.cli import main

    data = json.loads((shared_data / "instruction-data.json").read_text())[:60]  # 51 / 6 / 3
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "run"
    code = main(
        [
            "finetune-instruct",
            "--data",
            str(path),
            "--preset",
            "small-cpu",  # a context of 256: the Alpaca prompt alone is over 100 bytes
            "--emb-dim",
            "32",
            "--tokenizer",
            "byte",
            "--n-layers",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--max-length",
            "256",
            "--max-new-tokens",
            "5",
            "--max-test",
            "3",
            "--eval-freq",
            "50",
            "--eval-iter",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    responses = json.loads((out / "instruction-data-with-response.json").read_text())
    assert len(responses) == 3 and all(isinstance(r["model_response"], str) for r in responses)
    assert responses[0]["instruction"] == data[51]["instruction"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["val_loss"])
    assert set(metrics["offline_scores"]) == {"exact_match", "token_f1", "rouge_l", "n"}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "finetune.json"):
        assert (out / name).is_file()


def test_judge_reads_an_ollama_stream_from_a_local_server():
    """A stand-in server answering as Ollama does (one JSON object per line): the judge joins the pieces,
    parses the score, and gets None for an answer that is not a number."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    answers = iter([["4", "2"], ["not a number"]])  # the pieces of each streamed answer
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            for piece in next(answers):
                self.wfile.write((json.dumps({"message": {"content": piece}, "done": False}) + "\n").encode())
            self.wfile.write((json.dumps({"message": {"content": ""}, "done": True}) + "\n").encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = OllamaJudge(model="judge-model", url=f"http://127.0.0.1:{server.server_port}/api/chat", timeout=10)
        entry = {"instruction": "Say hi.", "input": "", "output": "Hi.", "model_response": "Hello."}
        assert judge.score(entry) == 42
        assert received[0]["model"] == "judge-model" and received[0]["options"]["temperature"] == 0
        assert "score the model response `Hello.`" in received[0]["messages"][0]["content"]
        assert judge.score(entry) is None
    finally:
        server.shutdown()
        server.server_close()


def _records(n=40):
    """Short records, every fourth with an input so long that its prompt fills 200 bytes."""
    return [
        {"instruction": f"Repeat the number {i}.", "input": "x" * 300 if i % 4 == 0 else "", "output": f"{i}"}
        for i in range(n)
    ]


def test_records_without_response_are_counted():
    import tinygrad_llm as tl
    from tinygrad_llm.finetune.instruction import format_response

    tokenizer = tl.get_tokenizer("byte")
    records = _records(8)
    assert all(len(format_input(r)) > 300 for r in records[::4])
    assert all(len(format_input(r) + format_response(r)) < 199 for i, r in enumerate(records) if i % 4)
    for mask in (False, True):
        dataset = InstructionDataset(records, tokenizer, allowed_max_length=200, mask_inputs=mask)
        assert dataset.records_without_response() == [0, 4]
        assert InstructionDataset(records, tokenizer, mask_inputs=mask).records_without_response() == []
        # a limit that ends right after the prompt keeps no response token; one more token keeps one
        prompt_length = dataset.prompt_lengths[1]
        assert (
            1 in InstructionDataset(records, tokenizer, allowed_max_length=prompt_length - 1).records_without_response()
        )
        assert (
            1 not in InstructionDataset(records, tokenizer, allowed_max_length=prompt_length).records_without_response()
        )


def test_cli_refuses_training_on_nothing_and_a_max_length_past_the_context(tmp_path, capsys):
    from tinygrad_llm.cli import main

    path = tmp_path / "data.json"
    path.write_text(json.dumps(_records()))  # 34 / 4 / 2
    out = tmp_path / "run"
    base = ["finetune-instruct", "--data", str(path), "--preset", "tiny", "--tokenizer", "byte", "--out", str(out)]
    assert main([*base, "--mask-inputs", "--max-length", "8"]) == 1
    err = capsys.readouterr().err
    assert "nothing to train on: all 34 training records keep no response token within the 8 tokens" in err
    assert "Traceback" not in err and not out.exists()
    assert main([*base, "--max-length", "65"]) == 1  # tiny's context is 64
    err = capsys.readouterr().err
    assert "--max-length 65 is longer than the model's context of 64 tokens" in err and not out.exists()


@pytest.mark.slow
def test_cli_warns_with_the_count_of_records_that_teach_nothing(tmp_path, capsys):
    from tinygrad_llm.cli import main

    path = tmp_path / "data.json"
    path.write_text(json.dumps(_records()))  # 34 / 4 / 2: 9 training records with a 300-byte input
    out = tmp_path / "run"
    flags = ["--preset", "small-cpu", "--emb-dim", "32", "--n-layers", "1", "--tokenizer", "byte", "--epochs", "1"]
    flags += ["--max-length", "200", "--max-test", "1", "--max-new-tokens", "1", "--eval-iter", "1"]
    assert main(["finetune-instruct", "--data", str(path), *flags, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: 9 of 34 training records keep no response token within the 200 tokens" in err
    assert (out / "model.safetensors").is_file()


def test_max_steps_stops_within_the_epochs(capsys):
    """finetune-instruct --max-steps (Hugging Face's max_steps): 3 steps of 2 epochs of 2 batches, then stop."""
    import tinygrad_llm as tl
    from tinygrad_llm.finetune.instruction import train_instruction_model
    from tinygrad_llm.optim import AdamW
    from tinygrad_llm.train.progress import Progress

    tl.manual_seed(0)
    tokenizer = tl.get_tokenizer("byte")
    model = tl.GPTModel(tl.GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=16, n_layers=1))
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 256, (2, 8)), rng.integers(0, 256, (2, 8))) for _ in range(2)]
    bar = Progress(total=3, log=lambda line: None)
    args = (model, batches, batches, AdamW(model.parameters()), None, 2, 100, 1, "a", tokenizer)
    train_instruction_model(*args, bar=bar, max_steps=3)
    assert bar.done == 3
    bar = Progress(total=4, log=lambda line: None)
    train_instruction_model(*args, bar=bar)
    assert bar.done == 4  # without it: every batch of every epoch


# ---- the flags of finetune-instruct, by their effect on what the training loop is given (issue 25) --------------

SMALL_INSTRUCT = [
    "--preset",
    "small-cpu",
    "--emb-dim",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--tokenizer",
    "byte",
]


class _Stopped(Exception):
    """Raised by the stand-in training loop: the test has what it came for, the command stops there."""


def _instruct_until_training(tmp_path, monkeypatch, capsys, *flags) -> dict:
    """``finetune-instruct`` on 40 short records as far as its training loop, which is replaced by one that keeps
    what it is given (the model, the training loader) and stops the command. Returns those."""
    from tinygrad_llm.cli import main
    from tinygrad_llm.finetune import instruction

    monkeypatch.delenv("TINYGRAD_LLM_DEBUG", raising=False)  # the stop is reported as an error, not raised
    given = {}

    def stand_in(model, train_loader, *args, **kwargs):
        given.update(model=model, train_loader=train_loader)
        raise _Stopped("stopped where training starts")

    monkeypatch.setattr(instruction, "train_instruction_model", stand_in)
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} {i}"} for i in range(40)]))
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    argv = ["finetune-instruct", "--data", str(data), *SMALL_INSTRUCT, "--batch-size", "4", "--out", str(out), *flags]
    assert main(argv) == 1
    assert "stopped where training starts" in capsys.readouterr().err
    return given


def test_mask_inputs_sets_the_prompts_targets_to_ignore(tmp_path, monkeypatch, capsys):
    """The first batch the loop trains on: with --mask-inputs each row's targets up to the prompt's last token
    are -100 and the response's are learnt; without it the prompt is learnt too."""
    import tinygrad_llm as tl

    tokenizer = tl.get_tokenizer("byte")
    for mask in (True, False):
        flags = ["--mask-inputs"] if mask else []
        inputs, targets = next(iter(_instruct_until_training(tmp_path, monkeypatch, capsys, *flags)["train_loader"]))
        for row_inputs, row_targets in zip(inputs, targets):
            text = tokenizer.decode(row_inputs.tolist())
            prompt = text.index("\n\n### Response:")  # format_input's length: one byte token per character
            assert prompt > 100
            if mask:
                assert np.all(row_targets[: prompt - 1] == X)
            else:
                np.testing.assert_array_equal(row_targets[: prompt - 1], row_inputs[1:prompt])
            np.testing.assert_array_equal(row_targets[prompt - 1 : prompt + 5], row_inputs[prompt : prompt + 6])


def test_lora_alpha_scales_every_adapter_by_alpha_over_rank(tmp_path, monkeypatch, capsys):
    """--lora-rank 2 --lora-alpha 8: each adapted Linear adds 4 x A B (the default alpha = rank would add 1 x)."""
    import tinygrad_llm as tl
    from tinygrad_llm.finetune.lora import LinearWithLoRA

    model = _instruct_until_training(tmp_path, monkeypatch, capsys, "--lora-rank", "2", "--lora-alpha", "8")["model"]
    adapted = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]
    assert len(adapted) == 5  # the block's W_qkv, out_proj and two feed-forward layers, and the output head
    rng = np.random.default_rng(0)
    for layer in adapted:
        loras = [layer.lora] if layer.n_splits == 1 else list(layer.lora)
        for lora in loras:
            lora.B.data[...] = rng.standard_normal(lora.B.shape).astype(np.float32)  # B starts at 0: no update
        x = rng.standard_normal((3, layer.in_features)).astype(np.float32)
        with tl.no_grad():
            update = layer(tl.Tensor(x)).data - layer.linear(tl.Tensor(x)).data
        expected = np.concatenate([x @ lora.A.data @ lora.B.data for lora in loras], axis=-1) * (8 / 2)
        np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-5)


def test_judge_model_and_timeout_reach_the_judges_request(tmp_path, monkeypatch, capsys):
    """--judge-url is checked before training with one request: a stand-in for urlopen keeps it (and its timeout)
    and refuses it, so the command stops there, naming the judge."""
    import urllib.error
    import urllib.request

    from tinygrad_llm.cli import main

    requests = []

    def refuse(request, timeout=None):
        requests.append((json.loads(request.data), request.full_url, timeout))
        raise urllib.error.URLError("refused by the stand-in")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.delenv("TINYGRAD_LLM_DEBUG", raising=False)
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_records()))
    url = "http://judge.invalid:1234/api/chat"
    base = ["finetune-instruct", "--data", str(data), *SMALL_INSTRUCT, "--judge-url", url]
    assert main([*base, "--judge-model", "qwen-judge", "--judge-timeout", "7", "--out", str(tmp_path / "a")]) == 1
    assert f"cannot reach the judge at {url}" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b")]) == 1  # the defaults: llama3, 60 seconds
    (given, given_url, given_timeout), (default, _, default_timeout) = requests
    assert (given["model"], given_url, given_timeout) == ("qwen-judge", url, 7.0)
    assert (default["model"], default_timeout) == ("llama3", 60.0)
    assert not (tmp_path / "a").exists()  # stopped before anything was written
