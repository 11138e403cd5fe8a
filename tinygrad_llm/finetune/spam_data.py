"""Chapter 6's data: the SMS Spam Collection, balanced, split 70/10/20, padded into fixed-length batches.

    path = download_and_unzip_spam_data()               # or a local file / TINYGRAD_LLM_DATA
    texts, labels = read_sms_spam(path)                 # labels: 0 = ham, 1 = spam
    texts, labels = create_balanced_dataset(texts, labels, seed=123)
    splits = random_split(texts, labels, 0.7, 0.1, seed=123)   # {"train": (texts, labels), "validation", "test"}
    train_set = SpamDataset(*splits["train"], tokenizer)       # pads to the longest training message
    val_set = SpamDataset(*splits["validation"], tokenizer, max_length=train_set.max_length)

The book does this with pandas DataFrames and CSV files; here they are lists, with the same steps (its
seeds give different permutations here: numpy's generator, not pandas').
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm.files import (
    DATA_ENV,
    ArchiveError,
    cache_dir,
    download,
    extract_member,
    find_data_file,
    sha256_of,
)

if TYPE_CHECKING:
    from tinygrad_llm.backend import Array
    from tinygrad_llm.tokenizer.base import Tokenizer

SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SPAM_FILE = "SMSSpamCollection"
SPAM_DATA_SUBDIR = "sms_spam_collection"
# No published sha256 of the UCI zip could be verified (the archive is re-packed by UCI from time to time),
# so the download is checked through the file inside it: the sha256 of SMSSpamCollection as distributed
# (477,907 bytes, 5,574 lines), computed from ../shared/data/sms_spam_collection/SMSSpamCollection.
SPAM_FILE_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SPAM_FILE_SIZE = 477_907
SPAM_MAX_BYTES = 16 << 20  # the cap on the extracted member: 30 times the real file, far below a zip bomb
LABELS = {"ham": 0, "spam": 1}
CLASS_NAMES = ("ham", "spam")


def find_spam_file(path: str | os.PathLike | None = None) -> Path:
    """The SMSSpamCollection file: ``path`` (the file or a folder holding it), else
    ``$TINYGRAD_LLM_DATA/sms_spam_collection/SMSSpamCollection``, else the download cache, else a download."""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            path = path / SPAM_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (expected the SMS Spam Collection, label<TAB>text lines)")
        return path
    local = find_data_file(f"{SPAM_DATA_SUBDIR}/{SPAM_FILE}")
    return local if local is not None else download_and_unzip_spam_data()


def download_and_unzip_spam_data(url: str = SPAM_URL, folder: str | os.PathLike | None = None) -> Path:
    """Download the UCI zip (once), extract SMSSpamCollection alone from it (size-capped, no links) and
    check it. Returns the path of SMSSpamCollection.

    A corrupt archive is named with its sha256 and deleted (the next call downloads it again instead of
    failing on the same file forever); an extracted file whose sha256 differs from the known one is removed
    and raises, so a changed or corrupt download is never used silently.
    """
    folder = Path(folder) if folder is not None else cache_dir() / SPAM_DATA_SUBDIR
    data_file = folder / SPAM_FILE
    if data_file.is_file() and sha256_of(data_file) == SPAM_FILE_SHA256:
        return data_file
    archive = download(
        url,
        folder / "sms_spam_collection.zip",
        desc="SMS Spam Collection",
        offline=f"pass --data with the SMSSpamCollection file (or its folder), set {DATA_ENV} to a folder holding "
        f"{SPAM_DATA_SUBDIR}/{SPAM_FILE}",
    )
    try:
        extract_member(archive, SPAM_FILE, data_file, max_bytes=SPAM_MAX_BYTES)
    except ArchiveError as exc:
        digest = sha256_of(archive)
        for path in (archive, archive.with_name(archive.name + ".sha256")):
            path.unlink(missing_ok=True)
        raise ArchiveError(
            f"{exc} (sha256 {digest}); the archive was deleted: run again to download it afresh"
        ) from None
    got = sha256_of(data_file)
    if got != SPAM_FILE_SHA256:
        data_file.unlink()
        raise ValueError(
            f"{data_file}: sha256 {got} differs from the SMS Spam Collection's {SPAM_FILE_SHA256}; "
            "the extracted file was removed"
        )
    return data_file


def read_sms_spam(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """(texts, labels) from a ``label<TAB>text`` file; labels are 0 (ham) and 1 (spam).

    A line without a tab, or with a label other than ham/spam, raises ValueError naming the file and line.
    """
    path = Path(path)
    texts, labels = [], []
    with open(path, encoding="utf-8-sig") as f:  # (-sig: a byte-order mark some editors write is skipped)
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue  # a blank line (a trailing newline) carries no message
            label, tab, text = line.partition("\t")
            if not tab:
                raise ValueError(f"{path}, line {number}: expected 'label<TAB>text', found no tab: {line[:60]!r}")
            if label not in LABELS:
                raise ValueError(f"{path}, line {number}: label {label[:30]!r} is not 'ham' or 'spam'")
            texts.append(text)
            labels.append(LABELS[label])
    if not texts:
        raise ValueError(f"{path}: no messages in the file")
    return texts, labels


def create_balanced_dataset(
    texts: Sequence[str], labels: Sequence[int], seed: int = 123
) -> tuple[list[str], list[int]]:
    """As many ham messages as there are spam ones (a seeded random choice), hams first, as the book."""
    labels = np.asarray(labels)
    spam = np.flatnonzero(labels == 1)
    ham = np.flatnonzero(labels == 0)
    if len(spam) == 0 or len(ham) < len(spam):
        raise ValueError(
            f"create_balanced_dataset: needs at least as many ham as spam messages and one spam, "
            f"got {len(ham)} ham and {len(spam)} spam"
        )
    ham_subset = np.random.default_rng(seed).choice(ham, size=len(spam), replace=False)
    keep = np.concatenate([ham_subset, spam])
    return [texts[i] for i in keep], [int(labels[i]) for i in keep]


def random_split(
    texts: Sequence[str], labels: Sequence[int], train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123
) -> dict:
    """Shuffle (seeded), then the first ``train_frac`` for training, the next ``validation_frac`` for
    validation and the rest for testing, as the book's ``random_split``. Returns
    ``{"train": (texts, labels), "validation": (...), "test": (...)}``."""
    if not (0 < train_frac < 1 and 0 < validation_frac < 1 and train_frac + validation_frac < 1):
        raise ValueError(
            f"random_split: need 0 < train_frac, validation_frac and their sum < 1, got "
            f"{train_frac} and {validation_frac}"
        )
    n = len(texts)
    if n != len(labels):
        raise ValueError(f"random_split: {n} texts but {len(labels)} labels")
    order = np.random.default_rng(seed).permutation(n)
    train_end = int(n * train_frac)
    validation_end = train_end + int(n * validation_frac)
    parts = {"train": order[:train_end], "validation": order[train_end:validation_end], "test": order[validation_end:]}
    return {name: ([texts[i] for i in idx], [int(labels[i]) for i in idx]) for name, idx in parts.items()}


class SpamDataset:
    """Messages as token ids padded (with ``pad_token_id``, default the tokenizer's end-of-text) to one length.

    ``max_length``: None pads to the longest encoded message (the book's choice for the training set); a
    number truncates longer messages to it. Item i is ``(ids (max_length,) int64, label)``, so the library's
    ``DataLoader`` batches it into ``(B, max_length)`` inputs and ``(B,)`` labels.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        tokenizer: Tokenizer,
        max_length: int | None = None,
        pad_token_id: int | None = None,
    ):
        if len(texts) != len(labels):
            raise ValueError(f"SpamDataset: {len(texts)} texts but {len(labels)} labels")
        if pad_token_id is None:
            pad_token_id = tokenizer.eot_id if tokenizer.eot_id is not None else 0
        self.labels = np.asarray(labels, dtype=np.int64)
        self.encoded_texts = [tokenizer.encode(text) for text in texts]
        longest = max((len(ids) for ids in self.encoded_texts), default=1)
        if max_length is None:
            max_length = longest
        elif max_length < 1:
            raise ValueError(f"SpamDataset: max_length must be >= 1, got {max_length}")
        self.max_length = int(max_length)
        self.pad_token_id = int(pad_token_id)
        ids = np.full((len(texts), self.max_length), self.pad_token_id, dtype=np.int64)
        for row, encoded in enumerate(self.encoded_texts):
            encoded = encoded[: self.max_length]  # truncate, then pad the rest
            ids[row, : len(encoded)] = encoded
        self.input_ids = ids  # (N, max_length)

    def __getitem__(self, index):
        return self.input_ids[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, indices: Sequence[int] | Array) -> tuple[Array, Array]:
        """(inputs (B, max_length), labels (B,)) for the DataLoader, in one indexing."""
        indices = np.asarray(indices, dtype=np.int64)
        return self.input_ids[indices], self.labels[indices]
