"""benchmarks/autosize_sweep.py in its smoke mode: shape, default and auto arms, recorded once, and its tables."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def sweep(*args: str, data: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "autosize_sweep.py"),
            *args,
            "--smoke",
            "--out",
            str(out),
            "--data",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CHARLM_DATA_DIR": str(data), "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.slow
def test_the_smoke_sweep_records_each_arm_once_and_compares_auto(builtin_cache, tmp_path):
    out, cache = tmp_path / "sweep.jsonl", tmp_path / "cache"
    first = sweep("sweep", "--only", "shakespeare-1x384,default-timemachine", data=builtin_cache, out=out, cache=cache)
    assert first.returncode == 0, first.stderr
    table = sweep("table", "--only", "auto-timemachine,default-timemachine", data=builtin_cache, out=out, cache=cache)
    assert table.returncode == 0, table.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["shakespeare-1x384@2s", "default-timemachine@2s", "auto-timemachine@2s"]
    assert all(math.isfinite(r["val_loss"]) and r["train_seconds"] >= 2 for r in rows)
    assert rows[2]["plan"].startswith("LSTM 1x")  # the auto arm keeps the plan's why
    assert "auto-timemachine@2s: val" in table.stdout
    assert "default-timemachine@2s: val" not in table.stdout  # recorded arms are not run again
    assert "| timemachine | 2s | 1x" in table.stdout and "| shakespeare-1x384 |" in table.stdout
    assert "| default-timemachine |" not in table.stdout  # the sweep's table lists its shapes alone
