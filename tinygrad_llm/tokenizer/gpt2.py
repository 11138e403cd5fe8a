"""GPT-2's byte-pair encoding through tiktoken, loaded from local files when there is no network.

``tiktoken.get_encoding("gpt2")`` downloads ``vocab.bpe`` and ``encoder.json`` on first use. Offline, we build
the very same ``tiktoken.Encoding`` from a local copy of those two files: the folder passed as ``path``, else
``$TINYGRAD_LLM_DATA/gpt2``. Both files are checked against the sha256 tiktoken itself checks. Only when no
local copy exists do we ask tiktoken (its download, or its cache in $TIKTOKEN_CACHE_DIR).

How ``vocab.bpe`` + ``encoder.json`` become tiktoken's ``mergeable_ranks`` {token bytes: id}:
GPT-2 stores tokens as printable strings, every byte mapped to one printable character (the printable,
non-space Latin-1 bytes stand for themselves; the other 68 bytes become chr(256), chr(257), ... in byte
order). The 256 single bytes take ranks 0..255 in that order (printable ones first), and merge number k of
``vocab.bpe`` (after its "#version" line) makes token 256 + k. ``encoder.json`` holds the same table as
{string: id}; we check the two agree, as tiktoken does.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tinygrad_llm.files import DATA_ENV, data_dir
from tinygrad_llm.tokenizer.base import DEFAULT_ALLOWED, ENDOFTEXT, Tokenizer, as_id_list, check_text

if TYPE_CHECKING:
    from collections.abc import Iterable

    import tiktoken

    from tinygrad_llm.backend import Array
    from tinygrad_llm.tensor import Tensor

VOCAB_BPE = "vocab.bpe"
ENCODER_JSON = "encoder.json"
SHA256 = {
    VOCAB_BPE: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ENCODER_JSON: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
# tiktoken's r50k/gpt2 pattern: the original GPT-2 regex
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# written with possessive quantifiers, which match the same pieces faster.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_N_VOCAB = 50257
GPT2_EOT = 50256


class GPT2FilesNotFound(FileNotFoundError):
    """Neither a local copy of GPT-2's vocabulary nor tiktoken's download/cache could be used."""


def byte_to_char_table() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character (``bytes_to_unicode`` in OpenAI's encoder.py)."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def ranks_from_gpt2_files(vocab_bpe: bytes, encoder_json: bytes) -> dict[bytes, int]:
    """tiktoken's ``mergeable_ranks`` for GPT-2 from the contents of vocab.bpe and encoder.json."""
    table = byte_to_char_table()
    char_to_byte = {c: b for b, c in table.items()}

    def to_bytes(token: str) -> bytes:
        return bytes(char_to_byte[c] for c in token)

    # the single bytes first, ordered by their character: printable bytes, then the remapped ones
    ranks = {bytes([b]): rank for rank, b in enumerate(sorted(range(256), key=lambda b: ord(table[b])))}
    lines = vocab_bpe.decode("utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{VOCAB_BPE}: expected a '#version' first line, got {lines[0][:40]!r}")
    for rank, line in enumerate((line for line in lines[1:] if line), start=256):
        first, second = line.split()
        ranks[to_bytes(first) + to_bytes(second)] = rank
    encoder = {to_bytes(k): v for k, v in json.loads(encoder_json).items()}
    encoder.pop(ENDOFTEXT.encode(), None)
    if encoder != ranks:
        raise ValueError(f"{ENCODER_JSON} does not agree with the merges of {VOCAB_BPE}")
    return ranks


def find_gpt2_folder(path: str | Path | None = None) -> Path | None:
    """The folder holding vocab.bpe + encoder.json: ``path`` (the folder itself, or a data folder with gpt2/ in
    it), else $TINYGRAD_LLM_DATA/gpt2; None when not found (``path`` given but lacking the files raises)."""

    def has_files(folder: Path) -> bool:
        return (folder / VOCAB_BPE).is_file() and (folder / ENCODER_JSON).is_file()

    if path is not None:
        folder = Path(path).expanduser()
        for candidate in (folder, folder / "gpt2"):
            if has_files(candidate):
                return candidate
        raise GPT2FilesNotFound(
            f"GPT-2 tokenizer: {folder} holds neither {VOCAB_BPE} + {ENCODER_JSON} nor "
            f"gpt2/{VOCAB_BPE} + gpt2/{ENCODER_JSON}"
        )
    root = data_dir()
    if root is not None and has_files(root / "gpt2"):
        return root / "gpt2"
    return None


# where tiktoken downloads GPT-2's files from (tiktoken_ext.openai_public), and keeps them in its cache
GPT2_URLS = {
    VOCAB_BPE: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    ENCODER_JSON: "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def gpt2_files(path: str | Path | None = None) -> dict[str, bytes]:
    """The contents of vocab.bpe and encoder.json: from the local copy (see ``find_gpt2_folder``), else from
    tiktoken's cache (downloaded by tiktoken when not there yet); each checked against its sha256."""
    folder = find_gpt2_folder(path)
    contents = {}
    for filename in (VOCAB_BPE, ENCODER_JSON):
        if folder is not None:
            data = (folder / filename).read_bytes()
        else:
            import tiktoken.load

            data = tiktoken.load.read_file_cached(GPT2_URLS[filename], SHA256[filename])
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[filename]:
            where = folder / filename if folder is not None else GPT2_URLS[filename]
            raise ValueError(
                f"GPT-2 tokenizer: {where} has sha256 {digest}, expected {SHA256[filename]} (OpenAI's file, as "
                "tiktoken checks it); replace the file"
            )
        contents[filename] = data
    return contents


@functools.lru_cache(maxsize=1)
def _encoding_from_files(vocab_bpe: bytes, encoder_json: bytes):
    """Built once: every accepted copy of the two files is OpenAI's, byte for byte (their sha256 was checked)."""
    import tiktoken

    return tiktoken.Encoding(
        "gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks_from_gpt2_files(vocab_bpe, encoder_json),
        special_tokens={ENDOFTEXT: GPT2_EOT},
        explicit_n_vocab=GPT2_N_VOCAB,
    )


def load_gpt2_encoding(path: str | Path | None = None) -> tiktoken.Encoding:
    """The ``tiktoken.Encoding`` of GPT-2: from local files if found (see ``find_gpt2_folder``), else tiktoken's."""
    folder = find_gpt2_folder(path)
    if folder is not None:
        contents = gpt2_files(folder)  # read and checked on every load: a damaged copy is never used
        return _encoding_from_files(contents[VOCAB_BPE], contents[ENCODER_JSON])
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as exc:  # requests' ConnectionError, a hash mismatch, a read-only cache, ...
        raise GPT2FilesNotFound(
            f"GPT-2 tokenizer: no local copy of {VOCAB_BPE} + {ENCODER_JSON} and tiktoken could not download them "
            f"({type(exc).__name__}: {str(exc)[:200]}). Offline: put {VOCAB_BPE} and {ENCODER_JSON} beside the "
            f"folder's tokenizer.json, or set {DATA_ENV} to a folder holding gpt2/{VOCAB_BPE} and "
            f"gpt2/{ENCODER_JSON} (like ../shared/data); or go online once so that tiktoken downloads and caches them"
        ) from exc


class TiktokenTokenizer(Tokenizer):
    """A tokenizer backed by a ``tiktoken.Encoding``: tiktoken's speed and special-token rules."""

    def __init__(self, encoding, name: str):
        self.encoding = encoding
        self.name = name
        self.special_tokens = dict(encoding._special_tokens)

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode(
        self,
        text: str,
        *,
        allowed_special: str | Iterable[str] = DEFAULT_ALLOWED,
        disallowed_special: str | Iterable[str] = "all",
    ) -> list[int]:
        check_text(text, type(self).__name__)
        if allowed_special != "all":
            allowed_special = set(allowed_special) & set(self.special_tokens)
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)

    def decode(self, ids: Iterable[int] | Array | Tensor) -> str:
        ids = as_id_list(ids, self.n_vocab, type(self).__name__)
        return self.encoding.decode(ids, errors="replace")


class GPT2Tokenizer(TiktokenTokenizer):
    """GPT-2's BPE (50,257 ids, ``<|endoftext|>`` = 50256). ``path``: a folder with vocab.bpe + encoder.json."""

    def __init__(self, path=None):
        super().__init__(load_gpt2_encoding(path), name="gpt2")
        self.path = path

    def to_dict(self) -> dict:
        return {"type": "gpt2"}  # OpenAI's vocabulary: its two files are saved beside, checked by sha256 on load

    def files(self) -> dict[str, bytes]:
        """vocab.bpe and encoder.json, so that a saved folder loads offline."""
        return gpt2_files(self.path)
