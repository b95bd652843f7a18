"""fsio: the one atomic write of a file or a folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charlm.errors import RunError
from charlm.files import fsio
from charlm.files.interrupts import Interrupted
from charlm.store import checkpoint as ckpt


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


def test_temps_are_named_by_process_and_machine(tmp_path):
    seen = []
    fsio.atomic_write(tmp_path / "page.html", lambda f: seen.extend(os.listdir(tmp_path)))
    with fsio.atomic_folder(tmp_path / "model") as tmp:
        seen.append(tmp.name)
    for name in seen:
        found = fsio.TEMP_NAME.match(name)
        assert found and int(found.group(1)) == os.getpid() and found.group(2) == fsio.host_tag()
    assert seen[0].endswith(".tmp") and "page.html" in seen[0] and "model" in seen[1]
    assert fsio.temp_prefix("x" * 300).count("x") == 80  # a long name is cut: the temp's name stays valid


def test_a_stop_signal_during_a_file_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("old")

    def killed(f):
        f.write(b"half a pa")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, in the middle of the write

    with pytest.raises(Interrupted) as caught:
        fsio.atomic_write(path, killed)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert names(tmp_path) == ["page.html"] and path.read_text() == "old"


@pytest.mark.parametrize("exclusive", [False, True])
def test_a_stop_signal_during_a_folder_write_leaves_nothing(tmp_path, exclusive):
    with pytest.raises(Interrupted), fsio.atomic_folder(tmp_path / "model", exclusive=exclusive) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGINT)
    assert names(tmp_path) == []


def test_an_exclusive_folder_replaces_an_empty_one_and_refuses_a_full_one(tmp_path):
    (tmp_path / "empty").mkdir()
    with fsio.atomic_folder(tmp_path / "empty", exclusive=True) as tmp:
        (tmp / "x").write_text("ours")
    assert (tmp_path / "empty" / "x").read_text() == "ours"
    with pytest.raises(OSError), fsio.atomic_folder(tmp_path / "full", exclusive=True) as tmp:
        (tmp / "x").write_text("ours")
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "y").write_text("theirs")  # appeared meanwhile: kept, ours dropped
    assert names(tmp_path) == ["empty", "full"] and names(tmp_path / "full") == ["y"]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(folder, pid: int, host: str | None = None) -> list:
    """A temp folder (with a file in it) and a temp file, named as charlm names them, by process `pid`."""
    host = host or fsio.host_tag()
    made = [folder / f".charlm-tmp-{pid}-{host}-model.a1b2c3", folder / f".charlm-tmp-{pid}-{host}-page.html.x9.tmp"]
    made[0].mkdir()
    (made[0] / "model.safetensors").write_bytes(b"x" * 100)
    made[1].write_bytes(b"half")
    return made


def test_what_a_dead_process_left_is_stale_and_the_next_write_removes_it(tmp_path):
    dead = leftovers(tmp_path, dead_pid())
    mine = leftovers(tmp_path, os.getpid())  # a write in progress (this process): never touched
    assert fsio.pid_alive(os.getpid()) is True
    assert fsio.stale_temps(tmp_path) == sorted(dead)
    fsio.atomic_write_text(tmp_path / "page.html", "new")
    assert names(tmp_path) == sorted(["page.html", *(p.name for p in mine)])
    for path in mine:
        os.utime(path, (time.time() - fsio.STALE_AFTER - 60,) * 2)  # a pid alive but reused, long after
    assert fsio.stale_temps(tmp_path) == sorted(mine)
    with fsio.atomic_folder(tmp_path / "model"):
        pass
    assert names(tmp_path) == ["model", "page.html"]


def test_another_machines_temps_wait_for_their_age_and_others_files_are_never_touched(tmp_path):
    other = leftovers(tmp_path, dead_pid(), host="0123abcd" if fsio.host_tag() != "0123abcd" else "fedc4321")
    strangers = [".charlm-tmp-notes.txt", ".charlm-tmp-12-nothex00-x", ".page.html.abc.tmp", "charlm-tmp-1-00000000-x"]
    for name in strangers:
        (tmp_path / name).write_text("not charlm's")
        os.utime(tmp_path / name, (time.time() - fsio.STALE_AFTER - 60,) * 2)
    assert fsio.stale_temps(tmp_path) == []  # its pid means nothing here: only age tells
    for path in other:
        os.utime(path, (time.time() - fsio.STALE_AFTER - 60,) * 2)
    assert fsio.remove_stale_temps(tmp_path) == sorted(other)
    assert names(tmp_path) == sorted(strangers)


def test_pid_alive_is_not_asked_on_windows(monkeypatch):
    assert fsio.pid_alive(dead_pid()) is False
    assert fsio.pid_alive(-1) is None and fsio.pid_alive(2**40) is False
    monkeypatch.setattr(sys, "platform", "win32")  # os.kill(pid, 0) would end the process there
    assert fsio.pid_alive(os.getpid()) is None


def test_append_line_writes_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    fsio.append_line(path, {"epoch": 1, "sample": "分开"})
    fsio.append_line(path, {"epoch": 2, "loss": 1.5})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "sample": "分开"}, {"epoch": 2, "loss": 1.5}]
    assert "分开" in lines[0]


def test_a_signal_a_writer_caught_and_dropped_still_keeps_the_old_file(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("old")

    def swallowing(f):
        f.write(b"half")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:
            pass  # a library that catches everything and goes on
        f.write(b" and the rest")

    with pytest.raises(Interrupted):
        fsio.atomic_write(path, swallowing)
    assert names(tmp_path) == ["page.html"] and path.read_text() == "old"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_a_filler_caught_and_dropped_publishes_nothing(tmp_path, signum):
    with pytest.raises(Interrupted), fsio.atomic_folder(tmp_path / "onnx", exclusive=True) as tmp:
        (tmp / "model.onnx").write_bytes(b"x" * 100)
        try:
            os.kill(os.getpid(), signum)
        except BaseException:
            pass
        (tmp / "onnx.json").write_text("{}")
    assert names(tmp_path) == []
