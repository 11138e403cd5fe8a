"""One strict reader of safetensors files, for every loader (run checkpoints, Hugging Face folders).

The format: 8 bytes (little-endian length N), N bytes of JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {...}}``, then the tensors' bytes. A file that lies about
itself is refused before a single array is allocated, with the file and the tensor named:

- the header length fits in the file; the header is UTF-8 JSON, an object, with no name given twice
  (a plain ``json.loads`` keeps the last of two and says nothing);
- every dtype is one we know, every shape a list of non-negative integers, every byte range as long
  as its shape and dtype say, inside the data, and the ranges tile the data without gap or overlap;
- ``check_finite``: no NaN or infinity in a floating-point tensor.

Arrays come out as memory-mapped, read-only views (one tensor at a time), or as copies with ``read``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# safetensors dtype codes -> little-endian numpy dtypes (BF16 is read as uint16 and widened by hand)
DTYPES = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
FLOAT_CODES = ("F16", "BF16", "F32", "F64")
MAX_HEADER = 100 << 20  # the reference implementation's limit


class SafetensorsError(ValueError):
    """A safetensors file is missing, truncated, or its header does not describe its data."""


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise SafetensorsError(f"the header names {key!r} twice")
        seen[key] = value
    return seen


class SafetensorsFile:
    """The checked header of ``path`` and its tensors on demand. ``error``: the exception class raised
    (a subclass of Exception taking one message), so each loader keeps its own error type."""

    def __init__(self, path, error=SafetensorsError):
        self.path, self.error = Path(path), error
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise self._bad(f"{size} bytes, shorter than the 8-byte header length (truncated or empty)")
                header_length = int.from_bytes(prefix, "little")
                if header_length > min(MAX_HEADER, size - 8):
                    raise self._bad(
                        f"header length {header_length} does not fit in the file's {size} bytes "
                        "(truncated, or not safetensors)"
                    )
                text = f.read(header_length)
        except FileNotFoundError:
            raise error(f"{self.path}: missing") from None
        except IsADirectoryError:
            raise error(f"{self.path}: is a folder, expected a safetensors file") from None
        except OSError as exc:
            raise error(f"{self.path}: cannot be read ({exc.strerror})") from None
        try:
            header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except SafetensorsError as exc:
            raise self._bad(str(exc)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._bad(f"the header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self._bad("the header is not a JSON object")
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict):
            raise self._bad("__metadata__ is not an object")
        self.metadata = metadata
        self.data_start = 8 + header_length
        self.entries = {name: self._check_entry(name, entry) for name, entry in header.items()}
        self._check_layout(size - self.data_start)

    def _bad(self, why: str):
        return self.error(f"{self.path}: not a valid safetensors file: {why}")

    def _check_entry(self, name: str, entry) -> dict:
        if not isinstance(entry, dict):
            raise self._bad(f"tensor {name!r} is described by {type(entry).__name__}, not an object")
        code, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if code not in DTYPES:
            raise self._bad(f"tensor {name!r} has dtype {code!r}, expected one of {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise self._bad(f"tensor {name!r} has shape {shape!r}, expected a list of non-negative integers")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise self._bad(
                f"tensor {name!r} has data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end"
            )
        nbytes = math.prod(shape) * DTYPES[code].itemsize  # Python integers: no overflow for absurd shapes
        if offsets[1] - offsets[0] != nbytes:
            raise self._bad(
                f"tensor {name!r} of shape {tuple(shape)} {code} needs {nbytes} bytes, its "
                f"data_offsets give {offsets[1] - offsets[0]}"
            )
        return {"dtype": code, "shape": tuple(shape), "data_offsets": tuple(offsets)}

    def _check_layout(self, data_size: int) -> None:
        """The byte ranges tile [0, data_size) exactly: no overlap, no gap, nothing past the end."""
        position = 0
        for name, entry in sorted(self.entries.items(), key=lambda item: item[1]["data_offsets"]):
            begin, end = entry["data_offsets"]
            if begin != position:
                raise self._bad(
                    f"tensor {name!r} starts at byte {begin}, expected {position} (overlapping or misplaced data)"
                )
            position = end
        if position != data_size:
            raise self._bad(
                f"the tensors cover {position} bytes of data, the file holds {data_size} "
                f"({'truncated' if position > data_size else 'trailing bytes'})"
            )

    # --- reading ---------------------------------------------------------------------------------
    def shape(self, name: str) -> tuple:
        return self.entries[name]["shape"]

    def dtype_code(self, name: str) -> str:
        return self.entries[name]["dtype"]

    def array(self, name: str) -> np.ndarray:
        """A read-only memory-mapped view (bfloat16 widened to a float32 copy)."""
        entry = self.entries[name]
        code, shape = entry["dtype"], entry["shape"]
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype=np.float32 if code == "BF16" else DTYPES[code])
        view = np.memmap(
            self.path, dtype=DTYPES[code], mode="r", offset=self.data_start + entry["data_offsets"][0], shape=shape
        )
        if code == "BF16":  # bfloat16 is the top half of a float32: shift its 16 bits into place
            return (view.astype(np.uint32) << 16).view(np.float32)
        return view

    def check_finite(self, name: str, array: np.ndarray | None = None) -> None:
        """No NaN or infinity in tensor ``name`` (checked in blocks: no second copy of a large tensor)."""
        if self.dtype_code(name) not in FLOAT_CODES:
            return
        array = self.array(name) if array is None else array
        flat = array.reshape(-1)
        for start in range(0, flat.size, 1 << 22):
            block = flat[start : start + (1 << 22)]
            if not np.isfinite(block).all():
                bad = int(np.count_nonzero(~np.isfinite(flat)))
                raise self.error(
                    f"{self.path}: tensor {name!r} has {bad} of {flat.size} values NaN or infinite "
                    "(a diverged or corrupt model)"
                )

    def read(self, finite: bool = True) -> dict:
        """{name: array} as in-memory copies, in the file's order; ``finite`` checks every float tensor."""
        arrays = {}
        for name in self.entries:
            array = np.array(self.array(name))
            if finite:
                self.check_finite(name, array)
            arrays[name] = array
        return arrays
