"""Training checkpoints: safetensors + JSON, written so that a run killed at any moment can resume.

A training run's output folder (shared/DESIGN.md)::

    out/
      model.safetensors, config.json     the latest weights and model config (generate --checkpoint out)
      tokenizer/, log.jsonl, losses.png  written by the trainer
      checkpoints/
        latest                           one line: the name of the newest complete checkpoint
        ckpt-000200/
          model.safetensors              the model's state_dict (name -> array), as numpy arrays
          config.json                    the model config
          optimizer.safetensors          optimizer arrays (AdamW's moments), keyed "state.<index>.<name>"
          optimizer.json                 the rest of Optimizer.state_dict(): steps, hyperparameters, groups
          trainer_state.json             step, tokens seen, data position, random generator states, ...
          trainer_state.safetensors      any arrays inside the trainer state (e.g. a shuffled order)
          checkpoint.json                the manifest, written last: step, file names and sizes
        ckpt-000100/                     older ones, up to keep_last in all

How a save stays atomic: every file is written to a temporary name, fsynced and renamed
(``files.atomic_write``); the checkpoint's files go into ``ckpt-000200.tmp/``, which is renamed to
``ckpt-000200`` only once complete; then ``latest`` is replaced (again atomically) to point at it; then the
top-level model.safetensors and config.json are replaced; then checkpoints beyond ``keep_last`` are deleted.
A kill at any point leaves ``latest`` naming a complete checkpoint (or, before the first save completes,
none). Nothing is read with pickle: arrays come from safetensors, everything else from JSON (Python's
JSON keeps big integers exact, such as PCG64 generator states; dict keys become strings).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinygrad_llm import backend
from tinygrad_llm.files import atomic_write, fsync_dir, json_text
from tinygrad_llm.safetensors_file import SafetensorsFile

if TYPE_CHECKING:
    from collections.abc import Callable

FORMAT = "tinygrad_llm.checkpoint"
VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
LATEST = "latest"
MANIFEST = "checkpoint.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
TRAINER_TENSORS, TRAINER_JSON = "trainer_state.safetensors", "trainer_state.json"
_CKPT_NAME = re.compile(r"ckpt-(\d+)(\.old)?")
_TENSOR_REF = "__tensor__"  # {"__tensor__": key}: a JSON placeholder for an array stored in safetensors


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit the model; the message names the file."""


class NoCheckpointError(CheckpointError):
    """There is no checkpoint to resume from in the folder given."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns."""

    path: Path  # the ckpt-NNNNNN folder it was read from
    step: int
    model_state: dict  # name -> numpy array
    config: dict
    optimizer_state: dict | None  # as Optimizer.state_dict() (state keys are ints), None when not saved
    trainer_state: dict


# --- saving ------------------------------------------------------------------------------------------


def save_checkpoint(
    out_dir: str | Path,
    model_state: dict,
    config: dict,
    optimizer_state: dict | None = None,
    trainer_state: dict | None = None,
    *,
    step: int | None = None,
    keep_last: int = 3,
    publish: bool = True,
) -> Path:
    """Write a checkpoint under ``out_dir/checkpoints/ckpt-<step>`` atomically; return its folder.

    ``model_state``: name -> array (numpy, cupy, or anything with ``.data``), e.g. ``model.state_dict()``.
    ``config``: JSON-able model config. ``optimizer_state``: ``optimizer.state_dict()`` (arrays go to
    safetensors). ``trainer_state``: JSON-able dict (numpy scalars and arrays allowed; written as strict
    JSON, so a NaN or infinite number reads back as None), e.g.
    ``{"step", "tokens_seen", "data": loader.state_dict(), "rng": backend.get_rng_state()}``.
    ``step`` defaults to ``trainer_state["step"]``. Also replaces ``out_dir/model.safetensors`` and
    ``out_dir/config.json`` (unless ``publish=False``: the trainer publishes only its best model there),
    and keeps only the ``keep_last`` newest checkpoints.
    """
    trainer_state = dict(trainer_state or {})
    if step is None:
        if "step" not in trainer_state:
            raise ValueError("save_checkpoint: pass step= or a trainer_state with a 'step' entry")
        step = trainer_state["step"]
    step = int(step)
    if step < 0:
        raise ValueError(f"save_checkpoint: step must be >= 0, got {step}")
    if int(keep_last) < 1:
        raise ValueError(f"save_checkpoint: keep_last must be >= 1, got {keep_last}")
    model_bytes = _safetensors_bytes({k: _to_numpy(v, f"model_state[{k!r}]") for k, v in model_state.items()})
    config_text = _json_text(config, "config")
    files = {MODEL_FILE: model_bytes, CONFIG_FILE: config_text.encode()}
    if optimizer_state is not None:
        meta, arrays = _split_arrays(optimizer_state, "optimizer_state")
        files[OPTIMIZER_TENSORS] = _safetensors_bytes(arrays)
        files[OPTIMIZER_JSON] = _json_text(meta, "optimizer_state").encode()
    meta, arrays = _split_arrays(trainer_state, "trainer_state")
    files[TRAINER_TENSORS] = _safetensors_bytes(arrays)
    files[TRAINER_JSON] = _json_text(meta, "trainer_state").encode()

    out_dir = Path(out_dir)
    root = out_dir / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    name = f"ckpt-{step:06d}"
    final, tmp = root / name, root / f"{name}.tmp"
    tmp.mkdir()
    try:
        for filename, content in files.items():
            with atomic_write(tmp / filename) as f:
                f.write(content)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "files": {filename: len(content) for filename, content in files.items()},
        }
        with atomic_write(tmp / MANIFEST) as f:
            f.write(_json_text(manifest, "manifest").encode())
        fsync_dir(tmp)
    except BaseException:  # disk full, a file size limit, ...: remove our unfinished folder, keep the others
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    if final.exists():  # the same step saved twice: swap, so a complete ckpt-<step>[.old] exists throughout
        old = root / f"{name}.old"
        final.rename(old)
        tmp.rename(final)
        fsync_dir(root)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
        fsync_dir(root)
    with atomic_write(root / LATEST) as f:
        f.write(f"{name}\n".encode())
    if publish:
        publish_model(out_dir, model_bytes, config_text)
    _prune(root, keep=final, keep_last=int(keep_last))
    return final


def publish_model(out_dir: str | Path, model_bytes: bytes, config_text: str) -> None:
    """Replace ``out_dir/model.safetensors`` and ``config.json``: what ``generate --checkpoint out_dir`` reads."""
    with atomic_write(Path(out_dir) / CONFIG_FILE) as f:
        f.write(config_text.encode())
    with atomic_write(Path(out_dir) / MODEL_FILE) as f:
        f.write(model_bytes)


def _remove_leftovers(root: Path) -> None:
    """What a killed save left behind: unfinished ``.tmp``, half-deleted ``.del``, replaced ``.old``
    folders, and the temporary files of ``atomic_write`` for the files this module replaces."""
    for folder, filename in ((root, LATEST), (root.parent, MODEL_FILE), (root.parent, CONFIG_FILE)):
        for temporary in folder.glob(f".{filename}.*.tmp"):
            temporary.unlink(missing_ok=True)
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith("ckpt-"):
            if path.name.endswith((".tmp", ".del")):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.endswith(".old") and (root / path.name[:-4]).is_dir():
                shutil.rmtree(path, ignore_errors=True)


def _prune(root: Path, keep: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (by step), never ``keep``, the one just written."""
    others = sorted((step, path) for step, path in _complete_checkpoints(root) if path != keep)
    for _, path in others[: max(0, len(others) - (keep_last - 1))]:
        doomed = path.with_name(path.name + ".del")  # renamed first: a half-deleted folder never looks complete
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint folder (``ckpt-N``, or ``ckpt-N.old`` mid-swap)."""
    found = []
    for path in root.iterdir():
        match = _CKPT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return found


# --- loading -----------------------------------------------------------------------------------------


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder to load from ``path``: a run folder, its ``checkpoints/``, or a ``ckpt-N``.

    In a run folder the checkpoint named by ``checkpoints/latest`` is taken; if that file is missing or
    names a folder that is gone, the complete checkpoint with the highest step. Raises NoCheckpointError
    (naming the folder) when there is none.
    """
    path = Path(path)
    if not path.is_dir():
        raise NoCheckpointError(f"no checkpoint to resume from: {path} is not a folder")
    if (path / MANIFEST).is_file():
        return path
    if _CKPT_NAME.fullmatch(path.name):
        raise CheckpointError(f"{path / MANIFEST}: missing (the checkpoint in {path} is incomplete)")
    root = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
    latest = root / LATEST
    if latest.is_file():
        name = latest.read_text(encoding="utf-8", errors="replace").strip()
        if not _CKPT_NAME.fullmatch(name):
            raise CheckpointError(f"{latest}: expected the name of a checkpoint folder (ckpt-NNNNNN), got {name!r}")
        if (root / name).is_dir():
            return root / name
    found = _complete_checkpoints(root)
    if not found:
        raise NoCheckpointError(f"no checkpoint to resume from in {path} (no {CHECKPOINTS_DIR}/ckpt-* folder)")
    # the highest step; at equal steps a finished ckpt-N before a ckpt-N.old
    return max(found, key=lambda item: (item[0], not item[1].name.endswith(".old")))[1]


def load_checkpoint(path: str | Path, *, expected_state: dict | None = None) -> Checkpoint:
    """Read the checkpoint ``find_checkpoint(path)`` picks, checking every file.

    ``expected_state``: the model's ``state_dict()`` (or name -> shape): every tensor must be there with
    the same shape, else a CheckpointError names the file, the tensor and both shapes.
    Errors (CheckpointError) name the file: missing, truncated, not valid safetensors/JSON.
    """
    folder = find_checkpoint(path)
    manifest = _read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{folder / MANIFEST}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{folder / MANIFEST}: format version {manifest.get('version')!r}, "
            f"this tinygrad_llm reads version {VERSION}"
        )
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("step"), int):
        raise CheckpointError(f"{folder / MANIFEST}: no 'files' and 'step' entries (corrupt manifest)")
    for filename, size in manifest["files"].items():
        file = folder / filename
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (the checkpoint in {folder} is incomplete)")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"{file}: {file.stat().st_size} bytes, the manifest says {size} (truncated or modified)"
            )
    model_state = read_safetensors(folder / MODEL_FILE)
    if expected_state is not None:
        check_state_matches(model_state, expected_state, folder / MODEL_FILE)
    config = _read_json(folder / CONFIG_FILE)
    optimizer_state = None
    if OPTIMIZER_JSON in manifest["files"]:
        optimizer_state = _join_arrays(
            _read_json(folder / OPTIMIZER_JSON), read_safetensors(folder / OPTIMIZER_TENSORS), folder / OPTIMIZER_JSON
        )
    trainer_state = _join_arrays(
        _read_json(folder / TRAINER_JSON), read_safetensors(folder / TRAINER_TENSORS), folder / TRAINER_JSON
    )
    return Checkpoint(
        path=folder,
        step=int(manifest["step"]),
        model_state=model_state,
        config=config,
        optimizer_state=optimizer_state,
        trainer_state=trainer_state,
    )


def find_intact_checkpoint(
    path: str | Path,
    *,
    log: Callable[[str], object] | None = None,
    validate: Callable[[Checkpoint], object] | None = None,
) -> Path:
    """The newest checkpoint of ``path`` that loads completely (``validate(checkpoint)`` may check more and
    raise CheckpointError). When the newest is damaged and an older one is intact, ``log`` says which one is
    bad and the older one is returned; when none is intact, the newest one's error is raised, naming it."""
    path = Path(path)
    newest = find_checkpoint(path)
    if (path / MANIFEST).is_file():  # a checkpoint folder given itself: that one or nothing
        candidates = [newest]
    else:
        root = newest.parent
        older = sorted((item for item in _complete_checkpoints(root) if item[1] != newest), reverse=True)
        candidates = [newest] + [folder for _, folder in older]
    first_error = None
    for folder in candidates:
        try:
            checkpoint = load_checkpoint(folder)
            if validate is not None:
                validate(checkpoint)
        except CheckpointError as exc:
            first_error = first_error or exc
            continue
        if folder != newest and log is not None:
            log(f"the newest checkpoint {newest} is damaged ({first_error}); resuming from the older {folder.name}")
        return folder
    raise first_error


def load_model_files(path: str | Path, *, expected_state: dict | None = None) -> tuple[dict, dict]:
    """(model_state, config) from ``path/model.safetensors`` and ``path/config.json``.

    ``path`` is a run folder or a checkpoint folder; shapes are checked as in ``load_checkpoint``.
    """
    path = Path(path)
    for filename in (MODEL_FILE, CONFIG_FILE):
        if not (path / filename).is_file():
            raise CheckpointError(f"{path / filename}: missing ({path} should hold {MODEL_FILE} and {CONFIG_FILE})")
    model_state = read_safetensors(path / MODEL_FILE)
    if expected_state is not None:
        check_state_matches(model_state, expected_state, path / MODEL_FILE)
    return model_state, _read_json(path / CONFIG_FILE)


def read_safetensors(file: str | Path) -> dict:
    """name -> numpy array, through the one strict reader (``safetensors_file``): a missing, truncated or
    corrupt file, a header that lies about its data, a name given twice or a NaN/infinite value raises
    CheckpointError naming the file (and the tensor)."""
    return SafetensorsFile(file, error=CheckpointError).read(finite=True)


def check_state_matches(loaded: dict, expected: dict, file: str | Path) -> None:
    """Same tensor names and shapes in ``loaded`` as in ``expected`` (arrays, tensors, or shapes)."""
    missing = [name for name in expected if name not in loaded]
    if missing:
        raise CheckpointError(
            f"{file}: missing tensor(s) {_some(missing)} that the model has (a checkpoint from another model?)"
        )
    unexpected = [name for name in loaded if name not in expected]
    if unexpected:
        raise CheckpointError(
            f"{file}: has tensor(s) {_some(unexpected)} that the model does not have (a checkpoint from another model?)"
        )
    for name, want in expected.items():
        want_shape = tuple(want) if isinstance(want, (tuple, list)) else tuple(want.shape)
        if tuple(loaded[name].shape) != want_shape:
            raise CheckpointError(
                f"{file}: tensor {name!r} has shape {tuple(loaded[name].shape)}, the model "
                f"expects {want_shape} (a checkpoint from another model configuration)"
            )
        want_kind = getattr(getattr(want, "dtype", None), "kind", None)
        if want_kind is not None and loaded[name].dtype.kind != want_kind:  # I32 for float weights is no cast
            raise CheckpointError(
                f"{file}: tensor {name!r} has dtype {loaded[name].dtype}, the model expects "
                f"{want.dtype} (a corrupt or foreign file)"
            )


def _some(names: list) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown


# --- JSON and arrays ---------------------------------------------------------------------------------


def _to_numpy(value, what: str) -> np.ndarray:
    if hasattr(value, "data") and hasattr(value, "grad"):  # a Tensor or Parameter
        value = value.data
    if not hasattr(value, "shape"):
        raise TypeError(f"{what}: expected an array, got {type(value).__name__}")
    return np.ascontiguousarray(backend.to_numpy(value))


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("cupy")


def _split_arrays(obj, path: str, arrays: dict | None = None):
    """(JSON-able copy of ``obj`` with arrays replaced by {"__tensor__": key}, {key: numpy array})."""
    top = arrays is None
    arrays = {} if top else arrays
    if _is_array(obj):
        key = path.partition(".")[2] or path
        if key in arrays:  # {"a.b": x, "a": {"b": y}} would store both under "a.b"
            raise ValueError(f"{path}: two arrays would be saved under the key {key!r}; rename one")
        arrays[key] = _to_numpy(obj, path)
        result = {_TENSOR_REF: key}
    elif isinstance(obj, np.generic):
        result = obj.item()
    elif isinstance(obj, dict):
        result = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{path}: dict key {k!r} is a {type(k).__name__}; only str and int keys are saved")
            result[str(k)] = _split_arrays(v, f"{path}.{k}", arrays)[0]
    elif isinstance(obj, (list, tuple)):
        result = [_split_arrays(v, f"{path}.{i}", arrays)[0] for i, v in enumerate(obj)]
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        result = obj
    else:
        raise TypeError(
            f"{path}: a {type(obj).__name__} cannot be saved in a checkpoint "
            "(JSON values, numpy scalars and arrays can)"
        )
    return result, arrays


def _join_arrays(obj, arrays: dict, file: Path):
    """Put the arrays back where ``_split_arrays`` left placeholders."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR_REF}:
            key = obj[_TENSOR_REF]
            if key not in arrays:
                raise CheckpointError(
                    f"{file}: refers to tensor {key!r}, which is not in {file.with_suffix('.safetensors').name}"
                )
            return arrays[key]
        return {k: _join_arrays(v, arrays, file) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays, file) for v in obj]
    return obj


def _safetensors_bytes(arrays: dict) -> bytes:
    from safetensors.numpy import save

    return save(arrays, metadata={"format": "pt"})  # "pt": what Hugging Face loaders expect to find


def _json_text(obj, what: str) -> str:
    try:
        return json_text(obj, indent=1) + "\n"  # strict JSON: a NaN loss in the history as null
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON-able: {exc}") from None


def _read_bytes(file: Path) -> bytes:
    """The file's bytes, or a CheckpointError naming it."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot be read ({exc})") from None


def _read_json(file: Path):
    data = _read_bytes(file)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON, truncated or corrupt ({exc})") from None
