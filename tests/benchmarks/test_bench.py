"""benchmarks/bench.py in its quick/tiny mode only (never a timed run): the built-in corpora found offline as
`charlm train` finds them, and speedup_vs_d2l measured in interleaved rounds and printed with its spread."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import bench
import pytest
from rich.console import Console

from charlm.data import BUILTINS
from charlm.data import builtins as builtins_module

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty corpus cache: a download is an error, as on a machine with no connection."""

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(builtins_module, "_download", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", [n for n, b in BUILTINS.items() if b.shipped])
def test_the_shipped_corpora_are_found_offline_as_train_finds_them(offline, name):
    data = bench.builtin_text(name)
    remote = BUILTINS[name].files[0]
    if remote.member is None:  # a zip's member is the text: its sha256 is the archive's
        assert hashlib.sha256(data).hexdigest() == remote.sha256
    assert len(data) > 10_000 and list(offline.iterdir()) == []  # nothing downloaded, nothing cached


def test_a_corpus_that_does_not_ship_still_says_why_it_cannot_be_had(offline):
    name = next(n for n, b in BUILTINS.items() if not b.shipped)
    with pytest.raises(OSError, match="unreachable"):
        bench.builtin_text(name)


@pytest.mark.slow
def test_speedup_vs_d2l_pools_interleaved_rounds_and_keeps_their_spread(offline, tmp_path):
    figures = bench.d2l_figures(True, tmp_path, rounds=3, epochs=2)
    rounds = figures["speedup_vs_d2l_rounds"]
    charlm, seed = figures["charlm_d2l_rounds_chars_per_s"], figures["d2l_ref_rounds_chars_per_s"]
    assert len(rounds) == len(charlm) == len(seed) == 3 and all(r > 0 for r in rounds)
    assert rounds == pytest.approx([a / b for a, b in zip(charlm, seed, strict=True)])
    # all characters over all time on each side: the harmonic mean of rounds of equal characters
    pooled = (3 / sum(1 / r for r in charlm)) / (3 / sum(1 / r for r in seed))
    assert figures["speedup_vs_d2l"] == pytest.approx(pooled)
    assert min(rounds) <= figures["speedup_vs_d2l"] <= max(rounds)
    assert figures["speedup_vs_d2l_spread"] == pytest.approx((max(rounds) - min(rounds)) / pooled)
    assert figures["d2l_epochs"] == 2 and len(figures["charlm_d2l_loss_by_epoch"]) == 2
    assert len(figures["d2l_ref_loss_by_epoch"]) == 2 and isinstance(figures["d2l_same_losses_5_digits"], bool)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("d2l-")) == ["d2l-0", "d2l-1", "d2l-2"]


def test_the_table_prints_the_spread_beside_the_figure():
    figures = {"speedup_vs_d2l": 1.15, "speedup_vs_d2l_spread": 0.042, "speedup_vs_d2l_rounds": [1.13, 1.15, 1.17]}
    figures["targets"] = bench.verdicts(figures)
    out = io.StringIO()
    Console(file=out, width=200).print(bench.table_of(figures))
    row = next(line for line in out.getvalue().splitlines() if "speedup_vs_d2l" in line)
    assert "1.150 ±2.1% over 3 rounds" in row and ">= 1.8 MISSED" in row
    assert "speedup_vs_d2l_spread" not in out.getvalue()


@pytest.mark.slow
def test_the_d2l_figure_alone_runs_offline_from_the_command_line(tmp_path):
    """`bench.py --quick --d2l` with an empty cache and every proxy pointing nowhere: no download is tried."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHARLM_DATA_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env |= {key: "http://127.0.0.1:9" for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--d2l", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["speedup_vs_d2l"] > 0 and len(figures["speedup_vs_d2l_rounds"]) == 2
    assert "speedup_vs_d2l" in done.stdout and "over 2 rounds" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]
