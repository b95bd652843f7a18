"""What charlm promises about a run folder: it writes only where it may, one trainer at a time, checkpoints
that prove they are whole, and bookkeeping that degrades instead of failing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from charlm.cli.main import main
from charlm.config import load_config
from charlm.errors import CheckpointError, UsageError
from charlm.events import SilentReporter
from charlm.store import checkpoint as ckpt
from charlm.store.checkpoint import load_payload
from charlm.store.run_dir import RunDir
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("single_thread")


def config(tmp_path: Path, *overrides: str):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 40, encoding="utf-8")
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", "train.epochs=2", *overrides],
    )


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Warnings(SilentReporter):
    def __init__(self):
        self.messages = []

    def warn(self, message):
        self.messages.append(message)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run with two kept checkpoints; tests copy it before damaging anything."""
    root = tmp_path_factory.mktemp("finished")
    train(config(root, "train.keep_last=2"), root / "run")
    return root


def copy_run(finished: Path, tmp_path: Path) -> Path:
    shutil.copy(finished / "corpus.txt", tmp_path / "corpus.txt")
    return Path(shutil.copytree(finished / "run", tmp_path / "run"))


# --- a folder charlm owns --------------------------------------------------------------------------


def test_a_folder_with_someone_elses_files_is_refused_and_left_byte_for_byte(tmp_path):
    folder = tmp_path / "theirs"
    folder.mkdir()
    for name, content in (
        ("config.yaml", b"mine"),
        ("best.pt", b"weights"),
        ("metrics.jsonl", b"{}\n"),
        ("status.json", b"{}"),
        ("ckpt-e0001-b000001.pt", b"x"),
    ):
        (folder / name).write_bytes(content)
    before = snapshot(folder)
    with pytest.raises(UsageError, match="holds files charlm did not write"):
        train(config(tmp_path), folder)
    assert snapshot(folder) == before and sorted(os.listdir(folder)) == sorted(str(p) for p in before)


def test_a_run_whose_last_checkpoint_was_deleted_is_not_restarted(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "last.pt").unlink()
    before = snapshot(run_dir)
    with pytest.raises(UsageError, match="--resume-from best"):
        train(config(tmp_path), run_dir)
    assert snapshot(run_dir) == before  # its best model and metrics are intact
    summary = train(config(tmp_path, "train.epochs=3"), run_dir, resume=True, resume_from="best")
    assert summary.epochs_run == 3 and (run_dir / "last.pt").exists()


@pytest.mark.parametrize("where", ["/", "home", "cwd"])
def test_the_root_home_and_working_folders_are_refused(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    folder = {"/": Path("/"), "home": Path.home(), "cwd": Path(".")}[where]
    with pytest.raises(UsageError, match="pass a new folder"):
        train(config(tmp_path), folder)


def test_rotation_deletes_only_checkpoints_the_run_wrote(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "ckpt-e0000-b000001.pt").write_bytes(b"someone's file, named like ours")
    train(config(tmp_path, "train.keep_last=2", "train.epochs=4"), run_dir, resume=True)
    kept = sorted(p.name for p in run_dir.glob("ckpt-*.pt"))
    assert kept == ["ckpt-e0000-b000001.pt", "ckpt-e0003-b000000.pt", "ckpt-e0004-b000000.pt"]


# --- one trainer per folder ------------------------------------------------------------------------


def test_a_second_trainer_is_refused_naming_the_holder_and_readers_still_work(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    with RunDir(run_dir).ownership.lock() as lock:
        lock.record_pid()
        with pytest.raises(UsageError, match=f"in use by charlm process {os.getpid()}"):
            train(config(tmp_path, "train.epochs=3"), run_dir, resume=True)
        for argv in (
            ["generate", "-r", str(run_dir), "--prefix", "分开", "-n", "5"],
            ["info", "-r", str(run_dir)],
            ["perplexity", "-r", str(run_dir)],
            ["runs", "--root", str(tmp_path)],
        ):
            assert main(argv) == 0, argv
        assert RunDir(run_dir).ownership.is_locked()
    assert RunDir(run_dir).ownership.is_locked() is False


def test_status_running_without_the_lock_is_interrupted_even_if_the_pid_is_alive(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "status.json").write_text(json.dumps({"state": "running", "pid": 1}))  # pid 1 is alive
    assert RunDir(run_dir).status.state() == "interrupted"
    with RunDir(run_dir).ownership.lock():
        assert RunDir(run_dir).status.state() == "running"


# --- verified checkpoints ----------------------------------------------------------------------------


def flip_weights(path: Path, count: int = 64) -> None:
    """Flip `count` bytes inside the stored bytes of the largest tensor."""
    raw = bytearray(path.read_bytes())
    weights = max(load_payload(path)["model"].values(), key=lambda t: t.numel())
    at = raw.find(weights.contiguous().view(torch.uint8).numpy().tobytes()[:256])
    assert at > 0
    for i in range(at + 100, at + 100 + count):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_are_caught_and_the_intact_checkpoint_is_named(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    flip_weights(run_dir / "best.pt")
    with pytest.raises(CheckpointError, match="best.pt is damaged"):
        ckpt.load(run_dir / "best.pt")
    assert main(["perplexity", "-r", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.pt is damaged" in err and "use --checkpoint last" in err
    assert main(["generate", "-r", str(run_dir), "--prefix", "分开", "--checkpoint", "last", "-n", "5"]) == 0
    capsys.readouterr()
    assert main(["info", "-r", str(run_dir)]) == 0  # info reads no weights, but checks their bytes
    assert "best.pt is damaged" in capsys.readouterr().err


def test_resume_falls_back_to_the_newest_intact_checkpoint(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    flip_weights(run_dir / "last.pt")
    reporter = Warnings()
    summary = train(config(tmp_path, "train.epochs=3", "train.keep_last=2"), run_dir, reporter, resume=True)
    assert summary.epochs_run == 3
    assert any("last.pt is damaged" in m and "resuming from ckpt-e0002-b000000.pt" in m for m in reporter.messages)


def test_a_folder_or_unreadable_file_as_checkpoint_is_named_for_what_it_is(tmp_path, monkeypatch):
    (tmp_path / "last.pt").mkdir()
    with pytest.raises(CheckpointError, match="not a regular file"):
        ckpt.load(tmp_path / "last.pt")
    (tmp_path / "best.pt").write_bytes(b"x")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .* fix its permissions"):
        ckpt.load(tmp_path / "best.pt")


# --- bookkeeping that degrades ---------------------------------------------------------------------


def test_foreign_and_undecodable_metrics_lines_are_skipped_with_a_count(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b'\xff\xfe not utf-8\n{"someone": "else"}\n[1, 2]\n')
    reporter = Warnings()
    train(config(tmp_path, "train.epochs=3"), run_dir, reporter, resume=True)
    assert any("skipped 3 line(s)" in m for m in reporter.messages)
    assert [r["epoch"] for r in RunDir(run_dir).metrics.read() if "event" not in r] == [1, 2, 3]
    assert main(["info", "-r", str(run_dir)]) == 0


def test_damaged_status_config_or_metrics_show_as_damaged_and_others_still_list(
    finished, tmp_path, capsys, monkeypatch
):
    from rich.console import Console

    import charlm.cli.app

    monkeypatch.setattr(charlm.cli.app, "out", Console(width=200, highlight=False))  # a wide terminal
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copy(finished / "corpus.txt", tmp_path / "corpus.txt")
    for name in ("good", "status", "config", "metrics"):
        shutil.copytree(finished / "run", root / name)
    (root / "status" / "status.json").write_bytes(b"\x00garbage")
    (root / "config" / "config.yaml").write_text("train: [unclosed\n")
    (root / "metrics" / "metrics.jsonl").unlink()
    (root / "metrics" / "metrics.jsonl").mkdir()
    capsys.readouterr()
    assert main(["runs", "--root", str(root)]) == 0
    captured = capsys.readouterr()
    rows = {line.split("│")[1].strip(): line for line in captured.out.splitlines() if line.count("│") > 4}
    assert set(rows) == {"good", "status", "config", "metrics"}
    assert "finished" in rows["good"] and all("damaged" in rows[n] for n in ("status", "config", "metrics"))
    assert "status.json is damaged" in captured.err and "config.yaml is damaged" in captured.err
    for name in ("status", "config", "metrics"):
        assert main(["info", "-r", str(root / name)]) == 0
        assert "is damaged" in capsys.readouterr().err


# --- bookkeeping files read back -------------------------------------------------------------------

STATUS_TAMPERING = [
    '{"state": "running", "pid": "123"}',
    '{"state": "running", "pid": -5}',
    '{"state": "running", "pid": true}',
    '{"state": "hacked"}',
    '{"state": ["finished"]}',
    '{"state": "finished", "best": NaN}',
    '["finished"]',
    '"finished"',
    "deep",
    "fifo",
    "dev-zero",
    "huge",
]
METRICS_LINES = [
    '{"epoch": 1, "train_loss": "2.5"}',
    '{"epoch": "1", "train_loss": 2.5}',
    '{"epoch": 1, "train_loss": 2.5, "epochs_done": "x"}',
    '{"epoch": 1, "train_loss": 2.5, "lr": null}',
    '{"epoch": 1, "train_loss": 2.5, "stopped": 7}',
    '{"epoch": 1}',
    '{"epoch": true, "train_loss": 1}',
    '{"event": "init_from"}',
    '{"event": "init_from", "path": 5, "checkpoint": "best"}',
    '{"event": 3}',
    '{"epoch": 1, "train_loss": 2.5, "val_loss": [1]}',
]


def damage(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path)  # `runs` would wait for a writer forever if it opened it plainly
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "huge":
        with open(path, "wb") as f:
            f.truncate(300 * 1024 * 1024)  # sparse: over every bookkeeping limit, costs no disk
    elif how == "deep":
        path.write_text("[" * 50_000 + "]" * 50_000)  # deeper than Python's JSON parser survives
    else:
        path.write_text(how, encoding="utf-8")


@pytest.mark.parametrize("how", STATUS_TAMPERING)
def test_a_tampered_status_json_shows_the_run_as_damaged(finished, tmp_path, capsys, how):
    if how in ("fifo", "dev-zero") and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs and /dev/zero are POSIX")
    run_dir = copy_run(finished, tmp_path)
    damage(run_dir / "status.json", how)
    assert RunDir(run_dir).status.state() == "damaged"
    capsys.readouterr()
    assert main(["runs", "--root", str(tmp_path)]) == 0 and main(["info", "-r", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "status.json is damaged" in err and "unexpected" not in err


@pytest.mark.parametrize("how", ["fifo", "dev-zero", "huge"])
def test_metrics_jsonl_that_is_not_a_bounded_file_shows_as_damaged_without_hanging(finished, tmp_path, capsys, how):
    if how in ("fifo", "dev-zero") and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs and /dev/zero are POSIX")
    run_dir = copy_run(finished, tmp_path)
    damage(run_dir / "metrics.jsonl", how)
    capsys.readouterr()
    assert main(["info", "-r", str(run_dir)]) == 0
    assert "metrics.jsonl is damaged" in capsys.readouterr().err


def test_metrics_lines_with_fields_of_the_wrong_type_are_skipped_and_counted(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in METRICS_LINES))
    records, skipped = RunDir(run_dir).metrics.read_counted()
    assert skipped == len(METRICS_LINES) and [r["epoch"] for r in records if "event" not in r] == [1, 2]
    capsys.readouterr()
    for argv in (["info", "-r", str(run_dir)], ["runs", "--root", str(tmp_path)]):
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(METRICS_LINES)} line(s)" in err and "unexpected" not in err


@pytest.mark.parametrize(
    "text",
    [
        '{"chars": [1, 2]}',
        '{"chars": ["ab"]}',
        '{"chars": ["a", "\\ud800"]}',
        "[]",
        '{"chars": ["a", "a"]}',
        "not json",
    ],
)
def test_info_with_a_damaged_vocab_json_says_so_and_shows_the_checkpoints(finished, tmp_path, capsys, text):
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "vocab.json").write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["info", "-r", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "vocab.json is damaged" in captured.err and "the vocabulary shown is last.pt's" in captured.err
    assert "vocabulary: " in captured.out


@pytest.mark.parametrize(
    "kept",
    [
        ["../victim.txt"],
        ["/VICTIM"],
        ["ckpt-e0001-b000000.pt/../../victim.txt"],
        ["..", "ckpt-e0001-b000000.pt"],
        "victim.txt",
        [3, None],
    ],
)
def test_run_json_can_never_make_a_checkpoint_rotation_delete_another_file(finished, tmp_path, kept):
    run_dir = copy_run(finished, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    marker = json.loads((run_dir / "run.json").read_text())
    names = [str(victim) if k == "/VICTIM" else k for k in kept] if isinstance(kept, list) else kept
    (run_dir / "run.json").write_text(json.dumps({**marker, "kept": names}))
    RunDir(run_dir).save_checkpoint(b"data", False, keep_last=1, position=(9, 0))
    assert victim.read_text() == "mine" and (run_dir / "ckpt-e0009-b000000.pt").is_file()
    assert json.loads((run_dir / "run.json").read_text())["kept"] == ["ckpt-e0009-b000000.pt"]
