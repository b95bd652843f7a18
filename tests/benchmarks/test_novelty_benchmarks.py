"""benchmarks/novelty_index.py and benchmarks/novelty_report.py, run tiny: their tables hold what was measured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import save_untrained_run

from charlm.config import DataConfig
from charlm.data import load_corpus

pytest.importorskip("pydivsufsort")
REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args: str, tmp_path: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_index_benchmark_measures_each_corpus_and_a_synthetic_text(tmp_path):
    lines = script("novelty_index.py", "timemachine", "--synthetic-mb", "0.2", tmp_path=tmp_path)
    assert lines[0].split()[:3] == ["corpus", "train", "chars"] and len(lines) == 3
    name, chars, *_, per_char, _, _ = lines[1].split()
    assert name == "timemachine" and int(chars.replace(",", "")) == len(load_corpus(DataConfig("timemachine")).train)
    assert per_char == "5.00"  # one byte per id, four per suffix-array position: the file is the two arrays
    synthetic = lines[2].split()
    assert synthetic[0] == "synthetic-0.2mb.txt" and int(synthetic[1].replace(",", "")) == 180_000  # 90% of 0.2 MB
    assert list(tmp_path.glob("charlm-novelty-*")) == []  # the synthetic text is removed


def test_the_report_compares_samples_with_val_windows(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat, and then it ran far away.\n" * 40, encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", str(corpus))
    lines = script(
        "novelty_report.py", str(run), "--samples", "3", "--length", "60", "--temperatures", "0.5,1", tmp_path=tmp_path
    )
    assert lines[0].startswith("novelty index: ") and str(run / "novelty-index.safetensors") in lines[0]
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in lines[2:]}
    assert list(rows) == ["temperature 0.5", "temperature 1", "val windows"]
    assert rows["val windows"][:4] == ["3", "60.0", "60.0", "60"]  # the val split repeats training: all copied
    assert rows["val windows"][4:] == ["100.0%", "100.0%"]
    assert all(int(r[0]) == 3 and 0 <= float(r[1]) <= 61 for r in rows.values())
