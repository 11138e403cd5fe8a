"""GPT-2 weights in the Hugging Face layout (``config.json`` + ``model.safetensors``), in and out.

    model = GPTModel.from_pretrained("gpt2")          # downloaded once into files.cache_dir(), checked
    model = GPTModel.from_pretrained("path/to/folder")  # a Hugging Face GPT-2 folder, or our own run folder
    model.save_pretrained("out")                      # transformers.GPT2LMHeadModel.from_pretrained("out") loads it

Hugging Face's GPT-2 and ours are the same network with other names and one layout difference: its
linear layers are ``Conv1D`` modules whose weight is stored (in, out), where ours (as torch.nn.Linear)
is (out, in), so every c_attn / c_proj / c_fc weight is transposed. The fused ``c_attn`` projection is
kept fused: its 3C outputs are queries, keys, values, as our ``W_qkv``. ``lm_head`` is the token
embedding (tied) unless the config says otherwise. ``attn.bias`` / ``attn.masked_bias`` are causal-mask
buffers older checkpoints carry; our attention masks while it normalises, so they are ignored.

    ours                                     Hugging Face (optionally prefixed "transformer.")
    tok_emb.weight                           wte.weight
    pos_emb.weight                           wpe.weight
    trf_blocks.N.norm1.scale / .shift        h.N.ln_1.weight / .bias
    trf_blocks.N.att.W_qkv.weight (3C, C)    h.N.attn.c_attn.weight (C, 3C), transposed
    trf_blocks.N.att.W_qkv.bias              h.N.attn.c_attn.bias
    trf_blocks.N.att.out_proj.weight         h.N.attn.c_proj.weight, transposed (+ .bias)
    trf_blocks.N.norm2.scale / .shift        h.N.ln_2.weight / .bias
    trf_blocks.N.ff.layers.0.weight (4C, C)  h.N.mlp.c_fc.weight (C, 4C), transposed (+ .bias)
    trf_blocks.N.ff.layers.2.weight (C, 4C)  h.N.mlp.c_proj.weight (4C, C), transposed (+ .bias)
    final_norm.scale / .shift                ln_f.weight / .bias
    out_head.weight                          lm_head.weight (only when not tied)

Loading reads the file's header first and checks every name, shape and dtype before touching the model,
so an error never leaves a half-loaded model behind; then it copies one tensor at a time from the
memory-mapped file into the parameters of a model built without random initialisation, so the largest
GPT-2 (1.5B parameters, 6.4 GB) never needs two copies in memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.files import CACHE_ENV, DownloadError, atomic_write, cache_dir, download
from tinygrad_llm.model.config import GPTConfig
from tinygrad_llm.nn import init
from tinygrad_llm.safetensors_file import FLOAT_CODES, SafetensorsFile

if TYPE_CHECKING:
    import numpy.typing as npt

    from tinygrad_llm.nn import Module

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OURS_KEY = "tinygrad_llm"  # our exact GPTConfig, kept inside config.json so a round trip is exact
ENDPOINT_ENV = "HF_ENDPOINT"  # Hugging Face's own variable for a mirror of the hub

# The official checkpoints, pinned to a revision so that the hashes below keep matching. The sha256 of
# model.safetensors is its Git LFS oid, shown on the hub's file page ("Git LFS Details"); sizes and the
# config.json hashes come from published manifests of the same revisions. None = not found from a
# source we could verify: that file is checked by what is known (size only, or nothing) -- never guessed.
HF_MODELS = {
    "gpt2": (
        "openai-community/gpt2",
        "607a30d783dfa663caf39e06633721c8d4cfcd7e",
        {
            CONFIG_FILE: (665, "0daed7749b4f02b8f76240d5444551d7b08712dab4d0adb8239c56ba823bb7b4"),
            WEIGHTS_FILE: (548105171, "248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
        },
    ),
    "gpt2-medium": (
        "openai-community/gpt2-medium",
        "6dcaa7a952f72f9298047fd5137cd6e4f05f41da",
        {
            CONFIG_FILE: (718, "ef1a44d889ad1a0acc7731c78134f1b87d2d222f110e97dd10fd4117331caf22"),
            WEIGHTS_FILE: (1519984962, "fc5a354a19255ad494f3d71549390baca1ccf61d1d822b9408971705c687c9cd"),
        },
    ),
    "gpt2-large": (
        "openai-community/gpt2-large",
        "32b71b12589c2f8d625668d2335a01cac3249519",
        {
            CONFIG_FILE: (None, None),  # no verified size or hash found: parsed and checked field by field only
            WEIGHTS_FILE: (None, "5f47f3e12f91cd33b662ce7e433b6150ad5512b5884a2cee961b50e9c3bbebce"),  # ~3.25 GB
        },
    ),
    "gpt2-xl": (
        "openai-community/gpt2-xl",
        "15ea56dee5df4983c59b2538573817e1667135e2",
        {
            CONFIG_FILE: (None, "be48115d52314bc27327e160bf10197760db02ea689d10adb24db4102edf7a8a"),
            WEIGHTS_FILE: (None, "0f8b28eb05a8075f48b61b6f35332978c74fc7763fa9fb4051a1c30511736a6a"),  # ~6.43 GB
        },
    ),
}
ALIASES = {"gpt2-small": "gpt2", **{repo: name for name, (repo, _, _) in HF_MODELS.items()}}

_CODES = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("float64"): "F64"}
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters


class PretrainedError(ValueError):
    """A pretrained model cannot be found, downloaded or read; the message names the file and tensor."""


# --- names ---------------------------------------------------------------------------------------------


def hf_names(config: GPTConfig) -> dict[str, tuple[str, bool]]:
    """{our parameter name: (Hugging Face tensor name, transposed?)} for a model of ``config``."""
    names = {"tok_emb.weight": ("wte.weight", False), "pos_emb.weight": ("wpe.weight", False)}
    for i in range(config.n_layers):
        ours, hf = f"trf_blocks.{i}.", f"h.{i}."
        for our_name, hf_name, transposed in (
            ("norm1.scale", "ln_1.weight", False),
            ("norm1.shift", "ln_1.bias", False),
            ("att.W_qkv.weight", "attn.c_attn.weight", True),
            ("att.W_qkv.bias", "attn.c_attn.bias", False),
            ("att.out_proj.weight", "attn.c_proj.weight", True),
            ("att.out_proj.bias", "attn.c_proj.bias", False),
            ("norm2.scale", "ln_2.weight", False),
            ("norm2.shift", "ln_2.bias", False),
            ("ff.layers.0.weight", "mlp.c_fc.weight", True),
            ("ff.layers.0.bias", "mlp.c_fc.bias", False),
            ("ff.layers.2.weight", "mlp.c_proj.weight", True),
            ("ff.layers.2.bias", "mlp.c_proj.bias", False),
        ):
            if our_name == "att.W_qkv.bias" and not config.qkv_bias:
                continue
            names[ours + our_name] = (hf + hf_name, transposed)
    names["final_norm.scale"], names["final_norm.shift"] = ("ln_f.weight", False), ("ln_f.bias", False)
    if not config.tie_weights:
        names["out_head.weight"] = ("lm_head.weight", False)
    return names


def normalise_hf_key(key: str) -> str:
    """A Hugging Face GPT-2 tensor name without the ``transformer.`` prefix that GPT2LMHeadModel writes."""
    return key[len("transformer.") :] if key.startswith("transformer.") else key


# --- config.json <-> GPTConfig -------------------------------------------------------------------------


def is_hf_config(config: dict) -> bool:
    """Whether a parsed config.json is in Hugging Face's GPT-2 form (rather than GPTConfig.to_dict())."""
    return isinstance(config, dict) and ("n_embd" in config or config.get("model_type") == "gpt2")


def config_from_hf(hf: dict, file: str | Path = "config.json") -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 config.json; what this architecture cannot represent is an
    error naming the field and its value."""

    def bad(field: str, expected: str) -> PretrainedError:
        return PretrainedError(
            f"{file}: {field} = {hf.get(field)!r} cannot be represented by this GPT (expected {expected})"
        )

    if hf.get("model_type", "gpt2") != "gpt2":
        raise bad("model_type", "'gpt2'")
    for field in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size"):
        if field not in hf:
            raise PretrainedError(f"{file}: missing field {field!r} (not a GPT-2 config.json?)")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise bad("activation_function", "'gelu_new': GELU's tanh approximation")
    epsilon = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(epsilon, (int, float)) or not math.isclose(epsilon, 1e-5, rel_tol=1e-9):
        raise bad("layer_norm_epsilon", "1e-05")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise bad("n_inner", f"null or 4 * n_embd = {4 * hf['n_embd']}")
    for field, want in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if hf.get(field, want) != want:
            raise bad(field, json.dumps(want))
    rates = {hf.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    if len(rates) > 1:
        warnings.warn(
            f"{file}: dropout rates {sorted(rates)} differ; this GPT has one drop_rate: using "
            f"resid_pdrop = {hf.get('resid_pdrop', 0.1)}",
            stacklevel=2,
        )
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf["n_positions"],
            emb_dim=hf["n_embd"],
            n_heads=hf["n_head"],
            n_layers=hf["n_layer"],
            drop_rate=float(hf.get("resid_pdrop", 0.1)),
            qkv_bias=True,
            tie_weights=bool(hf.get("tie_word_embeddings", True)),
        )
    except (TypeError, ValueError) as exc:
        raise PretrainedError(f"{file}: not a configuration this GPT can build ({exc})") from None


def config_to_hf(config: GPTConfig) -> dict:
    """The Hugging Face GPT-2 config.json for ``config``, with our exact GPTConfig under "tinygrad_llm"."""
    eos = 50256 if config.vocab_size > 50256 else None  # GPT-2's <|endoftext|>, when the vocabulary has it
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.emb_dim,
        "n_head": config.n_heads,
        "n_layer": config.n_layers,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.drop_rate,
        "embd_pdrop": config.drop_rate,
        "attn_pdrop": config.drop_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "tie_word_embeddings": config.tie_weights,
        "dtype": "float32",
        OURS_KEY: config.to_dict(),
    }


# --- safetensors: read through the one strict reader (tinygrad_llm.safetensors_file) ----------------------


class PretrainedSafetensors(SafetensorsFile):
    """The strict safetensors reader (``tinygrad_llm.safetensors_file``), raising PretrainedError: how the
    GPT-2 and BERT loaders read a weights file."""

    def __init__(self, path: Path):
        super().__init__(path, error=PretrainedError)


def check_config_fits_header(config: GPTConfig, st: SafetensorsFile, config_file: str | Path, hf_layout: bool) -> None:
    """The config's sizes against the weights file's header, before anything is built or allocated: a
    config.json claiming 10^9 layers or positions is named here, not found out of memory later."""
    if hf_layout:
        prefix = "transformer." if "transformer.wte.weight" in st.entries else ""
        token, position, block = prefix + "wte.weight", prefix + "wpe.weight", prefix + "h."
        fields = ("vocab_size", "n_positions", "n_embd", "n_layer")
    else:
        token, position, block = "tok_emb.weight", "pos_emb.weight", "trf_blocks."
        fields = ("vocab_size", "context_length", "emb_dim", "n_layers")
    for name in (token, position):
        if name not in st.entries or len(st.shape(name)) != 2:
            raise PretrainedError(f"{st.path}: no 2-D tensor {name!r} (not the weights of a GPT of this layout)")
    layers = {key[len(block) :].split(".", 1)[0] for key in st.entries if key.startswith(block)}
    found = {
        fields[0]: st.shape(token)[0],
        fields[1]: st.shape(position)[0],
        fields[2]: st.shape(token)[1],
        fields[3]: len(layers),
    }
    claimed = dict(zip(fields, (config.vocab_size, config.context_length, config.emb_dim, config.n_layers)))
    for field in fields:
        if claimed[field] != found[field]:
            raise PretrainedError(
                f"{config_file}: {field} = {claimed[field]}, but {st.path.name} holds weights for "
                f"{found[field]} (config.json and the weights do not belong together)"
            )


def write_safetensors(path: Path, tensors: dict, metadata: dict) -> None:
    """Write ``{name: array}`` as safetensors, streaming one tensor at a time (atomic: temporary + rename).

    Layout: 8-byte little-endian header length, the JSON header (padded with spaces to a multiple of 8),
    then the tensors' bytes back to back in header order.
    """
    header, offset = {"__metadata__": metadata}, 0
    for name, array in tensors.items():
        nbytes = array.size * array.dtype.itemsize
        header[name] = {
            "dtype": _CODES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_write(path) as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


# --- finding the files ---------------------------------------------------------------------------------


def resolve_folder(path_or_name: str | Path, models: dict | None = None, aliases: dict | None = None) -> Path:
    """The local folder for ``path_or_name``: an existing folder, or a known model name (downloaded once).
    ``models`` / ``aliases``: the names known (default GPT-2's, HF_MODELS and ALIASES; BERT passes its own)."""
    models, aliases = (HF_MODELS, ALIASES) if models is None else (models, aliases or {})
    path = Path(path_or_name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PretrainedError(f"{path}: expected a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
        return path
    name = aliases.get(str(path_or_name), str(path_or_name))
    if name in models:
        return download_model(name, models)
    raise PretrainedError(
        f"{path_or_name!r} is neither a folder nor a known model name; known names: "
        f"{', '.join(models)} (or a folder with {CONFIG_FILE} and {WEIGHTS_FILE})"
    )


def download_model(name: str, models: dict | None = None) -> Path:
    """Download ``name``'s config.json and model.safetensors into files.cache_dir() once (resumable, with
    a progress bar, checked against the known size/sha256 at download time); later calls find them there
    and touch neither the network nor the hash (a file only lands in place once it has been checked).
    ``models``: the table of names (default HF_MODELS, GPT-2's; BERT passes its own)."""
    repo, revision, files = (HF_MODELS if models is None else models)[name]
    folder = cache_dir() / "models" / name
    endpoint = os.environ.get(ENDPOINT_ENV, "https://huggingface.co").rstrip("/")
    for filename, (size, sha256) in files.items():
        dest = folder / filename
        if dest.is_file() and (size is None or dest.stat().st_size == size):
            continue
        url = f"{endpoint}/{repo}/resolve/{revision}/{filename}"
        try:
            download(url, dest, sha256=sha256, size=size, desc=f"{name}/{filename}")
        except DownloadError as exc:
            reason = f"{url}: {exc.__cause__}" if exc.__cause__ is not None else str(exc)  # network, or a mismatch
            raise PretrainedError(
                f"cannot download {name} ({reason}). Without network: download {CONFIG_FILE} and {WEIGHTS_FILE} "
                f"from https://huggingface.co/{repo} on another machine and pass their folder, "
                f"from_pretrained('path/to/folder'); or put them in {folder} (set {CACHE_ENV} to "
                f"choose the cache folder)"
            ) from None
    return folder


def read_config(folder: Path) -> dict:
    """The JSON object in ``folder``'s config.json, or a PretrainedError saying what is missing or wrong."""
    file = folder / CONFIG_FILE
    if not file.is_file():
        extra = ""
        if (folder / "pytorch_model.bin").exists():
            extra = " (pickle checkpoints such as pytorch_model.bin are never loaded: convert it to safetensors)"
        raise PretrainedError(f"{file}: missing ({folder} should hold {CONFIG_FILE} and {WEIGHTS_FILE}){extra}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise PretrainedError(f"{file}: expected a JSON object")
    return config


# --- loading ---------------------------------------------------------------------------------------------


def load_pretrained(
    cls: type[Module],
    path_or_name: str | Path,
    device: str | None = None,
    dtype: npt.DTypeLike = np.float32,
    drop_rate: float | None = None,
) -> Module:
    """Build a ``cls`` (GPTModel) from a Hugging Face GPT-2 folder or name, or from our own run folder.

    ``dtype``: the parameters' dtype (float16/bfloat16 files are widened to float32 by default);
    ``device``: where the parameters live; ``drop_rate``: dropout for fine-tuning (default: the file's).
    The model is returned in eval mode.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"from_pretrained: dtype must be a floating-point type, got {dtype}")
    device = backend.check_device(device)
    folder = resolve_folder(path_or_name)
    raw_config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        hint = " (a sharded checkpoint: not supported)" if (folder / f"{WEIGHTS_FILE}.index.json").exists() else ""
        raise PretrainedError(f"{weights}: missing{hint}")
    st = PretrainedSafetensors(weights)

    if is_hf_config(raw_config):
        config, plan = _hf_plan(raw_config, folder / CONFIG_FILE, st)
    else:
        try:
            config = cls.config_class.from_dict(raw_config)
        except (TypeError, ValueError) as exc:
            raise PretrainedError(
                f"{folder / CONFIG_FILE}: neither a Hugging Face GPT-2 config nor a {cls.config_class.__name__} ({exc})"
            ) from None
        check_config_fits_header(config, st, folder / CONFIG_FILE, hf_layout=False)
        plan = None  # our names: the model's own, below
    if drop_rate is not None:
        config = dataclasses.replace(config, drop_rate=drop_rate)

    with init.skip_init():  # every value is overwritten below: skip the random draws
        model = cls(config)
    if plan is None:
        plan = {name: (name, False) for name, _ in model.named_parameters()}  # a tied head under its first name
        present = set(st.entries)
        if config.tie_weights:
            present.discard("out_head.weight")  # a tied head saved under its second name too
        _check_names(weights, plan, present)
    params = dict(model._all_named_parameters())
    for our_name, (key, transposed) in plan.items():  # names, shapes, dtypes: all checked before any copy
        want = params[our_name].shape[::-1] if transposed else params[our_name].shape
        if st.shape(key) != tuple(want):
            raise PretrainedError(
                f"{weights}: tensor {key!r} has shape {st.shape(key)}, expected {tuple(want)} "
                f"(for {our_name} of a model with {config})"
            )
        if st.dtype_code(key) not in FLOAT_CODES:
            raise PretrainedError(
                f"{weights}: tensor {key!r} has dtype {st.dtype_code(key)}; expected a "
                f"floating-point one ({', '.join(FLOAT_CODES)})"
            )
    for our_name, (key, transposed) in plan.items():  # one tensor in memory at a time
        param = params[our_name]
        source = st.array(key)
        st.check_finite(key, source)  # NaN or inf weights: refused, never loaded without a word
        source = source.T if transposed else source  # Conv1D (in, out) -> Linear (out, in)
        if device == "cpu":
            if param.data.dtype != dtype:
                param.data = np.empty(param.shape, dtype=dtype)
            param.data[...] = source  # converts float16/float64 -> dtype while copying
        else:
            param.data = backend.to_device(np.ascontiguousarray(source, dtype=dtype), device)
        del source
    return model.eval()


def _hf_plan(hf: dict, config_file: Path, st: PretrainedSafetensors):
    """(GPTConfig, {our name: (key in the file, transposed?)}) for a Hugging Face checkpoint."""
    config = config_from_hf(hf, config_file)
    check_config_fits_header(config, st, config_file, hf_layout=True)
    present = {}
    for key in st.entries:
        name = normalise_hf_key(key)
        if name.endswith(_IGNORED_SUFFIXES) or (name == "lm_head.weight" and config.tie_weights):
            continue
        if name in present:
            raise PretrainedError(f"{st.path}: tensor {name!r} appears twice ({present[name]!r} and {key!r})")
        present[name] = key
    ours = hf.get(OURS_KEY)
    if isinstance(ours, dict):  # saved by us: keep what the HF fields cannot say (no QKV bias, dropout)
        try:
            saved = GPTConfig.from_dict(ours)
        except (TypeError, ValueError):
            saved = None
        same_shape = saved is not None and all(
            getattr(saved, f) == getattr(config, f)
            for f in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "tie_weights")
        )
        if same_shape:
            biases = [present.get(f"h.{i}.attn.c_attn.bias") for i in range(config.n_layers)]
            zero = all(b is not None and st.dtype_code(b) in FLOAT_CODES and not np.any(st.array(b)) for b in biases)
            config = dataclasses.replace(config, drop_rate=saved.drop_rate, qkv_bias=saved.qkv_bias or not zero)
            if not config.qkv_bias:  # the zero biases written for a model without them
                for b in biases:
                    present.pop(normalise_hf_key(b))
    names = hf_names(config)
    _check_names(st.path, names, set(present), [hf for hf, _ in names.values()])
    return config, {ours_name: (present[hf], t) for ours_name, (hf, t) in names.items()}


def _check_names(file: Path, plan: dict, present: set, wanted: list | None = None) -> None:
    """Every tensor the model needs is in the file, and the file has nothing else."""
    wanted = wanted if wanted is not None else [key for key, _ in plan.values()]
    missing = [key for key in wanted if key not in present]
    if missing:
        raise PretrainedError(f"{file}: missing tensor(s) {_some(missing)} that a GPT-2 of this config.json has")
    unexpected = sorted(present - set(wanted))
    if unexpected:
        raise PretrainedError(
            f"{file}: unexpected tensor(s) {_some(unexpected)}: not part of a GPT-2 of this "
            "config.json (another architecture, or a mismatched config.json?)"
        )


def _some(names: list) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown


# --- saving ----------------------------------------------------------------------------------------------


def save_pretrained(model: Module, directory: str | Path) -> Path:
    """Write ``model`` as ``directory/model.safetensors`` + ``directory/config.json`` in the Hugging Face
    GPT-2 layout (each file atomically). A model without QKV bias is written with zero biases (the same
    function); our exact GPTConfig rides along in config.json, so loading it back gives the same model."""
    config = model.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = dict(model._all_named_parameters())
    tensors = {}
    for our_name, (hf_name, transposed) in hf_names(dataclasses.replace(config, qkv_bias=True)).items():
        key = hf_name if hf_name == "lm_head.weight" else "transformer." + hf_name  # as transformers writes
        if our_name in params:
            array = backend.to_numpy(params[our_name].data)
            if array.dtype not in _CODES:
                array = array.astype(np.float32)
            tensors[key] = array.T if transposed else array
        else:  # the QKV bias of a model without one
            tensors[key] = np.zeros(3 * config.emb_dim, dtype=params["tok_emb.weight"].data.dtype)
    write_safetensors(directory / WEIGHTS_FILE, tensors, {"format": "pt"})
    with atomic_write(directory / CONFIG_FILE, "w") as f:
        f.write(json.dumps(config_to_hf(config), indent=2) + "\n")
    return directory
