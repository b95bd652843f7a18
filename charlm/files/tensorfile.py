"""A safetensors file read back (a model folder's weights, a run's novelty index or rms statistics): its header
first, judged by what the caller expects, and only then its bytes.

Reading such a file whole and then asking safetensors whether it is valid trusts the file's size: a sparse
file of 20 GB (or a header that claims 20 GB of tensors) is read into memory before anything is checked. Here
the 8-byte length and the JSON header are read first (bounded), every tensor's name, dtype and shape goes to
the caller's `check` (which knows what the model or the split implies, and raises BadFile for what it refuses),
the tensors must tile the data exactly (safetensors' own rule), and the file must be exactly as long as its
header says. Only then is it read, at most that many bytes; safetensors parses the bytes (and checks them again).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charlm.files.readback import MIB, BadFile, _kind, parse_json

# safetensors' dtypes and their sizes in bytes
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_HEADER = 16 * MIB  # charlm's headers are a few kB: names, shapes, offsets and a little metadata


@dataclass(frozen=True)
class Tensor:
    dtype: str  # safetensors' name: F32, BF16, I8, BOOL, ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Header:
    """What a file's header says: its tensors (name -> Tensor), its metadata, and the file's size it implies."""

    tensors: dict[str, Tensor]
    metadata: dict[str, str]
    size: int  # 8 + the header's length + the tensors' bytes


def read(path: Path | str, check: Callable[[Header], None], *, max_bytes: int) -> tuple[bytes, Header]:
    """The bytes of the safetensors file `path` once its header has passed: `check(header)` (the caller's: it
    raises BadFile), tensors that tile the data, a file exactly as long as the header says and at most
    `max_bytes`. A FIFO or device is refused without blocking; FileNotFoundError and other OSErrors propagate."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)  # of what was opened: no window between a check and the read
        if not stat.S_ISREG(info.st_mode):
            raise BadFile(f"not a regular file ({_kind(info.st_mode)})")
        start = _read_exactly(fd, 8) if info.st_size >= 8 else b""
        length = int.from_bytes(start, "little") if len(start) == 8 else -1
        if not 2 <= length <= min(MAX_HEADER, info.st_size - 8):
            raise BadFile(f"not a safetensors file (a header of {length:,} bytes in {info.st_size:,})")
        text = _read_exactly(fd, length)
        header = parse_header(text, 8 + length)
        check(header)
        if header.size != info.st_size:
            raise BadFile(f"{info.st_size:,} bytes, where its header describes {header.size:,}")
        if header.size > max_bytes:
            raise BadFile(f"{header.size:,} bytes, over the {max_bytes:,}-byte limit")
        return start + text + _read_exactly(fd, header.size - 8 - length), header
    finally:
        os.close(fd)


def parse_header(text: bytes, data_start: int) -> Header:
    """The header's JSON, checked: known dtypes, shapes of whole numbers, offsets that tile the data."""
    raw = parse_json(text)
    if not isinstance(raw, dict):
        raise BadFile("its header is not a JSON object")
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise BadFile("its metadata is not a mapping of texts")
    tensors, spans = {}, []
    for name, entry in raw.items():
        tensor, span = _entry(name, entry)
        tensors[name] = tensor
        spans.append(span)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise BadFile("its tensors do not tile the data (a gap or an overlap)")
        end = stop
    return Header(tensors, metadata, data_start + end)


def _entry(name: str, entry: object) -> tuple[Tensor, tuple[int, int]]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise BadFile(f"its entry {name!r} is not a tensor's")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise BadFile(f"tensor {name!r} has the unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_whole(d) for d in shape):
        raise BadFile(f"tensor {name!r} has a shape that is not a list of whole numbers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(o) for o in offsets)):
        raise BadFile(f"tensor {name!r} has offsets that are not two whole numbers")
    need = math.prod(shape) * DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != need:
        raise BadFile(
            f"tensor {name!r} takes {offsets[1] - offsets[0]:,} bytes where its shape and dtype make {need:,}"
        )
    return Tensor(dtype, tuple(shape)), (offsets[0], offsets[1])


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_exactly(fd: int, count: int) -> bytes:
    """`count` bytes from `fd`, or BadFile when the file ends first (it shrank while read)."""
    chunks, left = [], count
    while left:
        chunk = os.read(fd, min(left, 16 * MIB))
        if not chunk:
            raise BadFile("shorter than its header says (it changed while read)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def refuse_unexpected(header: Header, shapes: dict[str, tuple[int, ...]], dtypes: tuple[str, ...]) -> str | None:
    """The first way the header differs from tensors of `shapes` (name -> shape) in one of `dtypes`, in words
    (None: it holds exactly those)."""
    for name, shape in shapes.items():
        if name not in header.tensors:
            return f"it lacks {name}"
        if header.tensors[name].shape != tuple(shape):
            return f"{name} is {list(header.tensors[name].shape)} where {list(shape)} is needed"
    for name, tensor in header.tensors.items():
        if name not in shapes:
            return f"it has {name}, which has no place here"
        if tensor.dtype not in dtypes:
            return f"{name} is {tensor.dtype}, not {' or '.join(dtypes)}"
    return None
