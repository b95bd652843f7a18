"""The one way charlm publishes a file or a folder: write a temp beside it, fsync, rename.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never half of one; a
reader of a published folder sees all of it or none of it. Published files get the permissions of a
file made with open() (mkstemp's are 0600), so run folders and caches are as readable as any other.

Temps are named `.charlm-tmp-PID-HOST-NAME.XXXXXXXX` (a file's end in .tmp): a stop signal removes them
(interrupts.raising); what SIGKILL or a power cut leaves is stale once its process is gone (same machine)
or after STALE_AFTER, and the next write into the same folder removes it (`charlm runs` names it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from charlm.errors import RunError
from charlm.files.interrupts import raising

TEMP_PREFIX = ".charlm-tmp-"
TEMP_NAME = re.compile(r"\.charlm-tmp-(\d+)-([0-9a-f]{8})-")
# No write charlm makes takes this long: a temp this old is left over, whatever its pid says (a pid is
# reused; another machine's processes, on a shared folder, cannot be asked; Windows is never asked)
STALE_AFTER = 12 * 3600


def current_umask() -> int:
    """The process's umask. Reading it means setting it, so it is put back at once; never cached, since
    the process may change it between writes."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_readable(path: Path) -> None:
    """Give a file made by mkstemp/mkdtemp (or a folder and its files) the usual permissions."""
    umask = current_umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~umask)
        for child in path.iterdir():
            os.chmod(child, 0o666 & ~umask)
    else:
        os.chmod(path, 0o666 & ~umask)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file) on a temp file beside `path`, then fsync and rename it over `path`.

    Any OSError becomes a RunError naming the file and the fix; the previous file is untouched.
    """
    path = Path(path)
    tmp = None
    remove_stale_temps(path.parent)
    with raising(str(path)) as stop:
        try:
            tmp = _write_temp(path, write)
            make_readable(Path(tmp))
            stop.check()  # a signal that `write` caught and dropped: the old file stays
            os.replace(tmp, path)
            tmp = None
            fsync_dir(path.parent)
        except OSError as e:
            raise RunError(
                f"cannot write {path} ({e.strerror or e}): free disk space or fix the folder's "
                "permissions; the previous file is untouched"
            ) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _write_temp(path: Path, write: Callable[[BinaryIO], object]) -> str:
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def atomic_folder(folder: Path, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `folder`; fill it, and on a clean exit it is published as `folder` with
    one rename. If another process published `folder` first, that copy is kept and ours is dropped; with
    `exclusive`, that is a FileExistsError instead (an empty folder in the way is replaced). A stop
    signal or an error removes the temp. OSErrors propagate (the caller knows what the folder is for)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder.parent)
    with raising(str(folder)) as stop:
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(folder.name), dir=folder.parent))
            yield tmp
            for child in tmp.iterdir():
                fsync_file(child)
            make_readable(tmp)
            stop.check()  # a signal that what filled the folder caught and dropped: nothing is published
            if _publish_folder(tmp, folder, exclusive):
                tmp = None
                fsync_dir(folder.parent)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def _publish_folder(tmp: Path, folder: Path, exclusive: bool) -> bool:
    """Rename `tmp` to `folder`; False when a racing process published `folder` first (not `exclusive`)."""
    if exclusive and folder.is_dir() and not folder.is_symlink():
        with contextlib.suppress(OSError):
            folder.rmdir()  # an empty folder only (Windows will not rename onto one); a full one stays
    try:
        os.rename(tmp, folder)
    except OSError:
        if exclusive or not folder.is_dir():
            raise
        return False  # a racing process published an equal copy first: ours goes in `finally`
    return True


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line with a single write, then fsync: a reader never sees half a record."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunError(f"cannot append to {path} ({e.strerror or e}): free disk space or fix permissions") from None


def remove_stale_temp_files(folder: Path) -> None:
    """Temp files of writes that a crash interrupted: never renamed, so never part of anything."""
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def temp_prefix(name: str) -> str:
    """The name of a temp for `name`, which says who made it: `.charlm-tmp-PID-HOST-NAME.` (NAME cut short,
    so that the temp's name stays within what filesystems take)."""
    return f"{TEMP_PREFIX}{os.getpid()}-{host_tag()}-{name[:80]}."


def host_tag() -> str:
    """This machine, as 8 hex digits: a temp's pid means something only on the machine that wrote it."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def stale_temps(folder: Path) -> list[Path]:
    """The temps (files and folders) in `folder` that charlm made and whose write is over for good: its
    process is gone (asked only on this machine, and not on Windows), or it is older than STALE_AFTER."""
    try:
        entries = [Path(e.path) for e in os.scandir(folder) if e.name.startswith(TEMP_PREFIX)]
    except OSError:  # no such folder, not a folder, not readable: nothing of ours to find
        return []
    return sorted(path for path in entries if _is_stale(path))


def _is_stale(path: Path) -> bool:
    found = TEMP_NAME.match(path.name)
    if found is None:
        return False  # not a name charlm gives: not ours to touch
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_AFTER:
        return True
    return found.group(2) == host_tag() and pid_alive(int(found.group(1))) is False


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove stale_temps(folder); return what was removed."""
    removed = []
    for path in stale_temps(folder):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            continue  # another process cleaning up at the same time, or not ours to remove: leave it
    return removed


def pid_alive(pid: int) -> bool | None:
    """Whether process `pid` exists on this machine: None where it cannot be asked (Windows, where
    os.kill(pid, 0) would end the process instead of probing it)."""
    if pid <= 0 or sys.platform == "win32" or not hasattr(os, "kill"):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # a pid beyond the OS's range: no such process
        return False
    return True
