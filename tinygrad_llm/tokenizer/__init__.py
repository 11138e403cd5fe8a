"""Tokenizers: text <-> token ids, all with one interface (see ``base.Tokenizer``).

get_tokenizer("gpt2")                      # GPT-2's BPE via tiktoken (local files or tiktoken's download)
get_tokenizer("char", text=text)           # one id per distinct character of text
get_tokenizer("byte")                      # UTF-8 bytes + <|endoftext|>
get_tokenizer("bpe", text=text, vocab_size=1000)   # train a byte-level BPE (or path= a saved one)
get_tokenizer("simple", text=text)         # chapter 2's SimpleTokenizerV2 (version=1 for V1)
BPETokenizerSimple().train(text, 1000)     # the chapter-2 bonus BPE, as the book writes it

tok.save(run_dir); load_tokenizer(run_dir) # tokenizer.json, restored to an equal tokenizer
"""

from __future__ import annotations

import json
from pathlib import Path

from tinygrad_llm.tokenizer.base import ENDOFTEXT, TOKENIZER_FILE, Tokenizer
from tinygrad_llm.tokenizer.bpe import BPETokenizer
from tinygrad_llm.tokenizer.bpe_simple import BPETokenizerSimple
from tinygrad_llm.tokenizer.bpe_trainer import train_bpe
from tinygrad_llm.tokenizer.char import ByteTokenizer, CharTokenizer
from tinygrad_llm.tokenizer.gpt2 import VOCAB_BPE, GPT2FilesNotFound, GPT2Tokenizer, load_gpt2_encoding
from tinygrad_llm.tokenizer.simple import UNK, SimpleTokenizerV1, SimpleTokenizerV2, UnknownWordError, build_vocab
from tinygrad_llm.tokenizer.special import BERT_SPECIAL_TOKENS, WithSpecialTokens, with_bert_tokens

TOKENIZER_NAMES = ("gpt2", "char", "byte", "bpe", "simple")


def get_tokenizer(name: str = "gpt2", **kwargs) -> Tokenizer:
    """A tokenizer by name: "gpt2" (path=None), "char" (text=), "byte", "bpe" (text= and vocab_size=, or
    path= a saved tokenizer.json or its folder; special_tokens=, pattern=), "simple" (text= or vocab=,
    version=2)."""

    def need(*keys: str) -> None:
        missing = [k for k in keys if kwargs.get(k) is None]
        if missing:
            raise ValueError(f"get_tokenizer({name!r}) needs {' and '.join(k + '=' for k in missing)}")

    def check_extra(*allowed: str) -> None:
        extra = set(kwargs) - set(allowed)
        if extra:
            raise TypeError(f"get_tokenizer({name!r}): unexpected argument(s) {sorted(extra)}; accepts {list(allowed)}")

    if name == "gpt2":
        check_extra("path")
        return GPT2Tokenizer(kwargs.get("path"))
    if name == "char":
        check_extra("text")
        need("text")
        return CharTokenizer.from_text(kwargs["text"])
    if name == "byte":
        check_extra()
        return ByteTokenizer()
    if name == "bpe":
        check_extra("text", "vocab_size", "path", "special_tokens", "pattern", "verbose")
        if kwargs.get("path") is not None:
            tokenizer = load_tokenizer(kwargs["path"])
            if not isinstance(tokenizer, BPETokenizer):
                raise ValueError(f"get_tokenizer('bpe'): {kwargs['path']} holds a {tokenizer.name!r} tokenizer")
            return tokenizer
        need("text", "vocab_size")
        options = {k: kwargs[k] for k in ("special_tokens", "pattern", "verbose") if k in kwargs}
        return train_bpe(kwargs["text"], kwargs["vocab_size"], **options)
    if name == "simple":
        check_extra("text", "vocab", "version")
        version = kwargs.get("version", 2)
        if version not in (1, 2):
            raise ValueError(f"get_tokenizer('simple'): version must be 1 or 2, got {version!r}")
        vocab = kwargs.get("vocab")
        if vocab is None:
            need("text")
            vocab = build_vocab(kwargs["text"], special_tokens=() if version == 1 else (ENDOFTEXT, UNK))
        return (SimpleTokenizerV1 if version == 1 else SimpleTokenizerV2)(vocab)
    raise ValueError(f"unknown tokenizer {name!r}: expected one of {TOKENIZER_NAMES}")


def tokenizer_from_dict(config: dict, gpt2_path: str | Path | None = None) -> Tokenizer:
    """Rebuild a tokenizer from ``Tokenizer.to_dict()`` data."""
    kind = config.get("type") if isinstance(config, dict) else None
    if kind == "gpt2":
        return GPT2Tokenizer(gpt2_path)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(config["chars"])
    if kind == "special":  # a base tokenizer plus added special tokens ([CLS], [SEP], [MASK], [PAD] for BERT)
        return WithSpecialTokens(tokenizer_from_dict(config["base"], gpt2_path), config["tokens"])
    if kind == "bpe":
        return BPETokenizer(
            config["merges"], config["special_tokens"], pattern=config["pattern"], name=config.get("name", "bpe")
        )
    if kind == "simple":
        cls = {1: SimpleTokenizerV1, 2: SimpleTokenizerV2}.get(config.get("version"))
        if cls is None:
            raise ValueError(f"simple tokenizer: version must be 1 or 2, got {config.get('version')!r}")
        return cls(config["vocab"])
    raise ValueError(f"unknown tokenizer type {kind!r}: expected one of {TOKENIZER_NAMES}")


def load_tokenizer(path: str | Path, gpt2_path: str | Path | None = None) -> Tokenizer:
    """Restore a tokenizer saved with ``tok.save(folder)``: ``path`` is the folder or its tokenizer.json."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"load_tokenizer: {file} does not exist (save one with tokenizer.save(folder))")
    if gpt2_path is None and (file.parent / VOCAB_BPE).is_file():  # a saved folder carries GPT-2's files
        gpt2_path = file.parent
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
        return tokenizer_from_dict(config, gpt2_path)
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:  # (JSONDecodeError is a ValueError)
        raise ValueError(f"{file}: not a valid tokenizer file ({type(exc).__name__}: {exc})") from None


__all__ = [
    "BERT_SPECIAL_TOKENS",
    "WithSpecialTokens",
    "with_bert_tokens",
    "BPETokenizer",
    "BPETokenizerSimple",
    "ByteTokenizer",
    "CharTokenizer",
    "ENDOFTEXT",
    "GPT2FilesNotFound",
    "GPT2Tokenizer",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "TOKENIZER_NAMES",
    "Tokenizer",
    "UNK",
    "UnknownWordError",
    "build_vocab",
    "get_tokenizer",
    "load_gpt2_encoding",
    "load_tokenizer",
    "tokenizer_from_dict",
    "train_bpe",
]
