"""Files charlm reads back (its caches, a model folder's JSON, a run folder's bookkeeping): trusted only after a check.

Such a file may have been edited, truncated, replaced by a symlink to /dev/zero or a FIFO, or grown huge.
`read_bytes` opens it without blocking (a FIFO would wait for a writer forever), refuses anything but a
regular file, and reads at most `max_bytes`; `read_json` also refuses NaN and Infinity (not JSON, though
Python's json reads them) and nesting deeper than Python's parser survives. Each problem is a `BadFile`
(a ValueError) with a short reason: the caller decides what it means — a cache measures again, a model
folder is refused naming the file, a run folder shows as damaged. `check_vocab` is the one check of a saved
vocabulary, for every reader of one (vocab.json, config.json's size, a checkpoint, the encoded-corpus cache).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from charlm.errors import shown

KIB, MIB = 1024, 1024 * 1024
# a vocabulary lists each character once: at most every code point but the surrogates, each "\\uXXXX\\uXXXX", ",
MAX_VOCAB_JSON = 32 * MIB


class BadFile(ValueError):
    """A file read back that is not what charlm wrote: `reason` says what, in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_bytes(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (a symlink to one is fine), refused when larger than `max_bytes`.

    FileNotFoundError propagates (a missing file is often not a fault); other OSErrors too.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
    try:
        info = os.fstat(fd)  # of what was opened: no window between a check and the read
        if not stat.S_ISREG(info.st_mode):
            raise BadFile(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise BadFile(f"{info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        chunks, size = [], 0
        while chunk := os.read(fd, min(MIB, max_bytes + 1 - size)):
            chunks.append(chunk)  # a file growing while it is read is bounded too
            size += len(chunk)
            if size > max_bytes:
                raise BadFile(f"over the {max_bytes:,}-byte limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(path: Path | str, max_bytes: int) -> object:
    """The JSON value of the file `path` (see read_bytes): strict UTF-8, no NaN or Infinity."""
    return parse_json(read_bytes(path, max_bytes))


def parse_json(data: bytes | str) -> object:
    """Strict JSON: BadFile for bytes that are not UTF-8, a syntax error, NaN/Infinity or absurd nesting."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError as e:
        raise BadFile(f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadFile(f"not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise BadFile("nested too deeply to be charlm's") from None


def _refuse_constant(name: str):
    raise BadFile(f"holds {name}, which is not a number JSON allows")


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def vocab_chars(data: bytes | str) -> list[str]:
    """The characters of a vocab.json's text ({"chars": [...]}), checked by check_vocab."""
    saved = parse_json(data)
    if not isinstance(saved, dict) or "chars" not in saved:
        raise BadFile('it is not an object with a "chars" list')
    return check_vocab(saved["chars"])


RESERVED = ("<eod>", "<unk>")  # the vocabulary's reserved symbols (never a character: each is five long)


def check_vocab(chars: object) -> list[str]:
    """A saved vocabulary as its list of characters: a non-empty list of distinct single characters that
    UTF-8 can hold (no lone surrogate), and the reserved symbols it has. BadFile names the first problem."""
    if not isinstance(chars, list):
        raise BadFile(f"its characters are not a list but {shown(chars, 40)}")
    if not chars:
        raise BadFile("its list of characters is empty")
    seen: set[str] = set()
    for i, c in enumerate(chars):
        if isinstance(c, str) and c in RESERVED and c not in seen:
            seen.add(c)
            continue
        if not isinstance(c, str) or len(c) != 1:
            raise BadFile(f"entry {i} is {shown(c, 40)}, not one character")
        if 0xD800 <= ord(c) <= 0xDFFF:
            raise BadFile(f"entry {i} is a lone surrogate ({ord(c):#06x}), not a character")
        if c in seen:
            raise BadFile(f"entry {i} ({c!r}) is listed twice")
        seen.add(c)
    return chars


def finite_number(value: object, *, positive: bool = False, limit: float = math.inf) -> bool:
    """A real number (not a bool), finite, and > 0 with `positive`, at most `limit`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    number = float(value) if abs(value) < 1e308 else math.inf  # float() of a huge int raises OverflowError
    return math.isfinite(number) and (number > 0 or not positive) and number <= limit
