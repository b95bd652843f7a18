"""benchmarks/vs_compressors.py, run on an untrained run of a repeating text: its row holds the network's figure
as charlm perplexity gives it, the mix below it, the counts alone, and each compressor found as
size(train + split) - size(train)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import lines_run

from charlm.evaluate import TextSource, score_run

pytest.importorskip("pydivsufsort")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_row_holds_the_network_the_counts_the_mix_and_each_compressor_found(tmp_path):
    run = lines_run(tmp_path / "run", lines=300, settings=["data.val_fraction=0.2"])
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "vs_compressors.py"), str(run), "--no-dynamic", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    network, _ = score_run(run, "best", TextSource(split="val"))
    assert row["split"] == "val" and row["lstm"] == pytest.approx(network["bits_per_char"], rel=1e-9)
    assert row["mix"] < 0.5 * row["lstm"] and row["counts"] < row["lstm"]  # four lines: the counts know them
    assert "lstm_dynamic" not in row and 0 < row["index_bytes_vs_corpus"] < 10
    for tool, binary in (("ppmd-o8", "7zz"), ("zpaq-m5", "zpaq"), ("xz-9e", "xz")):
        if shutil.which(binary) is None:
            assert tool not in row["compressors"] and f"{binary} not found" in done.stdout
        else:
            assert 0 < row["compressors"][tool]["bits_per_char"] < 8
    assert "| run | split | LSTM |" in done.stdout
