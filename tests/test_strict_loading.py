"""Files that lie: one strict safetensors reader for every loader, config.json checked against the weights
before anything is allocated, the tokenizer checked against the model, damaged resume state named."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from tinygrad_llm.checkpoint import CheckpointError, check_state_matches, read_safetensors
from tinygrad_llm.cli import main
from tinygrad_llm.model import GPTModel
from tinygrad_llm.model.pretrained import PretrainedError
from tinygrad_llm.safetensors_file import SafetensorsFile

TINY = [
    "--preset",
    "tiny",
    "--context-length",
    "16",
    "--batch-size",
    "4",
    "--eval-iters",
    "1",
    "--sample-tokens",
    "4",
    "--warmup-steps",
    "0",
]


def safetensors_bytes(header: dict | str, data: bytes) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    return struct.pack("<Q", len(text)) + text + data


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A trained run with two checkpoints (steps 2 and 4)."""
    root = tmp_path_factory.mktemp("strict")
    (root / "story.txt").write_text("the cat sat on the mat. the dog sat on the log. " * 80)
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "story.txt"),
                "--out",
                str(root / "run"),
                "--max-steps",
                "4",
                "--eval-interval",
                "2",
                *TINY,
            ]
        )
        == 0
    )
    return root / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".tinygrad-llm.lock"))
    return target


def rewrite(file: Path, edit) -> None:
    """Rewrite a safetensors file through ``edit(header, arrays) -> (header, data)``."""
    st = SafetensorsFile(file)
    arrays = st.read(finite=False)
    header = {
        name: {
            "dtype": st.dtype_code(name),
            "shape": list(st.shape(name)),
            "data_offsets": list(st.entries[name]["data_offsets"]),
        }
        for name in st.entries
    }
    header, data = edit(header, arrays, file.read_bytes()[st.data_start :])
    file.write_bytes(safetensors_bytes(header, data))


@pytest.mark.parametrize(
    "case, expected",
    [
        ("int32", ["'tok_emb.weight'", "I32", "floating-point"]),
        ("unknown dtype", ["'tok_emb.weight'", "dtype 'F8'"]),
        ("duplicate", ["names 'tok_emb.weight' twice"]),
        ("nan", ["'pos_emb.weight'", "NaN or infinite"]),
        ("overlap", ["starts at byte"]),
        ("past the end", ["truncated"]),
        ("trailing bytes", ["trailing bytes"]),
        ("gap", ["starts at byte", "expected"]),
        ("short data", ["needs", "bytes"]),
        ("huge header", ["header length"]),
        ("not json", ["not JSON"]),
    ],
)
def test_a_weights_file_that_lies_is_refused_naming_file_and_tensor(run, tmp_path, capsys, case, expected):
    folder = copy_run(run, tmp_path)
    weights = folder / "model.safetensors"

    def edit(header, arrays, data):
        first = min(header, key=lambda n: header[n]["data_offsets"][0])
        if case == "int32":
            header["tok_emb.weight"]["dtype"] = "I32"  # same byte count: only the header lies
        elif case == "unknown dtype":
            header["tok_emb.weight"]["dtype"] = "F8"
        elif case == "duplicate":
            entry = json.dumps(header["tok_emb.weight"])
            text = json.dumps(header)
            return text[:-1] + f', "tok_emb.weight": {entry}}}', data
        elif case == "nan":
            begin = header["pos_emb.weight"]["data_offsets"][0]
            data = data[:begin] + np.float32(np.nan).tobytes() + data[begin + 4 :]
        elif case == "overlap":
            name = max(header, key=lambda n: header[n]["data_offsets"][0])
            begin, end = header[name]["data_offsets"]
            header[name]["data_offsets"] = [begin - 4, end - 4]
        elif case == "past the end":
            data = data[:-4]
        elif case == "trailing bytes":  # the docstring's promise: the tensors tile the data, nothing after them
            data = data + b"\0" * 8
        elif case == "gap":  # 4 unclaimed bytes before the last tensor (which moves 4 bytes on)
            name = max(header, key=lambda n: header[n]["data_offsets"][0])
            begin, end = header[name]["data_offsets"]
            header[name]["data_offsets"] = [begin + 4, end + 4]
            data = data[:begin] + b"\0" * 4 + data[begin:]
        elif case == "short data":
            header[first]["shape"] = [header[first]["shape"][0] + 1] + header[first]["shape"][1:]
        elif case == "huge header":
            return None, data
        elif case == "not json":
            return "{" + " " * 10, data
        return header, data

    if case == "huge header":
        weights.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    else:
        rewrite(weights, edit)
    for command in (
        ["generate", "--checkpoint", str(folder), "--prompt", "the", "--max-new-tokens", "2"],
        ["finetune-classifier", "--init-from", str(folder), "--out", str(tmp_path / "ft")],
    ):
        assert main(command) == 1
        line = error_line(capsys)
        assert str(weights) in line, line
        for fragment in expected:
            assert fragment in line, (fragment, line)
    if case == "int32":  # a well-formed file: the loaders' dtype checks refuse it
        with pytest.raises(CheckpointError, match="dtype int32"):
            check_state_matches(read_safetensors(weights), GPTModel.from_pretrained(run).state_dict(), weights)
    else:  # the run loader's reader is the same strict one
        with pytest.raises(CheckpointError, match="model.safetensors"):
            read_safetensors(weights)


@pytest.mark.slow
def test_resume_refuses_a_lying_checkpoint_and_takes_the_older_intact_one(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path)
    story = run.parent / "story.txt"
    newest = folder / "checkpoints" / "ckpt-000004"
    state_file = newest / "trainer_state.json"
    state = json.loads(state_file.read_text())
    for damage, expected in (
        ({k: v for k, v in state.items() if k != "history"}, "missing field 'history'"),
        ({**state, "step": "four"}, "field 'step'"),
    ):
        state_file.write_text(json.dumps(damage))
        # the size recorded in the manifest is fixed up, so only the content is wrong
        manifest = json.loads((newest / "checkpoint.json").read_text())
        manifest["files"]["trainer_state.json"] = state_file.stat().st_size
        (newest / "checkpoint.json").write_text(json.dumps(manifest))
        assert main(["train", "--data", str(story), "--out", str(folder), "--resume", "--max-steps", "6", *TINY]) == 0
        err = capsys.readouterr().err
        assert f"{state_file}: {expected}" in err and "resuming from the older ckpt-000002" in err
        assert json.loads((folder / "log.jsonl").read_text().splitlines()[-1])["step"] == 6
        shutil.rmtree(folder)
        folder = copy_run(run, tmp_path)
    # none intact: the newest one's fault, named
    for checkpoint in (folder / "checkpoints").glob("ckpt-*"):
        (checkpoint / "model.safetensors").write_bytes(b"\0" * 8)
    assert main(["train", "--data", str(story), "--out", str(folder), "--resume", "--max-steps", "6", *TINY]) == 1
    line = error_line(capsys)
    assert str(newest / "model.safetensors") in line


def test_config_sizes_are_checked_against_the_weights_before_allocating(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    for field in ("n_layers", "context_length", "vocab_size"):
        (folder / "config.json").write_text(json.dumps({**config, field: 10**9}))
        assert main(["generate", "--checkpoint", str(folder), "--prompt", "the"]) == 1
        line = error_line(capsys)
        assert f"{folder / 'config.json'}: {field} = 1000000000" in line and "holds weights for" in line
    # the Hugging Face layout: the same check, with its field names
    hf = tmp_path / "hf"
    GPTModel.from_pretrained(run).save_pretrained(hf)
    hf_config = json.loads((hf / "config.json").read_text())
    del hf_config["tinygrad_llm"]
    for field in ("n_layer", "n_positions"):
        (hf / "config.json").write_text(json.dumps({**hf_config, field: 10**9}))
        with pytest.raises(PretrainedError, match=f"{field} = 1000000000"):
            GPTModel.from_pretrained(hf)


def test_the_tokenizer_must_belong_to_the_model(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path)
    # a checkpoint folder has no tokenizer of its own: the run's is used, not GPT-2's
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(folder / "checkpoints" / "ckpt-000004"),
                "--prompt",
                "the cat",
                "--max-new-tokens",
                "3",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("the cat")
    tokenizer = folder / "tokenizer.json"
    original = json.loads(tokenizer.read_text())
    cases = [
        ({**original, "chars": original["chars"] + "xyz"}, "do not belong together"),
        ({**original, "type": "sentencepiece"}, "unknown tokenizer type 'sentencepiece'"),
        ("{broken", "not a valid tokenizer file"),
    ]
    for content, expected in cases:
        tokenizer.write_text(content if isinstance(content, str) else json.dumps(content))
        assert main(["generate", "--checkpoint", str(folder), "--prompt", "the"]) == 1
        line = error_line(capsys)
        assert str(tokenizer) in line and expected in line, line
    tokenizer.unlink()
    assert main(["generate", "--checkpoint", str(folder), "--prompt", "the"]) == 1
    line = error_line(capsys)
    assert str(tokenizer) in line and "missing" in line and "not GPT-2's" in line


def test_a_hugging_face_folder_keeps_gpt2_s_tokenizer(tmp_path, shared_data):
    from tinygrad_llm.cli.common import load_model_and_tokenizer
    from tinygrad_llm.model import GPTConfig

    GPTModel(GPTConfig(vocab_size=50257, context_length=8, emb_dim=8, n_heads=2, n_layers=1)).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))  # HF's format
    model, tokenizer = load_model_and_tokenizer(tmp_path, None)
    assert tokenizer.name == "gpt2" and model.config.vocab_size == 50257
