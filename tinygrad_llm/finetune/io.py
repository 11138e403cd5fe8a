"""Fine-tuned models on disk, in the layout of a training run folder plus one metadata file:

    out/
      model.safetensors   the weights, the library's parameter names (LoRA merged in: a plain GPTModel)
      config.json         the GPTConfig
      tokenizer.json      the tokenizer
      finetune.json       what kind of fine-tuning: {"task": "classification", "num_classes": 2,
                          "class_names": [...], "max_length": ..., "pad_token_id": ...} or {"task": "instruction"}

An instruction-tuned model is a plain GPT: ``tinygrad-llm generate --checkpoint out`` runs it. A classifier
has a (num_classes, emb_dim) head instead of the vocabulary head: ``load_classifier(out)`` rebuilds it.
Every file is written atomically; nothing is read with pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend, files
from tinygrad_llm.files import atomic_write

if TYPE_CHECKING:
    from tinygrad_llm.nn.module import Module
    from tinygrad_llm.tokenizer.base import Tokenizer

FINETUNE_FILE = "finetune.json"


def save_finetuned(out: str | os.PathLike, model: Module, tokenizer: Tokenizer, meta: dict) -> Path:
    """Write model.safetensors, config.json, tokenizer.json and finetune.json into ``out`` (each atomically)."""
    from safetensors.numpy import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: np.ascontiguousarray(backend.to_numpy(array)) for name, array in model.state_dict().items()}
    payload = save(state)  # built in memory first: a failure leaves no file behind
    with atomic_write(out / "model.safetensors") as f:
        f.write(payload)
    files.write_json(out / "config.json", model.config.to_dict())
    tokenizer.save(out)
    files.write_json(out / FINETUNE_FILE, meta)
    return out


def load_classifier(path: str | os.PathLike, device: str | None = None) -> tuple[Module, Tokenizer, dict]:
    """(model, tokenizer, meta) of a classifier saved by ``finetune-classifier`` (or ``save_finetuned``): a
    GPTModel or BERT with its class head. A folder of an older version's ``--ensemble`` (an ``ensemble_size``
    in finetune.json) is refused: ensembles are no longer written or read."""
    from tinygrad_llm.checkpoint import CheckpointError, check_state_matches, load_model_files
    from tinygrad_llm.finetune.classifier import add_classification_head
    from tinygrad_llm.model.ngram_gpt import check_tables_fit_header, config_from_dict, model_class
    from tinygrad_llm.model.pretrained import check_config_fits_header
    from tinygrad_llm.safetensors_file import SafetensorsFile
    from tinygrad_llm.tokenizer import load_tokenizer

    path = Path(path)
    meta_file = path / FINETUNE_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file}: missing ({path} is not a folder written by finetune-classifier)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("task") != "classification":
        raise ValueError(f"{meta_file}: task is {meta.get('task')!r}, not 'classification'")
    if meta.get("ensemble_size", 1) != 1:  # an older version's --ensemble: members.0. ... in the weights
        raise ValueError(
            f"{meta_file}: ensemble_size is {meta['ensemble_size']!r}: an ensemble of classifiers, which "
            "finetune-classifier no longer writes and this version cannot load (the ensemble was removed: it "
            "gained less than its interval on validation); train one model again with finetune-classifier"
        )
    state, config = load_model_files(path)
    if isinstance(config, dict) and config.get("model_type") == "bert":  # finetune-classifier --arch bert
        from tinygrad_llm.model import BertConfig, BertForSequenceClassification

        try:
            config = BertConfig.from_dict(config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path / 'config.json'}: not a BERT configuration this library can build ({exc})"
            ) from None
        model = BertForSequenceClassification(config)
    else:
        try:
            config = config_from_dict(config)  # a GPTConfig, or an NgramGPTConfig (the from-scratch recipe's)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path / 'config.json'}: not a model configuration this GPT can build ({exc})"
            ) from None
        weights = SafetensorsFile(path / "model.safetensors", error=CheckpointError)
        # sizes checked before allocating the model
        check_config_fits_header(config, weights, path / "config.json", hf_layout=False)
        check_tables_fit_header(config, weights, path / "config.json")
        model = add_classification_head(model_class(config)(config), int(meta["num_classes"]))
    check_state_matches(state, model.state_dict(), path / "model.safetensors")
    model.load_state_dict(state)
    if device:
        model.to(device)
    model.eval()
    return model, load_tokenizer(path), meta
