"""benchmarks/time_to_loss.py: the val loss at given training times and the time to reach a target."""

from __future__ import annotations

from pathlib import Path

from time_to_loss import checkpoints, describe, summarize_run

from charlm.config import load_config
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[2]
EVALS = [
    {"train_seconds": 15.2, "val_loss": 1.80},
    {"train_seconds": 30.1, "val_loss": 1.60},
    {"train_seconds": 45.0, "val_loss": 1.54},
    {"train_seconds": 60.3, "val_loss": 1.56},
    {"train_seconds": 150.0, "val_loss": 1.50},
]


def test_the_first_eval_at_or_after_each_mark_and_the_first_at_or_below_each_target():
    points = checkpoints(EVALS, [30, 60, 150, 200], [1.55, 1.47])
    assert points["val_at"] == {
        "30": {"val_loss": 1.60, "train_seconds": 30.1},
        "60": {"val_loss": 1.56, "train_seconds": 60.3},
        "150": {"val_loss": 1.50, "train_seconds": 150.0},
        "200": None,
    }
    assert points["time_to"] == {"1.55": 45.0, "1.47": None}
    assert points["best"] == {"val_loss": 1.50, "train_seconds": 150.0}
    line = describe("lstm", points)
    assert "1.6000 at 30 s" in line and "1.55 at 45.0 s" in line and "1.47 not reached" in line


def test_a_charlm_run_folder_gives_the_same_checkpoints_as_its_metrics(tmp_path, write_text):
    corpus = write_text("to be or not to be, that is the question\n" * 60)
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.corpus={corpus}",
            "data.max_chars=null",
            "train.device=cpu",
            "sample.preview_every=0",
            "train.epochs=2",
            "train.eval_every_seconds=1e-9",
            "data.test_fraction=0.1",
        ],
    )
    summary = train(config, tmp_path / "run")
    result = summarize_run(tmp_path / "run", [0.0], [100.0])
    assert [e["val_loss"] for e in result["evals"]] == summary.losses
    assert result["checkpoints"]["val_at"]["0"]["val_loss"] == summary.losses[0]
    assert result["checkpoints"]["best"]["val_loss"] == summary.best_loss
    assert result["test_bpc"] == summary.final["test_bpc"] and result["model"] == "charlm gru 1x64"
