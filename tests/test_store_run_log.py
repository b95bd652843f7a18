"""run.metrics (metrics.jsonl) and run.status (status.json): read back defensively, the run's state."""

from __future__ import annotations

import json
import os
import sys

import pytest

from charlm.store.run_dir import RunDir
from charlm.store.run_log import DamagedFile, MetricsLog


def test_metrics_append_read_and_rewrite_skipping_what_is_not_a_record(tmp_path):
    log = MetricsLog(tmp_path)
    log.append({"epoch": 1, "train_loss": 2.5})
    log.append({"event": "resume"})
    with open(log.path, "a", encoding="utf-8") as f:
        f.write('{"epoch": "one", "train_loss": 1}\n{"cut short')
    assert log.read_counted() == ([{"epoch": 1, "train_loss": 2.5}, {"event": "resume"}], 2)
    log.rewrite([{"epoch": 2, "train_loss": 1.5}])
    assert log.read() == [{"epoch": 2, "train_loss": 1.5}]


def test_a_metrics_file_that_is_a_folder_is_damaged(tmp_path):
    MetricsLog(tmp_path).path.mkdir()
    with pytest.raises(DamagedFile, match="metrics.jsonl is damaged"):
        MetricsLog(tmp_path).read()


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
