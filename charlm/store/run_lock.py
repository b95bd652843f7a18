"""The lock that lets one trainer at a time into a run folder, on POSIX and Windows alike.

The lock is filelock's: flock(LOCK_EX) on POSIX, LockFileEx on Windows. Both belong to the open file, so the
OS releases them when the holder dies, kill -9 included (tests/test_rundir.py kills a holder and takes the
lock). Only where flock is missing altogether does filelock fall back to a file whose existence is the lock.
The holder's pid goes beside the lock file, in .lock.pid, not into it: Windows' lock keeps other processes
from reading the locked file's first byte.

A search (autosize/search.py) holds its run folder's lock from its first write to its winner's last, and lends
it (`lend`) to the winner's trainer, which takes the folder's lock like any trainer: no other process gets in
between the search and its winner.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from charlm.errors import UsageError
from charlm.files import fsio

LOCK, HOLDER = ".lock", ".lock.pid"
_LENT: dict[Path, RunLock] = {}  # folders whose held lock this process lends to the trainers it runs there


class RunLock:
    """The held lock of a run folder (see hold)."""

    def __init__(self, pid_file: Path):
        self.pid_file = pid_file

    def record_pid(self) -> None:
        """Say who holds the lock, for the message a second trainer gets."""
        fsio.atomic_write_text(self.pid_file, str(os.getpid()))


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[RunLock]:
    """Hold `folder`'s lock (creating the folder), or refuse at once naming the holder. Taking it changes no
    file but a new, empty .lock; the holder records its pid (RunLock.record_pid) once it starts writing. A
    lock this process lends (`lend`) is yielded as it is."""
    lent = _LENT.get(_key(folder))
    if lent is not None:
        yield lent
        return
    lock = _file_lock(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:  # before OSError: filelock's Timeout is one
        pid = holder(folder)
        who = f"charlm process {pid}" if pid != "?" else "another charlm process (which has not yet said its id)"
        stop = f"or stop it (kill {pid}), " if pid != "?" else ""
        raise UsageError(
            f"run folder {folder} is in use by {who}: wait for it to end {stop}or pass another --run-dir"
        ) from None
    except OSError as e:
        raise UsageError(f"cannot use run folder {folder} ({e.strerror or e}): choose a writable --run-dir") from None
    try:
        yield RunLock(folder / HOLDER)
    finally:
        lock.release()


@contextlib.contextmanager
def lend(folder: Path) -> Iterator[None]:
    """While inside, `hold(folder)` in this process yields the lock the caller holds (it must hold it): the
    winner's trainer, run by a search in the search's own folder, works under the search's lock."""
    key = _key(folder)
    _LENT[key] = RunLock(Path(folder) / HOLDER)
    try:
        yield
    finally:
        _LENT.pop(key, None)


def _key(folder: Path) -> Path:
    return Path(os.path.abspath(folder))


def holder(folder: Path) -> str:
    """The pid the holder recorded ("?" before it has, or if the file holds something else)."""
    try:
        pid = (folder / HOLDER).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "?"
    return pid if pid.isdigit() else "?"


def is_held(folder: Path) -> bool | None:
    """Whether a trainer holds `folder` now (None: no lock file, i.e. an older run, or a lock that cannot be
    tried here, e.g. in a folder we may read but not write).

    filelock has no shared lock, so this takes the lock for an instant and lets it go. A trainer starting in
    that instant is refused, as it was by the shared flock this replaced; two probes in the same instant may
    each see the other as a trainer (a run shown as running once)."""
    if not (folder / LOCK).exists():
        return None
    probe = _file_lock(folder)
    try:
        probe.acquire()
    except Timeout:  # before OSError: filelock's Timeout is one
        return True
    except OSError:
        return None
    probe.release()
    return False


def _file_lock(folder: Path) -> FileLock:
    """Tried once (timeout 0): a second trainer is refused, never kept waiting."""
    return FileLock(folder / LOCK, timeout=0)
