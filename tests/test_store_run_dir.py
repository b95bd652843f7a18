"""RunDir: finding runs, the run files, checkpoints and their rotation; run.metrics/status/ownership reach
the other two parts (test_store_run_log.py, test_store_ownership.py)."""

from __future__ import annotations

import os

import pytest

from charlm.data import Vocab
from charlm.errors import CheckpointError
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


def test_a_run_reaches_its_logs_and_its_ownership(tmp_path):
    run = RunDir(tmp_path)
    run.ownership.prepare_new()
    run.ownership.mark()
    run.metrics.append({"epoch": 1, "train_loss": 2.0})
    run.status.write("finished")
    assert run.ownership.is_marked() and run.metrics.read() == [{"epoch": 1, "train_loss": 2.0}]
    assert run.status.read()["state"] == "finished" and (tmp_path / layout.STATUS).exists()
