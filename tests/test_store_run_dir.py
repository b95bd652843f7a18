"""RunDir: a run folder's layout, finding runs, metrics.jsonl, status.json, checkpoint rotation."""

from __future__ import annotations

import json
import os
import sys

import pytest

from charlm.data import Vocab
from charlm.errors import CheckpointError, UsageError
from charlm.store import layout
from charlm.store.run_dir import RunDir


def test_write_run_files(tmp_path):
    vocab = Vocab("分开ab\n")
    RunDir(tmp_path).write_run_files("name: x\n", vocab.to_json())
    assert (tmp_path / layout.CONFIG).read_text(encoding="utf-8") == "name: x\n"
    assert Vocab.from_json((tmp_path / layout.VOCAB).read_text(encoding="utf-8")) == vocab


def test_latest_run_picks_the_newest_last_checkpoint(tmp_path):
    for name, mtime in [("a", 1_000_000), ("b", 3_000_000), ("c", 2_000_000)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / layout.LAST).write_bytes(b"x")
        os.utime(tmp_path / name / layout.LAST, (mtime, mtime))
    (tmp_path / "d").mkdir()  # newer, but has only best.pt: not a candidate
    (tmp_path / "d" / layout.BEST).write_bytes(b"x")
    (tmp_path / "a" / layout.BEST).write_bytes(b"x")  # a newer best.pt does not count either
    assert RunDir.latest(tmp_path).path == tmp_path / "b"
    os.utime(tmp_path / "a" / layout.LAST, (4_000_000, 4_000_000))
    assert RunDir.latest(tmp_path).path == tmp_path / "a"


def test_latest_run_without_runs(tmp_path):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.latest(tmp_path)
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.latest(tmp_path / "missing")


def test_resolve_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.resolve(None)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / layout.LAST).write_bytes(b"x")
    assert RunDir.resolve(None).path.resolve() == (tmp_path / "runs" / "r1").resolve()
    assert RunDir.resolve(tmp_path / "runs" / "r1").path == tmp_path / "runs" / "r1"
    with pytest.raises(CheckpointError, match="not found"):
        RunDir.resolve(tmp_path / "nope")


def test_save_checkpoint_writes_best_then_last_and_rotates_only_old_copies(tmp_path):
    run = RunDir(tmp_path)
    run.save_checkpoint(b"one", is_best=True, keep_last=2, position=(1, 0))
    run.save_checkpoint(b"two", is_best=False, keep_last=2, position=(2, 0))
    run.save_checkpoint(b"three", is_best=False, keep_last=2, position=(2, 5))
    assert (tmp_path / "best.pt").read_bytes() == b"one" and (tmp_path / "last.pt").read_bytes() == b"three"
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-e0002-b000000.pt", "ckpt-e0002-b000005.pt"]


def test_prepare_new_refuses_a_folder_with_a_run(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="already holds a run"):
        RunDir(tmp_path).ownership.prepare_new()


def test_status_by_pid_and_without_a_status_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.status.state() == "empty"
    (tmp_path / "last.pt").write_bytes(b"x")
    assert run.status.state() == "interrupted" and run.status.state(complete=True) == "finished"
    run.status.write("running")
    assert run.status.state() == "running" and run.status.read()["pid"] == os.getpid()
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345}))
    assert run.status.state() == "interrupted"  # that process is gone


def test_status_never_probes_a_pid_with_os_kill_on_windows(tmp_path, monkeypatch):
    """os.kill(pid, 0) ends process pid on Windows. There a running run without a lock file has no trainer
    (filelock removes the file on release), so status says interrupted without asking."""
    (tmp_path / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    assert RunDir(tmp_path).status.state() == "running"  # POSIX: no lock file (an older run), the pid alive
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "kill", lambda *args: pytest.fail(f"os.kill{args} on Windows"))
    assert RunDir(tmp_path).status.state() == "interrupted"


def test_new_run_folders_do_not_collide(tmp_path):
    first = RunDir.new("x", tmp_path)
    first.path.mkdir()
    second = RunDir.new("x", tmp_path)
    assert second.path != first.path and second.path.name.startswith(first.path.name)


def test_checkpoint_names(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoint("best") == tmp_path / "best.pt" and run.checkpoint("last") == tmp_path / "last.pt"
    with pytest.raises(CheckpointError, match="best or last"):
        run.checkpoint("middle")
