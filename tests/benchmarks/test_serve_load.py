"""benchmarks/serve_load.py for a second per step on a tiny run: it starts the server, loads it and reports
every figure, with every answer complete (no timing is asserted: the machine running the suite is busy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import charlm

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", [[], ["--openai"]], ids=["native", "openai"])
@pytest.mark.slow
def test_the_load_test_reports_each_number_of_clients(tmp_path, mode):
    settings = ["data.corpus=timemachine", "data.max_chars=5000", "train.epochs=1", "sample.preview_every=0"]
    run = charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), tmp_path / "run").run_dir
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--run-dir", str(run), "--seconds", "1"]
        + ["--clients", "1,4", "--length", "20", "--json", str(out), *mode],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(done.stdout) == result
    assert [row["clients"] for row in result["rows"]] == [1, 4]
    for row in result["rows"]:
        assert row["complete"] >= 1 and row["failed"] == 0
        assert row["chars_per_s"] > 0 and row["p50_s"] <= row["p99_s"]
    assert result["ratio"] > 0 and result["model"]["kind"] == "gru"
    if mode:  # the SDK's streamed answers, and the time to each one's first character
        assert result["route"].startswith("/v1/completions")
        assert all(0 < row["first_char_p50_s"] <= row["first_char_p99_s"] for row in result["rows"])
