"""Generation: greedy/sampling behaviour, the KV cache giving the very same tokens, eos, errors, helpers."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_llm as tl
from tinygrad_llm.generate import generate, generate_stream, sample_next_token, text_to_token_ids, token_ids_to_text
from tinygrad_llm.model import GPTConfig, GPTModel

CTX = 24


@pytest.fixture(scope="module")
def model():
    tl.manual_seed(0)
    m = GPTModel(GPTConfig(vocab_size=64, context_length=CTX, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1))
    m.eval()
    return m


def reference_greedy(model, ids, max_new_tokens, context_size):
    """The book's generate_text_simple, written out: the whole cropped sequence at every step."""
    for _ in range(max_new_tokens):
        with tl.no_grad():
            logits = model(ids[:, -context_size:]).data[:, -1, :]
        ids = np.concatenate([ids, logits.argmax(-1)[:, None]], axis=1)
    return ids


SAMPLINGS = [
    dict(),  # greedy
    dict(temperature=1.0, seed=1),
    dict(temperature=0.7, top_k=5, seed=2),
    dict(temperature=1.5, top_p=0.6, seed=3),
    dict(temperature=1.2, top_k=20, top_p=0.9, seed=4),
]


@pytest.mark.parametrize("kwargs", SAMPLINGS)
@pytest.mark.parametrize("prompt_length,batch", [(1, 1), (5, 3), (CTX - 1, 2)])
def test_cache_gives_identical_tokens(model, kwargs, prompt_length, batch):
    ids = np.random.default_rng(prompt_length).integers(0, 64, size=(batch, prompt_length))
    new = 2 * CTX  # runs past the context: the window slides and the cache is refilled
    cached = generate(model, ids, new, use_cache=True, **kwargs)
    uncached = generate(model, ids, new, use_cache=False, **kwargs)
    assert cached.shape == (batch, prompt_length + new)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[:, :prompt_length], ids)


def test_greedy_is_the_books_loop(model):
    ids = np.random.default_rng(0).integers(0, 64, size=(2, 4))
    np.testing.assert_array_equal(generate(model, ids, 30), reference_greedy(model, ids, 30, CTX))
    np.testing.assert_array_equal(generate(model, ids, 12, context_size=6), reference_greedy(model, ids, 12, 6))
    np.testing.assert_array_equal(
        generate(model, ids, 12, context_size=6, use_cache=False), reference_greedy(model, ids, 12, 6)
    )


def test_seeded_sampling_is_reproducible_and_varies(model):
    ids = np.zeros((1, 3), dtype=np.int64)
    a = generate(model, ids, 20, temperature=1.0, seed=7)
    np.testing.assert_array_equal(a, generate(model, ids, 20, temperature=1.0, seed=7))
    assert not np.array_equal(a, generate(model, ids, 20, temperature=1.0, seed=8))
    tl.manual_seed(5)  # without seed: the library's generator
    b = generate(model, ids, 20, temperature=1.0)
    tl.manual_seed(5)
    np.testing.assert_array_equal(b, generate(model, ids, 20, temperature=1.0))


def test_batch_rows_equal_single_generation(model):
    ids = np.random.default_rng(3).integers(0, 64, size=(3, 6))
    batch = generate(model, ids, 10)
    for row in range(3):
        np.testing.assert_array_equal(batch[row : row + 1], generate(model, ids[row : row + 1], 10))


def test_sample_next_token_filters():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert sample_next_token(logits)[0] == 0
    draws = np.array([sample_next_token(logits, 1.0, top_k=2, rng=rng)[0] for _ in range(2000)])
    assert set(draws) == {0, 1} and abs((draws == 0).mean() - 0.5 / 0.8) < 0.04
    draws = np.array([sample_next_token(logits, 1.0, top_p=0.7, rng=rng)[0] for _ in range(2000)])
    assert set(draws) == {0, 1}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: the nucleus is {0, 1}
    draws = np.array([sample_next_token(logits, 1.0, top_p=0.4, rng=rng)[0] for _ in range(200)])
    assert set(draws) == {0}  # the most likely token is always kept
    draws = np.array([sample_next_token(logits, 1.0, rng=rng)[0] for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 4000, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    hot = np.array([sample_next_token(logits, 100.0, rng=rng)[0] for _ in range(2000)])
    assert abs((hot == 3).mean() - 0.25) < 0.04  # a high temperature flattens towards uniform
    assert sample_next_token(logits, 1e-3, rng=rng)[0] == 0  # a low one towards greedy


def test_eos_stops_rows_and_pads(model):
    ids = np.random.default_rng(1).integers(0, 64, size=(3, 4))
    free = generate(model, ids, 15, temperature=2.0, seed=11)
    eos = int(free[0, 4 + 2])  # the token row 0 samples at step 3
    out = generate(model, ids, 15, temperature=2.0, seed=11, eos_id=eos, keep_eos=True)
    for row in range(3):
        generated = free[row, 4:]
        hits = np.flatnonzero(generated == eos)
        if hits.size:  # stops at its first eos, kept; padded with eos after
            stop = hits[0]
            np.testing.assert_array_equal(out[row, 4 : 4 + stop + 1], generated[: stop + 1])
            assert (out[row, 4 + stop :] == eos).all()
        else:
            np.testing.assert_array_equal(out[row, 4:], generated[: out.shape[1] - 4])
    finished_all = all((free[r, 4 : 4 + out.shape[1] - 4] == eos).any() for r in range(3))
    assert out.shape[1] == 4 + 15 or finished_all  # stops early only when every row finished
    book = generate(model, ids, 15, temperature=2.0, seed=11, eos_id=eos)  # the last stop is not appended
    if finished_all:
        np.testing.assert_array_equal(book, out[:, :-1])
    else:
        np.testing.assert_array_equal(book, out)
    single_free = generate(model, ids[:1], 15, temperature=2.0, seed=11)[0, 4:]  # one row: its own draws
    eos = int(single_free[2])
    stop = int(np.flatnonzero(single_free == eos)[0])
    single = generate(model, ids[:1], 15, temperature=2.0, seed=11, eos_id=eos, keep_eos=True)
    assert single.shape == (1, 4 + stop + 1) and single[0, -1] == eos  # batch of one: stops right after eos
    # the book's generate: `if idx_next == eos_id: break` before appending it
    book = generate(model, ids[:1], 15, temperature=2.0, seed=11, eos_id=eos)
    np.testing.assert_array_equal(book, single[:, :-1])
    assert eos not in book[0, 4:].tolist()


def test_generate_text_simple_is_the_books_greedy_loop(model):
    from tinygrad_llm import generate_text_simple
    from tinygrad_llm.tensor import no_grad

    ids = np.random.default_rng(4).integers(0, 64, size=(2, 3))
    expected = ids.copy()
    model.eval()
    with no_grad():
        for _ in range(6):  # chapter 4, written out: crop, last position's logits, argmax, append
            logits = model(expected[:, -5:]).numpy()[:, -1, :]
            expected = np.concatenate([expected, logits.argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generate_text_simple(model, ids, max_new_tokens=6, context_size=5), expected)


def test_stream_yields_the_same_tokens(model):
    ids = np.random.default_rng(2).integers(0, 64, size=(1, 5))
    out = generate(model, ids, 12, temperature=0.9, seed=3)
    streamed = list(generate_stream(model, ids[0], 12, temperature=0.9, seed=3))
    assert streamed == out[0, 5:].tolist() and all(isinstance(t, int) for t in streamed)
    eos = streamed[4]
    first = streamed.index(eos)
    assert list(generate_stream(model, ids, 12, temperature=0.9, seed=3, eos_id=eos)) == streamed[:first]
    with pytest.raises(ValueError, match="batch of 2"):
        next(generate_stream(model, np.zeros((2, 3), np.int64), 4))


def test_containers_and_modes_are_kept(model):
    ids = np.array([[1, 2, 3]], dtype=np.int32)
    out = generate(model, ids, 4)
    assert isinstance(out, np.ndarray) and out.dtype == np.int32 and out.shape == (1, 7)
    t = generate(model, tl.Tensor(ids), 4)
    assert isinstance(t, tl.Tensor) and t.shape == (1, 7)
    np.testing.assert_array_equal(t.numpy(), out)
    assert generate(model, [1, 2, 3], 4) == out[0].tolist()
    assert generate(model, np.array([1, 2, 3]), 4).shape == (7,)
    np.testing.assert_array_equal(generate(model, ids, 0), ids)
    model.train()
    try:
        generate(model, ids, 3)
        assert model.training and all(m.training for m in model.modules())  # restored
        assert tl.is_grad_enabled()
        gen = generate_stream(model, ids, 3)
        next(gen)
        assert model.training and tl.is_grad_enabled()  # nothing leaks between streamed tokens
        # under train() dropout is active, yet generation is deterministic: it runs in eval mode
        np.testing.assert_array_equal(generate(model, ids, 6), generate(model, ids, 6))
    finally:
        model.eval()


def test_bad_input_errors(model):
    ids = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"prompt has {CTX + 1} tokens.*context length is {CTX}"):
        generate(model, np.zeros((1, CTX + 1), np.int64), 2)
    long = np.random.default_rng(0).integers(0, 64, size=(1, CTX + 5))
    np.testing.assert_array_equal(generate(model, long, 3, context_size=CTX)[:, : CTX + 5], long)  # crop: fine
    with pytest.raises(ValueError, match="exceeds the model's context length"):
        generate(model, ids, 2, context_size=CTX + 1)
    for top_p in (0, 0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            generate(model, ids, 2, temperature=1.0, top_p=top_p)
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        generate(model, ids, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
        generate(model, ids, 2, temperature=1.0, top_k=0)
    with pytest.raises(IndexError, match=r"token id 64 is outside the model's vocabulary \[0, 64\)"):
        generate(model, np.array([[1, 64]]), 2)
    with pytest.raises(ValueError, match="eos_id 99"):
        generate(model, ids, 2, eos_id=99)
    with pytest.raises(ValueError, match="empty"):
        generate(model, np.zeros((1, 0), np.int64), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, ids, -1)
    with pytest.raises(TypeError, match="integers"):
        generate(model, np.array([[1.0, 2.0]]), 2)


class ByteTokenizer:  # a stand-in: the core tests do not depend on the tokenizer package
    n_vocab = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_text_helpers_round_trip():
    tok = ByteTokenizer()
    ids = text_to_token_ids("Hello, I am", tok)
    assert ids.shape == (1, 11) and ids.dtype == np.int64
    assert token_ids_to_text(ids, tok) == "Hello, I am"
    assert token_ids_to_text(tl.Tensor(ids), tok) == "Hello, I am"
    assert token_ids_to_text(ids[0].tolist(), tok) == "Hello, I am"
    with pytest.raises(ValueError, match="no tokens"):
        text_to_token_ids("", tok)
    with pytest.raises(ValueError, match="batch of 2"):
        token_ids_to_text(np.zeros((2, 3), np.int64), tok)


def test_any_model_that_maps_ids_to_logits_can_generate():
    """The book's generate works with any model (a bigram table has no config, context or cache)."""
    from tinygrad_llm import nn

    class Bigram(nn.Module):
        def __init__(self):
            super().__init__()
            table = np.full((5, 5), -10.0, dtype=np.float32)
            for token in range(5):
                table[token, (token + 1) % 5] = 10.0  # next token: always token + 1
            self.table = nn.Embedding(5, 5)
            self.table.weight.data[...] = table

        def forward(self, idx):
            return self.table(idx)  # (B, T) -> (B, T, 5)

    out = generate(Bigram(), np.array([[3]]), max_new_tokens=6)
    assert out.tolist() == [[3, 4, 0, 1, 2, 3, 4]]
    assert generate(Bigram(), np.array([[0, 1]]), max_new_tokens=2, context_size=1).tolist() == [[0, 1, 2, 3]]


@pytest.fixture(scope="module")
def letters_checkpoint(tmp_path_factory):
    """A run folder of an untrained 1-layer GPT over the 26 letters: its next-token distribution is close to
    uniform, so sampling at temperature 1 wanders over the whole vocabulary unless --top-k/--top-p stop it."""
    folder = tmp_path_factory.mktemp("letters")
    tokenizer = tl.get_tokenizer("char", text="abcdefghijklmnopqrstuvwxyz")
    tl.manual_seed(7)
    config = GPTConfig.preset("tiny", vocab_size=tokenizer.n_vocab, context_length=32, n_layers=1, emb_dim=16)
    GPTModel(config).save_pretrained(folder)
    tokenizer.save(folder)
    return folder


def _generated(folder, capsys, *flags) -> list[int]:
    """The ids ``tinygrad-llm generate`` prints after the prompt "ab" (one character per token)."""
    from tinygrad_llm.cli import main
    from tinygrad_llm.tokenizer import load_tokenizer

    argv = ["generate", "--checkpoint", str(folder), "--prompt", "ab", "--max-new-tokens", "16", *flags]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("ab") and out.endswith("\n")
    return load_tokenizer(folder).encode(out[2:-1])


def test_cli_top_k_and_top_p_keep_to_the_likeliest_tokens(letters_checkpoint, capsys):
    greedy = _generated(letters_checkpoint, capsys, "--temperature", "0")
    free = _generated(letters_checkpoint, capsys, "--temperature", "1", "--seed", "5")
    assert free != greedy  # sampling over nearly uniform probabilities: not the argmax every time
    # --top-k 1 and a nucleus smaller than any token's probability leave only the argmax to sample
    assert _generated(letters_checkpoint, capsys, "--temperature", "1", "--seed", "5", "--top-k", "1") == greedy
    assert _generated(letters_checkpoint, capsys, "--temperature", "1", "--seed", "5", "--top-p", "0.01") == greedy
    # --top-k 3: every token among the 3 likeliest after its prefix, where the free sample strays
    from tinygrad_llm.cli.common import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(letters_checkpoint, None)
    model.eval()
    prompt = tokenizer.encode("ab")

    def ranks(new_ids):
        ids = np.asarray([prompt + new_ids])
        with tl.no_grad():
            logits = model(ids[:, :-1]).data[0, len(prompt) - 1 :]  # (16, vocab): each new token's logits
        return [int((row > row[token]).sum()) for row, token in zip(logits, new_ids)]  # 0: the likeliest

    top3 = _generated(letters_checkpoint, capsys, "--temperature", "1", "--seed", "5", "--top-k", "3")
    assert max(ranks(top3)) <= 2 and max(ranks(free)) > 2
    assert ranks(greedy) == [0] * 16
