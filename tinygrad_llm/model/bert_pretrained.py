"""BERT weights in the Hugging Face layout (``config.json`` + ``model.safetensors``), in and out.

    model = BertForMaskedLM.from_pretrained("folder")   # written by transformers, by save_pretrained, or a run
    model.save_pretrained("out")                         # transformers.BertForMaskedLM.from_pretrained("out")

The names are listed in ``model/bert.py``. Hugging Face keeps three query/key/value Linear layers, ours one
fused ``W_qkv`` (as the GPT's): its rows are the three weights stacked, queries first. transformers writes a
task model's encoder under ``bert.`` and a bare BertModel without it; both load into any of our classes. A
head the folder does not have (the classifier of a pretrained encoder, the pooler of an MLM) keeps its fresh
initialisation, with a warning, as transformers does; every encoder tensor must be there. Tensors that only
other heads use (next-sentence prediction's ``cls.seq_relationship``, the tied ``cls.predictions.decoder``)
are skipped. Our own run folders (``tinygrad-llm train --arch bert``: our parameter names) load the same way.

Real BERT weights are downloaded by name (``bert-base-uncased``, ...) like GPT-2's, into files.cache_dir();
no checksum of them could be verified from here, so they are checked by parsing only (see BERT_MODELS).
BERT's WordPiece tokenizer is not part of this library: a downloaded BERT's ids need its vocab.txt.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.files import atomic_write
from tinygrad_llm.model import pretrained
from tinygrad_llm.model.bert_config import BertConfig
from tinygrad_llm.model.pretrained import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    PretrainedError,
    PretrainedSafetensors,
    read_config,
    write_safetensors,
)

if TYPE_CHECKING:
    import numpy.typing as npt

    from tinygrad_llm.nn import Module

# Names resolve on the hub's main branch. (size, sha256) None: not verified from any source we could reach
# here, so these files are checked by what is known (nothing) and then parsed field by field, never guessed.
BERT_MODELS = {
    "bert-base-uncased": (
        "google-bert/bert-base-uncased",
        "main",
        {CONFIG_FILE: (None, None), WEIGHTS_FILE: (None, None)},
    ),
    "bert-base-cased": ("google-bert/bert-base-cased", "main", {CONFIG_FILE: (None, None), WEIGHTS_FILE: (None, None)}),
    "bert-large-uncased": (
        "google-bert/bert-large-uncased",
        "main",
        {CONFIG_FILE: (None, None), WEIGHTS_FILE: (None, None)},
    ),
}
BERT_ALIASES = {repo: name for name, (repo, _, _) in BERT_MODELS.items()}  # "google-bert/bert-base-uncased"
_SKIPPED = ("cls.predictions.decoder.", "cls.seq_relationship.", "embeddings.position_ids")
_QKV = ("query", "key", "value")


def hf_names(our_name: str) -> list[str]:
    """The Hugging Face tensor name(s) of one of our parameters, without the ``bert.`` prefix; W_qkv has three."""
    name = our_name[len("bert.") :] if our_name.startswith("bert.") else our_name
    name = name.replace(".scale", ".weight").replace(".shift", ".bias")  # our LayerNorm's names
    for ours, theirs in (
        ("mlm_dense.", "cls.predictions.transform.dense."),
        ("mlm_norm.", "cls.predictions.transform.LayerNorm."),
        ("mlm_bias", "cls.predictions.bias"),
    ):
        if name.startswith(ours):
            return [theirs + name[len(ours) :]]
    if not name.startswith("encoder."):
        return [name]  # embeddings.*, pooler.*, classifier.*: the same names
    _, layer, rest = name.split(".", 2)
    prefix = f"encoder.layer.{layer}."
    if rest.startswith("att.W_qkv."):
        return [f"{prefix}attention.self.{part}.{rest.rsplit('.', 1)[1]}" for part in _QKV]
    for ours, theirs in (
        ("att.out_proj.", "attention.output.dense."),
        ("norm1.", "attention.output.LayerNorm."),
        ("ff.layers.0.", "intermediate.dense."),
        ("ff.layers.2.", "output.dense."),
        ("norm2.", "output.LayerNorm."),
    ):
        if rest.startswith(ours):
            return [prefix + theirs + rest[len(ours) :]]
    raise KeyError(f"no Hugging Face name for {our_name!r}")


def _is_head(hf_name: str) -> bool:
    """A tensor only some BERT classes have (a missing one is initialised afresh)."""
    return hf_name.startswith(("pooler.", "cls.", "classifier."))


def _outside_encoder(hf_name: str) -> bool:
    """A task head's tensor, written without the ``bert.`` prefix of the encoder's (the pooler's included)."""
    return hf_name.startswith(("cls.", "classifier."))


def _sources(st: PretrainedSafetensors) -> dict:
    """{Hugging Face name without ``bert.``: a function giving its array} for a file in either layout."""
    keys = {k[len("bert.") :] if k.startswith("bert.") else k: k for k in st.entries}
    ours = any(k.endswith(("LayerNorm.scale", "W_qkv.weight")) for k in keys)
    sources = {}
    for name, key in keys.items():
        if not ours:
            sources[name] = lambda key=key: st.array(key)
            continue
        names = hf_names(name)
        n = len(names)
        for i, hf in enumerate(names):  # W_qkv's rows: queries, keys, values
            sources[hf] = lambda key=key, i=i, n=n: np.split(np.asarray(st.array(key)), n)[i]
    return sources


def load_pretrained(
    cls: type[Module], path_or_name: str | Path, device: str | None = None, dtype: npt.DTypeLike = np.float32
) -> Module:
    """A ``cls`` (BertModel, BertForMaskedLM, BertForSequenceClassification) with the folder's weights."""
    dtype = np.dtype(dtype)
    folder = pretrained.resolve_folder(path_or_name, BERT_MODELS, BERT_ALIASES)  # GPT-2's downloader and checks
    raw_config = read_config(folder)
    try:
        config = BertConfig.from_dict(raw_config)
    except (TypeError, ValueError) as exc:
        raise PretrainedError(
            f"{folder / CONFIG_FILE}: not a BERT configuration this library can build ({exc})"
        ) from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise PretrainedError(f"{weights}: missing")
    st = PretrainedSafetensors(weights)
    sources = _sources(st)
    model = cls(config)  # initialised: heads missing from the file keep these values
    params = dict(model._all_named_parameters())
    plan, fresh = {}, []
    for our_name in params:
        names = hf_names(our_name)
        missing = [n for n in names if n not in sources]
        if missing and all(_is_head(n) for n in names):
            fresh.append(our_name)
            continue
        if missing:
            raise PretrainedError(
                f"{weights}: missing tensor(s) {', '.join(map(repr, missing))} that a BERT of this config.json has"
            )
        plan[our_name] = names
    used = {n for names in plan.values() for n in names}
    unexpected = sorted(n for n in sources if n not in used and not n.startswith(_SKIPPED) and not _is_head(n))
    if unexpected:
        raise PretrainedError(
            f"{weights}: unexpected tensor(s) {', '.join(map(repr, unexpected[:5]))}: not part of "
            "a BERT of this config.json"
        )
    arrays = {}
    for our_name, names in plan.items():  # every shape checked before any parameter changes
        array = np.concatenate([np.asarray(sources[n]()) for n in names]) if len(names) > 1 else sources[names[0]]()
        if tuple(array.shape) != params[our_name].shape:
            raise PretrainedError(
                f"{weights}: tensor {names[0]!r} has shape {tuple(array.shape)}, expected "
                f"{params[our_name].shape} for {our_name}"
            )
        arrays[our_name] = array
    for our_name, array in arrays.items():
        params[our_name].data = np.array(array, dtype=dtype)
    for our_name in fresh:
        params[our_name].data = params[our_name].data.astype(dtype)
    if fresh:
        warnings.warn(
            f"{folder}: no weights for {', '.join(fresh)}: newly initialised (train them before use)", stacklevel=2
        )
    if device:
        model.to(device)
    return model.eval()


def save_pretrained(model: Module, directory: str | Path) -> Path:
    """``directory/model.safetensors`` + ``config.json`` as transformers writes them for this class."""
    task_model = hasattr(model, "bert")
    tensors = {}
    for our_name, param in model._all_named_parameters():
        array = backend.to_numpy(param.data)
        names = hf_names(our_name)
        for name, part in zip(names, np.split(array, len(names))):
            tensors[("bert." + name) if task_model and not _outside_encoder(name) else name] = part
    config = {"architectures": [type(model).__name__], **model.config.to_dict(), "tie_word_embeddings": True}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / WEIGHTS_FILE, dict(sorted(tensors.items())), {"format": "pt"})
    with atomic_write(directory / CONFIG_FILE, "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    return directory
