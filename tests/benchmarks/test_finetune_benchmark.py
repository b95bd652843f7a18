"""benchmarks/finetune.py in its smoke mode: four runs, the fine-tuned one grown from the pretrained one."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_smoke_run_measures_four_arms(builtin_cache, tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "finetune.py"),
            "--smoke",
            "--json",
            str(out),
            "--work",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CHARLM_DATA_DIR": str(builtin_cache), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert list(runs) == ["pretrain", "fine-tune", "scratch", "scratch, 2x time"]
    assert all(math.isfinite(r["best_val_loss"]) and r["train_seconds"] >= r["budget_s"] for r in runs.values())
    assert runs["fine-tune"]["new_chars"] > 0 and runs["scratch"]["new_chars"] is None  # timemachine adds characters
    assert [r["corpus"] for r in runs.values()] == ["tinyshakespeare"] + ["timemachine"] * 3
    assert "| fine-tune on timemachine from it | timemachine |" in result.stdout
