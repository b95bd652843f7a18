"""What a user's count or size may be: each limit follows from what can exist or from the memory there is,
and is checked before anything is allocated, with one line that names the limit.

`available_memory` is what the device can still give (a GPU's free memory, the machine's available RAM);
`check_memory` compares a command's own estimate of its working memory with it. `read_user_text` is the
one reader of a text file a user names for a short input (a prefix): a regular file, refused by its size
before it is read, never read past its limit.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from charlm.errors import UsageError

# where the machine's available memory cannot be read (Windows without psutil's help, an unusual /proc):
# a cap that any machine charlm runs on has (documented in docs/sampling.md, where sizes have limits)
FALLBACK_MEMORY = 4 << 30
PREFIX_FILE_LIMIT = 16 << 20  # bytes: a prefix this long already takes seconds to read; a book is ~1 MB


def available_memory(device=None) -> int:
    """Bytes the device can still give: free memory of a CUDA device, else the machine's available RAM
    (Linux's MemAvailable, else the physical memory), else FALLBACK_MEMORY."""
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as info:  # Linux: what can be had without swapping
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    names = getattr(os, "sysconf_names", {})  # POSIX (macOS): the physical memory, a looser bound
    if "SC_PHYS_PAGES" in names and "SC_PAGE_SIZE" in names:
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            pass
    return FALLBACK_MEMORY


def size(n: float) -> str:
    """Bytes as a person reads them: 512 B, 3.2 MB, 41 GB, 2.1e+06 TB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB" if n < 1000 else f"{n:.1e} TB"


def check_memory(need: int, what: str, fix: str, device=None) -> None:
    """UsageError when `need` bytes (an estimate of `what`) exceed what the device can give: `fix` says how
    to ask for less."""
    have = available_memory(device)
    if need > have:
        raise UsageError(f"{what} needs about {size(need)} of memory, more than the {size(have)} available: {fix}")


def read_user_text(path: Path | str, what: str, limit: int) -> str:
    """The UTF-8 text (a BOM dropped) of the regular file a user named as `what`, at most `limit` bytes.

    Refused in one line, before reading: a path that is missing, a folder, a device or a pipe (reading
    /dev/zero or a FIFO would never end), or a file over the limit; the read stops at limit + 1 bytes
    whatever stat said (a file that grows meanwhile)."""
    path = Path(path)
    try:  # opened without blocking (a FIFO would wait for a writer), then judged by what was opened
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} not found: pass an existing UTF-8 text file") from None
    except IsADirectoryError:  # Windows does not open a folder
        raise UsageError(f"{what} {path} is a folder: pass a UTF-8 text file") from None
    except (OSError, ValueError) as e:  # a symlink loop, a name too long, no access, a NUL in the name
        raise UsageError(f"cannot read {what} {path} ({_reason(e)}): check the path") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, a pipe or a socket)"
        raise UsageError(f"{what} {path} is {kind}: pass a UTF-8 text file")
    with open(fd, "rb") as f:
        too_big = UsageError(f"{what} {path} is over the limit of {size(limit)}: pass a shorter text")
        if info.st_size > limit:
            raise too_big
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise UsageError(f"cannot read {what} {path} ({_reason(e)}): check the file") from None
    if len(raw) > limit:
        raise too_big
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"{what} {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x}): convert it, e.g. iconv -t UTF-8"
        ) from None


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
