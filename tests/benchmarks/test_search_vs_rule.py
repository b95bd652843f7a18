"""benchmarks/search_vs_rule.py: the Markov corpus's entropy is right, and the smoke run compares both arms."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "search_vs_rule.py"


def script():
    spec = importlib.util.spec_from_file_location("search_vs_rule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_markov_entropy_rate_is_what_the_chain_scores_on_its_own_text():
    bench = script()
    chain = bench.markov_chain()
    assert chain.shape == (60, 60, 60) and np.allclose(chain.sum(axis=2), 1.0)
    h = bench.entropy_rate(chain)
    assert 0 < h < np.log(60)
    # the law of large numbers: the chain's mean loss on 200,000 of its symbols is its entropy rate, up to
    # sampling noise (a few tenths of a percent at this length; 2% leaves room for any seed)
    assert bench.model_loss(chain, bench.sample(chain, 200_000)) == pytest.approx(h, rel=0.02)


@pytest.mark.slow
def test_the_smoke_run_trains_both_arms_and_prints_the_table(tmp_path):
    pytest.importorskip("optuna")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--corpora", "markov", "--work", str(tmp_path / "w"),
         "--out", str(tmp_path / "out.json"), "--set", "train.device=cpu"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "c")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "out.json").read_text())
    assert row["rule_val_loss"] > 0 and row["search_val_loss"] > 0 and row["entropy"] > 0
    assert row["relative"] == pytest.approx((row["search_val_loss"] - row["rule_val_loss"]) / row["rule_val_loss"])
    assert row["winner"].startswith("t") and row["passes"] >= 0
    assert "| markov | 3s |" in done.stdout
    assert (tmp_path / "w" / "search-markov-3s" / "search.jsonl").exists()
