"""The training text is streamed: read in blocks, encoded in chunks cut where no tokenizer merges across,
written to nanoGPT-style token files (uint16/uint32) and read back as memmaps. The ids and the split are
exactly those of encoding the whole text at once; only regular files are read."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from tinygrad_llm.data.tokens_file import CHUNK_CHARS, chunks_at_safe_cuts, load_tokens, read_header, tokenize_to_file
from tinygrad_llm.tokenizer import get_tokenizer
from tinygrad_llm.train.corpus import CorpusError, open_corpus
from tinygrad_llm.train.run import ALLOW_EOT, RunSettings, prepare_data

# what a chunk boundary could break: runs of newlines and spaces, tabs, a special token, contractions,
# digits, punctuation runs, characters of several bytes, and \x1c (whitespace to Python, not to GPT-2's regex)
ATOMS = ["the", "cat", " ", "  ", "\n", "\n\n", "\n\n\n", "\t", ".", "...", "'s", "'ll", "42", "<|endoftext|>",
         "é", "中文", "🙂", "\x1c", " -", "!?", "\r\n", "x"]  # fmt: skip


def tricky_text(seed: int, n_atoms: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(ATOMS) for _ in range(n_atoms))


def tokenizers_for(text: str):
    yield get_tokenizer("char", text=text)
    yield get_tokenizer("byte")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small text may not fill the vocabulary
        yield get_tokenizer("bpe", text=text, vocab_size=300)
    try:
        yield get_tokenizer("gpt2")
    except (FileNotFoundError, OSError) as exc:  # GPT-2's files: TINYGRAD_LLM_DATA or the network
        print(f"gpt2 skipped: {exc}")


def test_chunked_encoding_gives_the_ids_of_the_whole_text(tmp_path):
    for seed in range(4):
        text = tricky_text(seed, 3000)
        path = tmp_path / "text.txt"
        path.write_text(text, encoding="utf-8", newline="")
        corpus = open_corpus(path)
        assert "".join(corpus.pieces(block_bytes=7)) == text  # blocks cut UTF-8 characters in two
        chunks = list(chunks_at_safe_cuts(corpus.pieces(block_bytes=7), chunk_chars=40))
        assert len(chunks) > 100 and "".join(chunks) == text
        for tokenizer in tokenizers_for(text):
            whole = tokenizer.encode(text, allowed_special=ALLOW_EOT)
            in_chunks = [i for chunk in chunks for i in tokenizer.encode(chunk, allowed_special=ALLOW_EOT)]
            assert in_chunks == whole, (seed, tokenizer.name)
            tokens = tmp_path / f"{tokenizer.name}.bin"
            encode = lambda t, tok=tokenizer: tok.encode(t, allowed_special=ALLOW_EOT)  # noqa: E731
            tokenize_to_file(corpus.pieces(block_bytes=7), encode, tokens, tokenizer.n_vocab, chunk_chars=40)
            ids = load_tokens(tokens)
            assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and ids.tolist() == whole


def test_a_text_without_a_safe_cut_is_one_chunk():
    assert list(chunks_at_safe_cuts(["ab", "cd", "ef"], chunk_chars=2)) == ["abcdef"]
    assert list(chunks_at_safe_cuts(["ab", " cd", " e"], chunk_chars=2)) == ["ab", " cd", " e"]
    assert list(chunks_at_safe_cuts(["a\n\n", "\nb c"], chunk_chars=1)) == ["a", "\n\n\nb", " c"]
    long_word = "c" * 70_000  # the last cut lies far before the end of what is held
    assert list(chunks_at_safe_cuts(["a b" + long_word, " d"], chunk_chars=1)) == ["a", " b" + long_word, " d"]


@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_the_run_streams_the_same_split_and_ids_as_the_whole_text(tmp_path, tokenizer):
    if tokenizer == "gpt2":
        try:
            get_tokenizer("gpt2")
        except (FileNotFoundError, OSError) as exc:
            pytest.skip(f"GPT-2's tokenizer files are not available: {exc}")
    text = tricky_text(7, 400_000)  # several chunks of CHUNK_CHARS
    assert len(text) > 3 * CHUNK_CHARS
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8", newline="")
    out = tmp_path / "run"
    out.mkdir()
    settings = RunSettings(data=str(data), tokenizer=tokenizer, val_fraction=0.13, context_length=8)
    messages = []
    run, train_ids, val_ids = prepare_data(settings, out, log=messages.append)
    split = int(len(text) * (1 - 0.13))  # what the run did when it held the whole text
    expected = run.tokenizer
    assert train_ids.tolist() == expected.encode(text[:split], allowed_special=ALLOW_EOT)
    assert val_ids.tolist() == expected.encode(text[split:], allowed_special=ALLOW_EOT)
    assert isinstance(train_ids, np.memmap) and train_ids.dtype == np.uint16
    assert run.val_head == text[split:][: 1 << 16]
    assert read_header(out / "train.bin")["source"]["chars"] == [0, split]
    # a rerun on the same text and tokenizer uses the files again; a changed text makes them again
    again, train_again, _ = prepare_data(settings, out, log=messages.append)
    assert "using the token files" in messages[-1] and train_again.tolist() == train_ids.tolist()
    data.write_text(text[::-1], encoding="utf-8", newline="")
    messages.clear()
    _, reversed_ids, _ = prepare_data(settings, out, log=messages.append)
    assert not any("using the token files" in m for m in messages)
    assert reversed_ids.tolist() == run.tokenizer.encode(text[::-1][:split], allowed_special=ALLOW_EOT)


def test_tokenizing_a_large_file_never_holds_its_id_list(tmp_path):
    n = 4_000_000
    data = tmp_path / "big.txt"
    line = "the quick brown fox jumps over the lazy dog\n"
    data.write_text(line * (n // len(line)), encoding="utf-8")
    tokenizer = get_tokenizer("char", text=line)
    tracemalloc.start()
    try:
        tokenize_to_file(open_corpus(data).pieces(), tokenizer.encode, tmp_path / "big.bin", tokenizer.n_vocab)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ids = load_tokens(tmp_path / "big.bin")
    assert len(ids) == data.stat().st_size
    # the id list alone would take 8 bytes an id (a pointer each); a chunk's list and array are all there is
    assert peak < 8 * len(ids) / 3, f"peak {peak:,} bytes for {len(ids):,} ids"


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(CorpusError, match="not a regular file"):
            open_corpus(path)
        env = {**os.environ}
        env.pop("TINYGRAD_LLM_DEBUG", None)
        result = subprocess.run(
            [sys.executable, "-m", "tinygrad_llm", "train", "--data", path, "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert path in last and "not a regular file" in last, result.stderr
    assert not (tmp_path / "run").exists()
