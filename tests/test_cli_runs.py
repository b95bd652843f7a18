"""Seeing runs: the runs table, run info, the loss plot, run states, the summary panel, TensorBoard."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from charlm.cli.main import main
from charlm.config import load_config
from charlm.events import SilentReporter
from charlm.store import run_info as runs
from charlm.store.run_dir import RunDir
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]


def corpus(path: Path) -> Path:
    path.write_text(
        "".join("分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" for _ in range(40)),
        encoding="utf-8",
    )
    return path


def config(tmp_path: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.corpus={corpus(tmp_path / 'corpus.txt')}", "train.device=cpu", "sample.preview_every=0", *overrides],
    )


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    """runs/a finished (3 epochs), runs/b interrupted by a crash in epoch 2; cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    train(config(tmp_path, "train.epochs=3"), Path("runs/a"))

    class Crash(SilentReporter):
        def epoch_start(self, epoch, num_batches, done=0):
            if epoch == 2:
                raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        train(config(tmp_path, "train.epochs=3", "model.kind=lstm"), Path("runs/b"), Crash())
    return tmp_path


def test_states_finished_interrupted_and_killed(two_runs):
    assert RunDir(Path("runs/a")).status.state() == "finished"
    assert RunDir(Path("runs/b")).status.state() == "interrupted"
    status = Path("runs/a/status.json")
    status.write_text(json.dumps({"state": "running", "pid": os.getpid()}))
    with RunDir(Path("runs/a")).ownership.lock():  # a live trainer holds the folder's lock
        assert RunDir(Path("runs/a")).status.state() == "running"
    status.write_text(json.dumps({"state": "running", "pid": 2**22 + 12345}))  # no such process: killed
    assert RunDir(Path("runs/a")).status.state() == "interrupted"


def test_runs_table_lists_each_run_with_its_best_val_ppl(two_runs, capsys, monkeypatch):
    from rich.console import Console

    import charlm.cli.app

    monkeypatch.setattr(charlm.cli.app, "out", Console(width=200, highlight=False))  # a wide terminal
    assert main(["runs"]) == 0
    table = capsys.readouterr().out
    best = min(r["val_ppl"] for r in map(json.loads, Path("runs/a/metrics.jsonl").read_text().splitlines()))
    row_a = next(line for line in table.splitlines() if "│ a " in line)
    row_b = next(line for line in table.splitlines() if "│ b " in line)
    assert f"{best:.3f}" in row_a and "3/3" in row_a and "finished" in row_a and "gru 1x64" in row_a
    assert "interrupted" in row_b and "1/3" in row_b and "lstm 1x64" in row_b


def test_info_prints_parameter_count_vocab_and_files(two_runs, capsys):
    from charlm.store.checkpoint import load_model

    model, vocab, _ = load_model(RunDir(Path("runs/a")).checkpoint("best"))
    assert main(["info", "--run-dir", "runs/a"]) == 0
    text = capsys.readouterr().out
    assert f"parameters: {model.num_parameters():,}" in text
    assert f"vocabulary: {len(vocab):,} characters" in text
    assert "last.pt" in text and "metrics.jsonl" in text and "finished, trained on cpu" in text


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib: pip install charlm[plot]")
def test_plot_is_a_png_drawn_from_the_metrics(two_runs, monkeypatch):
    from charlm.ui import plot

    drawn = {}
    real = plot.plot_runs

    def spy(run_dirs, out, **options):
        figure = real(run_dirs, out, **options)
        drawn["figure"] = figure
        return figure

    monkeypatch.setattr(plot, "plot_runs", spy)
    assert main(["plot", "--run-dir", "runs/a", "--run-dir", "runs/b", "--out", "both.png"]) == 0
    data = Path("both.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 2_000_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 300
    by_epoch = drawn["figure"].axes[0]
    lines = {line.get_label(): line for line in by_epoch.get_lines()}
    train_a = next(line for label, line in lines.items() if label.startswith("a ") and label.endswith("train"))
    assert list(train_a.get_xdata()) == [1, 2, 3]  # one point per epoch of run a
    records = [json.loads(x) for x in Path("runs/a/metrics.jsonl").read_text().splitlines()]
    assert list(train_a.get_ydata()) == [r["train_loss"] for r in records]
    assert any(label.startswith("best val") for label in lines)
    assert "tiny" not in drawn["figure"].get_suptitle() and "gru 1x64" in drawn["figure"].get_suptitle()


def test_plot_without_matplotlib_is_one_clear_line(two_runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["plot", "--run-dir", "runs/a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'charlm[plot]'" in err


def test_summary_panel_at_the_end_of_train(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                str(REPO / "configs" / "tiny.yaml"),
                "--corpus",
                str(corpus(tmp_path / "c.txt")),
                "--run-dir",
                str(tmp_path / "run"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "charlm train: done" in text and "best val perplexity" in text and "chars/s" in text
    assert str(tmp_path / "run") in text
    spark = next(line for line in text.splitlines() if "val loss by epoch" in line)
    assert sum(c in runs.SPARKS for c in spark) == 3  # one mark per epoch


def test_sparkline_maps_range_to_blocks():
    assert runs.sparkline([8.0, 1.0, 5.0, 2.0]) == "█▁▅▂"
    assert runs.sparkline([]) == ""


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs the tensorboard package")
def test_tensorboard_scalars_go_to_tb(tmp_path):
    train(config(tmp_path, "train.epochs=2", "log.tensorboard=true"), tmp_path / "run")
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    from charlm.errors import UsageError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match="pip install tensorboard"):
        train(config(tmp_path, "log.tensorboard=true"), tmp_path / "run")


def test_an_unexpected_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def boom(root):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runs, "list_runs", boom)
    monkeypatch.delenv("CHARLM_DEBUG", raising=False)
    assert main(["runs"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: disk on fire" in err and "CHARLM_DEBUG" in err
