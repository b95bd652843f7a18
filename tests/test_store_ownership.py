"""run.ownership: the marker that makes a folder charlm's, the check that a new run may use a folder, the lock."""

from __future__ import annotations

import json

import pytest

from charlm.errors import UsageError
from charlm.store.layout import MARKER
from charlm.store.run_dir import RunDir


def test_prepare_new_refuses_a_folder_with_a_run(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(UsageError, match="already holds a run"):
        RunDir(tmp_path).ownership.prepare_new()


def test_the_marker_keeps_only_checkpoint_names(tmp_path):
    ownership = RunDir(tmp_path).ownership
    ownership.mark()
    ownership.update_marker(kept=["ckpt-e0001-b000000.pt", "../../etc/passwd", 3])
    assert ownership.is_marked() and ownership.marker()["kept"] == ["ckpt-e0001-b000000.pt"]
    assert json.loads((tmp_path / MARKER).read_text())["format"] == "charlm-run"


def test_an_unmarked_folder_with_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="files charlm did not write"):
        RunDir(tmp_path).ownership.check_new()
