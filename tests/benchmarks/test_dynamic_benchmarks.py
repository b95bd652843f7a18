"""benchmarks/dynamic_eval.py and benchmarks/dynamic_tune_then_score.py, run tiny on an untrained run: their rows
hold what dynamic evaluation measured (lr 0 rows aside, the static figures agree with charlm's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import save_untrained_run

from charlm.dynamic import tuning

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_dynamic_eval_reports_both_methods_side_by_side(tmp_path):
    run = save_untrained_run(tmp_path / "run", "timemachine", ["train.precision=fp32", "data.max_chars=30000"])
    script("dynamic_eval.py", str(run), "--max-chars", "2000", "--json", str(tmp_path / "out.json"))
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["sgd", "rms"]
    for r in rows:
        assert r["chars"] == 2000 and r["static_bpc"] > 0 and r["dynamic_seconds"] > 0
        assert abs(r["gain_bpc"] - (r["static_bpc"] - r["dynamic_bpc"])) < 1e-9


@pytest.mark.slow
def test_tune_then_score_chooses_the_best_of_each_grid(tmp_path):
    run = save_untrained_run(tmp_path / "run", "timemachine", ["train.precision=fp32", "data.max_chars=30000"])
    out = tmp_path / "out.json"
    script(
        "dynamic_tune_then_score.py",
        str(run),
        "--tune-chars",
        "1500",
        "--split",
        "val",
        "--chars",
        "2000",
        "--json",
        str(out),
    )
    result = json.loads(out.read_text())
    for method in ("sgd", "rms"):
        grid = result[f"{method}_grid"]
        assert len(grid) == len(tuning.GRID[method][0]) * len(tuning.GRID[method][1])
        best = min(grid, key=lambda g: g["nats_per_char"])
        assert (result["scored"][method]["lr"], result["scored"][method]["decay"]) == (best["lr"], best["decay"])
    assert result["scored"]["chars"] == 2000
