"""Text generation: greedy decoding and sampling (temperature, top-k, top-p), with a KV cache.

    ids = text_to_token_ids("Every effort moves you", tokenizer)        # (1, T)
    out = generate(model, ids, max_new_tokens=20, temperature=0.8, top_k=50, seed=123)
    print(token_ids_to_text(out, tokenizer))

The book's loop (chapter 5) feeds the whole sequence, cropped to the context, through the model at every
step and keeps the last position's logits. With ``use_cache=True`` (the default) the prompt goes through
once (prefill) and every later step feeds only the new token, reading the earlier positions' keys and
values from a KV cache: the same logits, the same tokens, far less work. Once the sequence outgrows the
context window, the book's loop slides the window, which moves every position, so the cache is refilled
from the last ``context_size`` tokens at each such step, exactly as the uncached loop computes them.

Sampling draws from its own ``numpy.random.Generator`` (``seed``), else from the library's generator
(``tinygrad_llm.manual_seed``), one uniform number per row per step on the CPU, so a seeded run draws the
same numbers on any device and with or without the cache. On a GPU the sampling itself runs there and only
the chosen ids come back (a few bytes per step, not the whole row of logits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.tensor import Tensor, no_grad

if TYPE_CHECKING:
    from tinygrad_llm.nn.module import Module

# ---- checks ------------------------------------------------------------------------------------------


def _check_sampling(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"generate: temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"generate: top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p!r}")


def _as_id_array(idx) -> tuple[np.ndarray, object]:
    """The prompt as a (B, T) int64 NumPy array, and a function giving an output its input's form."""
    if isinstance(idx, Tensor):
        device, dtype = idx.device, idx.dtype
        ids = idx.numpy()
        restore = lambda out: Tensor(out.astype(dtype), device=device)  # noqa: E731
    elif isinstance(idx, (list, tuple)):
        ids = np.asarray(idx)
        restore = lambda out: out.tolist()  # noqa: E731
    elif hasattr(idx, "dtype") and backend.device_of(idx) == "cuda":
        ids = backend.to_numpy(idx)
        restore = lambda out: backend.to_device(out.astype(idx.dtype), "cuda")  # noqa: E731
    else:
        ids = np.asarray(idx)
        restore = lambda out: out.astype(ids.dtype) if ids.dtype.kind in "iu" else out  # noqa: E731
    if ids.size and ids.dtype.kind not in "iu":
        raise TypeError(f"generate: token ids must be integers, got dtype {ids.dtype}")
    if ids.ndim == 1:
        inner = restore
        restore = lambda out: inner(out[0])  # noqa: E731
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"generate: token ids must have shape (batch, sequence) or (sequence,), got {ids.shape}")
    if ids.shape[1] == 0:
        raise ValueError("generate: the prompt is empty: give at least one token id")
    return ids.astype(np.int64), restore


def _window(model, prompt_length: int, context_size) -> int:
    """How many trailing tokens the model sees at each step (any model: a GPTModel's context length bounds it)."""
    config = getattr(model, "config", None)
    limit = config.context_length if config is not None else None
    if limit is None:  # a model without a context limit (e.g. a bigram table): the window is what is asked
        if context_size is None:
            return 1 << 62
        limit = context_size
    if context_size is None:
        if prompt_length > limit:
            raise ValueError(
                f"generate: the prompt has {prompt_length} tokens but the model's context length is "
                f"{limit}: shorten the prompt, or pass context_size={limit} to keep its last "
                f"{limit} tokens"
            )
        return limit
    if isinstance(context_size, bool) or not isinstance(context_size, (int, np.integer)) or context_size < 1:
        raise ValueError(f"generate: context_size must be a positive integer or None, got {context_size!r}")
    if context_size > limit:
        raise ValueError(f"generate: context_size {context_size} exceeds the model's context length {limit}")
    return int(context_size)


@contextlib.contextmanager
def _inference(model):
    """Evaluation mode and no gradient recording; every module's previous mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        for module, mode in modes:
            object.__setattr__(module, "training", mode)


# ---- one step ----------------------------------------------------------------------------------------


def sample_next_token(
    logits: backend.Array,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The next token of every row of ``logits`` (B, vocab) -> (B,) int64, as a NumPy array.

    temperature 0: the argmax (top_k/top_p change nothing). Otherwise softmax(logits / temperature),
    restricted to the ``top_k`` largest logits and to the smallest set of tokens whose probabilities add
    up to ``top_p`` (nucleus), renormalised, and sampled with one uniform number per row from ``rng``.

    ``logits`` may be on a GPU: the work happens there and only the (B,) chosen ids come back to the host,
    not the (B, vocab) logits. The uniform numbers always come from ``rng`` on the CPU, so a seeded run
    draws the same numbers on any device.
    """
    xp = backend.get_array_module(logits)
    logits = xp.asarray(logits, dtype=xp.float64)  # (B, V); float64 so the cumulative sums are exact enough
    if temperature == 0:
        return backend.to_numpy(logits.argmax(axis=-1)).astype(np.int64)  # (B, V) -> (B,)
    rng = rng if rng is not None else backend.get_generator("cpu")
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = xp.partition(logits, -top_k, axis=-1)[:, -top_k:].min(axis=-1, keepdims=True)  # (B, 1)
        logits = xp.where(logits < kth_largest, -xp.inf, logits)  # as the book: keep ties with the k-th
    probs = xp.exp(logits - logits.max(axis=-1, keepdims=True))  # (B, V), stable softmax numerator
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        stable = {"kind": "stable"} if xp is np else {}  # CuPy's sort is always stable
        order = xp.argsort(-probs, axis=-1, **stable)  # (B, V): most likely first
        sorted_probs = xp.take_along_axis(probs, order, axis=-1)
        before = xp.cumsum(sorted_probs, axis=-1) - sorted_probs  # probability mass ahead of each token
        keep_sorted = before < top_p  # the first token is always kept
        keep = xp.take_along_axis(keep_sorted, xp.argsort(order, axis=-1), axis=-1)  # back to vocabulary order
        probs = xp.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    cumulative = xp.cumsum(probs, axis=-1)  # (B, V)
    u = xp.asarray(rng.random(probs.shape[0]))[:, None] * cumulative[:, -1:]  # (B, 1), uniform in [0, total)
    chosen = (cumulative <= u).sum(axis=-1)  # first index whose cumulative mass exceeds u
    return backend.to_numpy(xp.minimum(chosen, probs.shape[-1] - 1)).astype(np.int64)


def _decode(
    model,
    ids: np.ndarray,
    max_new_tokens: int,
    window: int,
    temperature,
    top_k,
    top_p,
    eos_id,
    use_cache: bool,
    rng,
    attention_mask=None,
):
    """Yield the next tokens (B,) step by step; the caller appends them. Finished rows yield eos_id.

    attention_mask (B, T): 0 on the left padding of shorter prompts; it grows with a 1 per new token and is
    cropped with the window, so each row sees only its own tokens (GPTModel's attention_mask)."""
    batch = ids.shape[0]
    sequence, mask = ids, attention_mask
    cache = model.new_cache(window) if use_cache and hasattr(model, "new_cache") else None
    finished = np.zeros(batch, dtype=bool)

    def masked(length: int) -> dict:  # the mask of the last ``length`` positions, when there is padding
        return {} if mask is None else {"attention_mask": mask[:, -length:]}

    for _ in range(max_new_tokens):
        with _inference(model):
            if cache is None:
                tokens = sequence[:, -window:]
                logits = model(tokens, **masked(tokens.shape[1]))  # (B, <= window) -> (B, <= window, vocab)
            elif cache.length == 0 or cache.length >= window:
                cache.reset()  # first step, or the window slid: every position moved, refill the cache
                tokens = sequence[:, -window:]
                logits = model(tokens, cache=cache, **masked(tokens.shape[1]))
            else:
                logits = model(sequence[:, -1:], cache=cache, **masked(cache.length + 1))  # (B, 1) -> (B, 1, vocab)
            last = logits.data[:, -1, :]  # (B, vocab), left on the model's device: only (B,) ids come back
        next_ids = sample_next_token(last, temperature, top_k, top_p, rng)  # (B,)
        if eos_id is not None:
            next_ids = np.where(finished, eos_id, next_ids)  # finished rows are padded with eos
            finished |= next_ids == eos_id
        sequence = np.concatenate([sequence, next_ids[:, None]], axis=1)  # (B, L) -> (B, L + 1)
        if mask is not None:
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=mask.dtype)], axis=1)  # new tokens are real
        yield next_ids
        if eos_id is not None and finished.all():
            return


def _prepare(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, seed):
    _check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    ids, restore = _as_id_array(idx)
    config = getattr(model, "config", None)
    vocab = config.vocab_size if config is not None else 1 << 62  # other models check ids themselves
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        bad = int(ids.max()) if int(ids.max()) >= vocab else int(ids.min())
        raise IndexError(
            f"generate: prompt token id {bad} is outside the model's vocabulary [0, {vocab}): was "
            f"it encoded with the tokenizer the model was trained with?"
        )
    if eos_id is not None and not 0 <= eos_id < vocab:
        raise ValueError(f"generate: eos_id {eos_id} is outside the model's vocabulary [0, {vocab})")
    window = _window(model, ids.shape[1], context_size)
    rng = np.random.default_rng(seed) if seed is not None else backend.get_generator("cpu")
    return ids, restore, window, rng


# ---- the public functions ----------------------------------------------------------------------------


def pad_prompts(prompts: Iterable[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of different lengths (lists of ids) as one left-padded batch: (ids (B, T), attention_mask
    (B, T)), the mask 0 on the padding. ``generate(model, ids, n, attention_mask=mask)`` then gives each
    row the tokens it would get alone (greedy decoding)."""
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("pad_prompts: give at least one prompt, each of at least one token id")
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), length), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = prompt  # left padding: every prompt ends at the last column
        mask[row, length - len(prompt) :] = 1
    return ids, mask


def _check_attention_mask(attention_mask, ids: np.ndarray):
    if attention_mask is None:
        return None
    mask = np.asarray(backend.to_numpy(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask))
    mask = mask[None, :] if mask.ndim == 1 else mask
    if mask.shape != ids.shape:
        raise ValueError(f"generate: attention_mask has shape {mask.shape}, the prompt {ids.shape}")
    mask = (mask != 0).astype(np.int64)
    if np.any(np.diff(mask, axis=1) < 0):
        raise ValueError(
            "generate: attention_mask must pad on the left (zeros, then ones in each row), so that "
            "new tokens follow each prompt; pad_prompts() builds such a batch"
        )
    if not mask[:, -1].all():
        raise ValueError("generate: attention_mask has a row with no prompt token")
    return None if mask.all() else mask


def generate(
    model: Module,
    idx: Tensor | backend.Array | list,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    attention_mask: Tensor | backend.Array | list | None = None,
    keep_eos: bool = False,
) -> Tensor | backend.Array | list:
    """Continue token ids ``idx`` (B, T) by up to ``max_new_tokens`` tokens: (B, T + new).

    idx: a NumPy/CuPy integer array, a Tensor or a list, (B, T) or (T,); the result has the same form.
    context_size: how many trailing tokens the model sees (default and maximum: its context length); a
        prompt longer than the context is an error unless context_size is given, which keeps its tail.
    temperature: 0 picks the most likely token (greedy); larger values flatten the distribution.
    top_k / top_p: sample only among the k most likely tokens / the smallest set holding probability p.
    eos_id: generation stops when the model produces this token, which is not appended (the book's
        ``if idx_next == eos_id: break``). In a batch, a row that stops before the others is padded with
        eos_id until every row has stopped (the step where the last one stops is not appended).
    keep_eos: append the end token too (each stopped row then ends with eos_id, then padding).
    use_cache: decode with a KV cache (same tokens, faster). seed: seeds this call's sampling generator.
    attention_mask: (B, T), 0 on the left padding of a batch of prompts of different lengths (see
        ``pad_prompts``); each row is then decoded as it would be alone.

    The model runs in eval mode without recording gradients; its previous modes are restored.
    """
    ids, restore, window, rng = _prepare(
        model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, seed
    )
    mask = _check_attention_mask(attention_mask, ids)
    steps = list(_decode(model, ids, max_new_tokens, window, temperature, top_k, top_p, eos_id, use_cache, rng, mask))
    if eos_id is not None and not keep_eos and steps and (steps[-1] == eos_id).all():
        steps.pop()  # the step on which every row has stopped: the book does not append its end token
    if steps:
        ids = np.concatenate([ids, np.stack(steps, axis=1)], axis=1)  # (B, T) + (B, new) -> (B, T + new)
    return restore(ids)


def generate_text_simple(
    model: Module, idx: Tensor | backend.Array | list, max_new_tokens: int, context_size: int
) -> Tensor | backend.Array | list:
    """Chapter 4's greedy loop: append the most likely next token ``max_new_tokens`` times, the model seeing
    the last ``context_size`` tokens; (B, T) -> (B, T + max_new_tokens). The same tokens as the book's
    (``generate`` with temperature 0, without the KV cache, as the book recomputes every step)."""
    return generate(model, idx, max_new_tokens, context_size=context_size, temperature=0.0, use_cache=False)


def generate_stream(
    model: Module,
    idx: Tensor | backend.Array | list,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield the new token ids one at a time (ints) for one prompt (T,) or (1, T), to print text as it comes.

    Same arguments and the same tokens as ``generate``; it stops at ``eos_id`` without yielding it.
    """
    ids, _, window, rng = _prepare(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, seed)
    if ids.shape[0] != 1:
        raise ValueError(f"generate_stream: streams one prompt, got a batch of {ids.shape[0]}; use generate()")
    for next_ids in _decode(model, ids, max_new_tokens, window, temperature, top_k, top_p, eos_id, use_cache, rng):
        token = int(next_ids[0])
        if eos_id is not None and token == eos_id:
            return
        yield token


def text_to_token_ids(text: str, tokenizer: Any) -> np.ndarray:
    """Encode ``text`` into a (1, T) int64 array (a batch of one), as the book; <|endoftext|> is allowed."""
    try:
        encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    except TypeError:  # tokenizers without special tokens take only the text
        encoded = tokenizer.encode(text)
    ids = np.asarray(encoded, dtype=np.int64)
    if ids.size == 0:
        raise ValueError(f"text_to_token_ids: the text {text[:40]!r} encodes to no tokens")
    return ids[None, :]  # (T,) -> (1, T): add the batch dimension


def token_ids_to_text(token_ids: Tensor | backend.Array | Sequence[int], tokenizer: Any) -> str:
    """Decode ids (T,) or (1, T) (array, Tensor or list) back into text, as the book."""
    if isinstance(token_ids, Tensor):
        token_ids = token_ids.numpy()
    ids = backend.to_numpy(np.asarray(token_ids) if isinstance(token_ids, (list, tuple)) else token_ids)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"token_ids_to_text: decodes one sequence, got a batch of {ids.shape[0]}: pass one row")
        ids = ids[0]  # (1, T) -> (T,): remove the batch dimension
    if ids.ndim != 1:
        raise ValueError(f"token_ids_to_text: expected ids of shape (T,) or (1, T), got {ids.shape}")
    return tokenizer.decode(ids.tolist())
