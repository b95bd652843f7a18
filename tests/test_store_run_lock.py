"""runlock: one trainer per run folder, through filelock; the holder's pid beside the lock; a dead holder's
lock released by the OS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.errors import UsageError
from charlm.store import run_lock as runlock
from charlm.store.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]

# A second process that takes a folder's lock, records its pid, says so and waits to be killed.
HOLD = """
import sys, time
from pathlib import Path
from charlm.store.run_dir import RunDir
with RunDir(Path(sys.argv[1])).ownership.lock() as lock:
    lock.record_pid()
    print("held", flush=True)
    time.sleep(600)
"""


def hold_in_another_process(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline() == "held\n", proc.communicate(timeout=60)
    return proc


def test_taking_the_lock_writes_only_an_empty_lock_file_and_the_pid_once_recorded(tmp_path):
    folder = tmp_path / "run"
    with RunDir(folder).ownership.lock() as lock:
        assert sorted(os.listdir(folder)) == [runlock.LOCK] and (folder / runlock.LOCK).stat().st_size == 0
        # the holder has not said who it is: no "process ?", no "kill ?"
        with pytest.raises(
            UsageError,
            match=r"in use by another charlm process \(which has not yet said its id\): wait for it to end or pass",
        ) as refused:
            with RunDir(folder).ownership.lock():
                pass
        assert "?" not in str(refused.value)
        lock.record_pid()
        assert (folder / runlock.HOLDER).read_text() == str(os.getpid())
    assert sorted(os.listdir(folder)) == [runlock.LOCK, runlock.HOLDER]
    RunDir(folder).ownership.check_new()  # the lock's files alone do not make it someone else's folder


def test_is_locked_without_a_lock_file_is_unknown(tmp_path):
    assert RunDir(tmp_path).ownership.is_locked() is None
    with RunDir(tmp_path).ownership.lock():
        assert RunDir(tmp_path).ownership.is_locked() is True
    assert RunDir(tmp_path).ownership.is_locked() is False


def test_a_holder_killed_with_sigkill_leaves_the_lock_free(tmp_path):
    """The OS lock belongs to the open file: a holder killed without any chance to clean up (SIGKILL on POSIX,
    TerminateProcess on Windows) releases it, and the next trainer gets in without anyone deleting a file."""
    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    try:
        assert RunDir(folder).ownership.is_locked() is True
        with pytest.raises(UsageError, match=f"in use by charlm process {holder.pid}: .*kill {holder.pid}"):
            with RunDir(folder).ownership.lock():
                pass
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert (folder / runlock.LOCK).exists()  # left behind, and no obstacle
    assert RunDir(folder).ownership.is_locked() is False
    with RunDir(folder).ownership.lock() as lock:
        lock.record_pid()
    assert (folder / runlock.HOLDER).read_text() == str(os.getpid())


def test_a_holder_file_that_is_not_a_pid_is_not_shown(tmp_path):
    (tmp_path / runlock.HOLDER).write_text("rm -rf /\n")
    assert runlock.holder(tmp_path) == "?"
    (tmp_path / runlock.HOLDER).write_text("4242\n")
    assert runlock.holder(tmp_path) == "4242"


def test_a_lent_lock_lets_this_process_in_only_while_lent(tmp_path):
    """A search holds its run folder's lock and lends it to its winner's trainer; nothing else gets in."""
    folder, other = tmp_path / "run", tmp_path / "other"
    with RunDir(folder).ownership.lock() as lock, RunDir(other).ownership.lock():
        lock.record_pid()
        with runlock.lend(folder):
            with RunDir(folder).ownership.lock() as lent:  # the winner's trainer, inside the search
                lent.record_pid()
            with pytest.raises(UsageError, match="in use by"):  # only the folder lent
                with RunDir(other).ownership.lock():
                    pass
        with pytest.raises(UsageError, match=f"in use by charlm process {os.getpid()}"):
            with RunDir(folder).ownership.lock():
                pass
    assert RunDir(folder).ownership.is_locked() is False
