"""The one way charlm publishes a file or a folder: write a temp beside it, fsync, rename.

A crash (or SIGKILL) at any moment leaves either the old file or the new one, never half of one; a
reader of a published folder sees all of it or none of it. Published files get the permissions of a
file made with open() (mkstemp's are 0600), so run folders and caches are as readable as any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from charlm.errors import RunError


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        make_readable(Path(tmp))
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise RunError(f"cannot write {path} ({e.strerror or e}): free disk space or fix the folder's "
                       "permissions; the previous file is untouched") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temp folder beside `folder`; fill it, and on a clean exit it is published as `folder` with
    one rename. If another process published `folder` first, that copy is kept and ours is dropped.
    OSErrors propagate (the caller knows what the folder is for and how to say so)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            fsync_file(child)
        make_readable(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
            return  # a racing process published an equal copy first: ours goes in `finally`
        tmp = None
        fsync_dir(folder.parent)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


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
