"""Data: sliding windows, the loader (seeded shuffling, exact resume), create_dataloader on real text, token files
on disk (memmap, random windows), and the errors bad input gets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_llm.data import (
    DataLoader,
    GPTDataset,
    GPTDatasetV1,
    RandomBatchSampler,
    TokenFileWriter,
    create_dataloader,
    get_batch,
    load_tokens,
    token_file_vocab_size,
    train_val_split,
    write_tokens,
)
from tinygrad_llm.tokenizer import ByteTokenizer, get_tokenizer


def book_windows(token_ids, max_length, stride):
    """GPTDatasetV1's loop from the book, verbatim in spirit."""
    input_ids, target_ids = [], []
    for i in range(0, len(token_ids) - max_length, stride):
        input_ids.append(token_ids[i : i + max_length])
        target_ids.append(token_ids[i + 1 : i + max_length + 1])
    return input_ids, target_ids


# --- GPTDataset ---------------------------------------------------------------------------------------------


def test_windows_and_targets_on_hand_made_ids():
    ids = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    ds = GPTDataset(ids, max_length=3, stride=2)
    assert len(ds) == 4  # starts 0, 2, 4, 6: the last target ends at id 19
    x, y = ds[1]
    assert x.dtype == np.int64 and x.tolist() == [12, 13, 14] and y.tolist() == [13, 14, 15]
    assert ds[-1][0].tolist() == [16, 17, 18] and ds[-1][1].tolist() == [17, 18, 19]
    with pytest.raises(IndexError, match="index 4 out of range for 4 windows"):
        ds[4]
    inputs, targets = ds.get_batch([3, 0])
    assert inputs.tolist() == [[16, 17, 18], [10, 11, 12]] and targets.tolist() == [[17, 18, 19], [11, 12, 13]]
    assert len(GPTDataset(ids, max_length=9)) == 1  # stride defaults to max_length


@given(st.integers(2, 60), st.integers(1, 12), st.integers(1, 7))
def test_windows_equal_the_books_loop(n, max_length, stride):
    ids = list(np.random.default_rng(n).integers(0, 1000, size=n))
    if n < max_length + 1:
        with pytest.raises(ValueError, match=f"has {n} tokens, but max_length={max_length} needs at least"):
            GPTDataset(ids, max_length, stride)
        return
    ds = GPTDataset(ids, max_length, stride)
    expected_inputs, expected_targets = book_windows(ids, max_length, stride)
    assert len(ds) == len(expected_inputs)
    for i in range(len(ds)):
        assert ds[i][0].tolist() == expected_inputs[i] and ds[i][1].tolist() == expected_targets[i]
    inputs, targets = ds.get_batch(np.arange(len(ds)))
    assert inputs.tolist() == expected_inputs and targets.tolist() == expected_targets


def test_dataset_from_text_in_the_books_argument_order():
    tok = ByteTokenizer()
    text = "Every effort moves you"
    ds = GPTDatasetV1(text, tok, 4, 2)
    ids = tok.encode(text)
    assert len(ds) == len(book_windows(ids, 4, 2)[0])
    assert ds[1][0].tolist() == ids[2:6] and ds[1][1].tolist() == ids[3:7]
    assert GPTDataset(text, tok, 4, 2)[1][0].tolist() == ids[2:6]  # the book's order through GPTDataset too


def test_dataset_bad_input():
    with pytest.raises(ValueError, match="text is empty"):
        GPTDataset("", 4, tokenizer=ByteTokenizer())
    with pytest.raises(ValueError, match="has 3 tokens, but max_length=4 needs at least 5"):
        GPTDataset("abc", 4, tokenizer=ByteTokenizer())
    for name, kwargs in (("max_length", dict(max_length=0)), ("stride", dict(max_length=2, stride=-1))):
        with pytest.raises(ValueError, match=f"{name} must be positive"):
            GPTDataset(list(range(10)), **kwargs)
    with pytest.raises(TypeError, match="max_length must be a positive int"):
        GPTDataset(list(range(10)), 2.5)
    with pytest.raises(TypeError, match="must be integers"):
        GPTDataset(np.ones(10), 2)
    with pytest.raises(ValueError, match="token ids are empty"):
        GPTDataset([], 2)


# --- DataLoader ---------------------------------------------------------------------------------------------


def make_loader(n_windows=10, batch_size=3, **kwargs):
    ids = np.arange(n_windows + 1) * 7  # max_length 1, stride 1: window i is [7 i], target [7 (i + 1)]
    return DataLoader(GPTDataset(ids, 1, 1), batch_size=batch_size, **kwargs)


def first_ids(batches):
    return [(x[:, 0] // 7).tolist() for x, _ in batches]


def test_loader_batches_in_order():
    loader = make_loader(10, 3)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    for x, y in batches:
        assert x.shape == y.shape == (3, 1) and x.dtype == y.dtype == np.int64
        assert (y == x + 7).all()
    assert first_ids(batches) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    keep_last = make_loader(10, 3, drop_last=False)
    assert len(keep_last) == 4 and first_ids(keep_last)[-1] == [9]


def test_loader_shuffle_is_seeded_and_changes_every_epoch():
    a, b, c = (make_loader(12, 4, shuffle=True, seed=s) for s in (5, 5, 6))
    epochs_a = [first_ids(a) for _ in range(3)]
    assert epochs_a == [first_ids(b) for _ in range(3)]
    assert epochs_a != [first_ids(c) for _ in range(3)]
    assert epochs_a[0] != epochs_a[1] or epochs_a[1] != epochs_a[2]
    for epoch in epochs_a:  # each epoch is a permutation: every window exactly once
        assert sorted(sum(epoch, [])) == list(range(12))
    assert epochs_a[0] != [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    unseeded = make_loader(12, 4, shuffle=True)
    state = json.loads(json.dumps(unseeded.state_dict()))
    replay = make_loader(12, 4, shuffle=True, seed=state["seed"])
    assert first_ids(unseeded) == first_ids(replay)


def run_epochs(loader, num_epochs, start_epoch=0, stop_after=None):
    """The book's training loop shape; returns the batches seen and the state when stopped early."""
    seen = []
    for _ in range(start_epoch, num_epochs):
        for x, _ in loader:
            seen.append((x[:, 0] // 7).tolist())
            if stop_after is not None and len(seen) == stop_after:
                return seen, json.loads(json.dumps(loader.state_dict()))  # as saved in a checkpoint
    return seen, None


@settings(max_examples=30)
@given(
    n_windows=st.integers(1, 13),
    batch_size=st.integers(1, 5),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_loader_resume_is_exact(n_windows, batch_size, shuffle, drop_last, seed, data):
    if drop_last and batch_size > n_windows:
        with pytest.raises(ValueError, match=f"batch_size={batch_size} but the dataset has only {n_windows} windows"):
            make_loader(n_windows, batch_size, drop_last=drop_last)
        return
    num_epochs = 3
    options = dict(shuffle=shuffle, drop_last=drop_last, seed=seed)
    full, _ = run_epochs(make_loader(n_windows, batch_size, **options), num_epochs)
    stop = data.draw(st.integers(1, len(full)), label="interrupt after batch")
    head, state = run_epochs(make_loader(n_windows, batch_size, **options), num_epochs, stop_after=stop)
    resumed = make_loader(n_windows, batch_size, shuffle=shuffle, drop_last=drop_last, seed=None)
    resumed.load_state_dict(state)
    tail, _ = run_epochs(resumed, num_epochs, start_epoch=state["epoch"])
    assert head + tail == full


def test_evaluation_inside_the_loop_does_not_disturb_training():
    reference, _ = run_epochs(make_loader(10, 2, shuffle=True, seed=1), 2)
    loader = make_loader(10, 2, shuffle=True, seed=1)
    seen = []
    for epoch in range(2):
        for k, (x, _) in enumerate(loader, start=1):
            seen.append((x[:, 0] // 7).tolist())
            for i, _batch in enumerate(loader):  # calc_loss_loader(train_loader, num_batches=2)
                if i == 1:
                    break
            state = loader.state_dict()
            expected = (epoch, k) if k < len(loader) else (epoch + 1, 0)
            assert (state["epoch"], state["position"]) == expected
    assert seen == reference


def test_loader_bad_input():
    with pytest.raises(ValueError, match="batch_size=20 but the dataset has only 10 windows"):
        make_loader(10, 20)
    assert len(make_loader(10, 20, drop_last=False)) == 1
    with pytest.raises(ValueError, match="batch_size must be positive"):
        make_loader(10, 0)
    loader = make_loader(10, 3, shuffle=True, seed=0)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="batch_size=3 but this loader has batch_size=2"):
        make_loader(10, 2, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="out of range"):
        loader.load_state_dict({**state, "position": 99})


# --- create_dataloader on real text -------------------------------------------------------------------------


def test_create_dataloader_on_the_verdict(shared_data):
    text = (shared_data / "the-verdict.txt").read_text(encoding="utf-8")
    ids = get_tokenizer("gpt2").encode(text)
    loader = create_dataloader(text, batch_size=1, max_length=4, stride=1, shuffle=False)
    first, second = iter(loader), None
    x, y = next(first)
    assert x.tolist() == [ids[0:4]] and y.tolist() == [ids[1:5]]
    second = next(first)
    assert second[0].tolist() == [ids[1:5]]
    loader = create_dataloader(text, batch_size=8, max_length=4, stride=4, shuffle=False)
    assert len(loader) == len(book_windows(ids, 4, 4)[0]) // 8
    x, y = next(iter(loader))
    assert x.shape == (8, 4) and x[1].tolist() == ids[4:8]
    default = create_dataloader(text, seed=0)  # the book's defaults: batch 4, 256 tokens, stride 128
    x, _ = next(iter(default))
    assert x.shape == (4, 256) and len(default) == len(book_windows(ids, 256, 128)[0]) // 4
    train_text, val_text = train_val_split(text, train_ratio=0.9)
    assert train_text + val_text == text and len(train_text) == int(0.9 * len(text))
    with pytest.raises(ValueError, match="has 1 tokens, but max_length=4 needs at least 5"):
        create_dataloader("Hello", max_length=4)
    with pytest.raises(ValueError, match="batch_size=4 but the dataset has only 1 windows"):
        create_dataloader(text[:100], max_length=20, stride=20)


def test_train_val_split():
    ids = list(range(10))
    train, val = train_val_split(ids, 0.8)
    assert train == list(range(8)) and val == [8, 9]
    train, val = train_val_split(np.arange(10), 0.5)
    assert train.tolist() == [0, 1, 2, 3, 4]
    for ratio in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="train_ratio must be in"):
            train_val_split(ids, ratio)
    with pytest.raises(ValueError, match="data is empty"):
        train_val_split("", 0.9)
    with pytest.raises(ValueError, match="leave one side empty"):
        train_val_split("ab", 0.1)


# --- token files --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size, dtype", [(50257, np.uint16), (65536, np.uint16), (100_000, np.uint32)])
def test_token_file_round_trip(tmp_path, vocab_size, dtype):
    ids = np.random.default_rng(0).integers(0, vocab_size, size=1000)
    ids[:2] = [0, vocab_size - 1]
    path = write_tokens(tmp_path / "train.bin", ids, vocab_size)
    tokens = load_tokens(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == dtype and not tokens.flags.writeable
    assert (tokens == ids).all() and token_file_vocab_size(path) == vocab_size
    assert path.stat().st_size == ids.size * np.dtype(dtype).itemsize
    header = json.loads((tmp_path / "train.bin.json").read_text())
    assert header["dtype"] == np.dtype(dtype).name and header["count"] == 1000
    ds = GPTDataset(tokens, 16, 8)  # windows straight from the memmap
    assert ds[3][0].tolist() == ids[24:40].tolist()


def test_token_file_writer_in_chunks_and_errors(tmp_path):
    path = tmp_path / "corpus.bin"
    with TokenFileWriter(path, vocab_size=300) as writer:
        writer.write([1, 2, 3])
        writer.write(np.array([299], dtype=np.int32))
        writer.write([])
    assert load_tokens(path).tolist() == [1, 2, 3, 299]
    with pytest.raises(FileExistsError, match="already exists"):
        write_tokens(path, [1], 300)
    with pytest.raises(ValueError, match="token id 300 is outside the vocabulary"):
        write_tokens(path, [1, 300], 300, overwrite=True)
    assert load_tokens(path).tolist() == [1, 2, 3, 299]  # the failed write left the old file intact
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="the file is damaged"):
        load_tokens(path)
    with pytest.raises(FileNotFoundError, match="header"):
        load_tokens(tmp_path / "missing.bin")


def test_random_batches_are_seeded_windows_and_resumable(tmp_path):
    ids = np.arange(500) * 3
    tokens = load_tokens(write_tokens(tmp_path / "t.bin", ids, vocab_size=2000))
    sampler = RandomBatchSampler(tokens, batch_size=6, block_size=10, seed=42)
    x, y = sampler.get_batch()
    assert x.shape == y.shape == (6, 10) and x.dtype == np.int64
    assert (np.diff(x, axis=1) == 3).all() and (y == x + 3).all()  # contiguous windows, targets shifted by one
    assert (x[:, 0] % 3 == 0).all() and x.min() >= 0 and y.max() <= ids[-1]
    again = RandomBatchSampler(tokens, batch_size=6, block_size=10, seed=42).get_batch()
    assert (again[0] == x).all()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler.get_batch()[0] for _ in range(3)]
    restored = RandomBatchSampler(tokens, batch_size=6, block_size=10, seed=0)
    restored.load_state_dict(state)
    assert all((restored.get_batch()[0] == e).all() for e in expected)
    x, y = get_batch(tokens, 20_000, 10, np.random.default_rng(0))  # every offset 0..489 is drawn, none beyond
    assert sorted(set((x[:, 0] // 3).tolist())) == list(range(490))
    with pytest.raises(ValueError, match="500 tokens, but block_size=500 needs at least 501"):
        RandomBatchSampler(tokens, 2, 500)


def test_chapter2_example_runs(shared_data, capsys):
    from pathlib import Path

    from test_examples import run_script

    script = Path(__file__).resolve().parents[1] / "examples" / "ch02_tokenize_and_load.py"
    assert run_script(script, "--data", shared_data, "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "tokens in the text: 5145" in out and "vocabulary size: 1130" in out
    assert "input embeddings: (8, 4, 256)" in out and "FAILED" not in out
    assert run_script(script, "--data", shared_data / "missing-folder") == 1
    assert "the-verdict.txt not found" in capsys.readouterr().err
