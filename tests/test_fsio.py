"""fsio: the one atomic write of a file or a folder."""

from __future__ import annotations

import json
import os

import pytest
import torch

from charlm import checkpoint as ckpt
from charlm import fsio
from charlm.errors import RunError


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "last.pt"
    for i in range(3):  # overwriting too
        ckpt.save_payload(path, {"i": i, "t": torch.ones(100)})
    assert names(tmp_path) == ["last.pt"]
    assert ckpt.load_payload(path)["i"] == 2
    fsio.atomic_write_text(tmp_path / "config.yaml", "name: 分开\n")
    assert names(tmp_path) == ["config.yaml", "last.pt"]
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "name: 分开\n"


def test_atomic_write_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    fsio.atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "best.pt"
    ckpt.save_payload(path, {"v": 1})

    def broken(f):
        f.write(b"half a checkpo")
        raise OSError(28, "No space left on device")

    with pytest.raises(RunError, match="No space left"):
        fsio.atomic_write(path, broken)
    assert names(tmp_path) == ["best.pt"]
    assert ckpt.load_payload(path)["v"] == 1


def test_write_into_a_missing_folder_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="cannot write"):
        fsio.atomic_write_text(tmp_path / "nope" / "config.yaml", "x")


def test_atomic_folder_publishes_all_or_nothing(tmp_path):
    target = tmp_path / "cache" / "entry"
    with fsio.atomic_folder(target) as tmp:
        (tmp / "a.ids").write_bytes(b"123")
        assert not target.exists()  # nothing is visible before the block ends
    assert names(target) == ["a.ids"] and names(target.parent) == ["entry"]
    with pytest.raises(RuntimeError), fsio.atomic_folder(tmp_path / "cache" / "other") as tmp:
        (tmp / "b.ids").write_bytes(b"4")
        raise RuntimeError("failed while filling it")
    assert names(tmp_path / "cache") == ["entry"]  # no half folder, no temp folder


def test_atomic_folder_keeps_a_copy_published_first(tmp_path):
    target = tmp_path / "entry"
    with fsio.atomic_folder(target) as tmp:
        (tmp / "x").write_text("ours")
        target.mkdir()  # another process wins the race
        (target / "x").write_text("theirs")
    assert (target / "x").read_text() == "theirs" and names(tmp_path) == ["entry"]


def test_atomic_folder_files_get_normal_permissions(tmp_path):
    umask = fsio.current_umask()
    with fsio.atomic_folder(tmp_path / "entry") as tmp:
        (tmp / "x").write_bytes(b"1")
    assert (tmp_path / "entry").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "entry" / "x").stat().st_mode & 0o777 == 0o666 & ~umask


def test_remove_stale_temp_files_leaves_published_files(tmp_path):
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "last.pt").write_bytes(b"whole")
    fsio.remove_stale_temp_files(tmp_path)
    assert names(tmp_path) == ["last.pt"]


def test_append_line_writes_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    fsio.append_line(path, {"epoch": 1, "sample": "分开"})
    fsio.append_line(path, {"epoch": 2, "loss": 1.5})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "sample": "分开"}, {"epoch": 2, "loss": 1.5}]
    assert "分开" in lines[0]
