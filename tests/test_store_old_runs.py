"""A run folder written before documents, reserved symbols, dynamic evaluation and the novelty report (the
fixture tests/fixtures/run-ea1f153, made by charlm at commit ea1f153) is read by today's commands: scored,
sampled, resumed, exported, adapted, checked for novelty; `--items` is refused naming the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from charlm.cli.main import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run-ea1f153"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def out_of(capsys, *args) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_an_old_run_is_scored_sampled_and_adapted(old_run, capsys):
    static = json.loads(out_of(capsys, "perplexity", "-r", str(old_run), "--json"))
    assert static["chars"] > 0 and "unknown_share" not in static  # no <unk> in an old vocabulary
    text = "分开" * 20
    alone = json.loads(out_of(capsys, "perplexity", "-r", str(old_run), "--text", text, "--json"))
    both = json.loads(out_of(capsys, "perplexity", "-r", str(old_run), "--text", text, "--dynamic", "--json"))
    assert both["static"]["nats_per_char"] == alone["nats_per_char"]  # tiny.yaml trains in fp32
    sample = out_of(capsys, "generate", "-r", str(old_run), "--prefix", "分开", "--length", "20", "--seed", "1")
    assert sample.startswith("分开") and "<eod>" not in sample


def test_an_old_run_refuses_items_naming_the_fix(old_run, capsys):
    assert main(["generate", "-r", str(old_run), "--items", "2"]) == 2
    assert "data.documents" in capsys.readouterr().err


def test_an_old_run_resumes_and_exports(old_run, capsys, tmp_path):
    assert main(["train", "-r", str(old_run), "--resume", "-q", "--set", "train.epochs=2"]) == 0
    metrics = [json.loads(line) for line in (old_run / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("epoch", 0) for r in metrics) == 2
    assert main(["export", "--run-dir", str(old_run), "--out", str(tmp_path / "model")]) == 0
    assert out_of(capsys, "generate", "--model", str(tmp_path / "model"), "--prefix", "分开", "-n", "5")


def test_an_old_run_gets_a_novelty_report(old_run, capsys):
    pytest.importorskip("pydivsufsort")
    out = out_of(capsys, "generate", "-r", str(old_run), "--prefix", "分开", "-n", "30", "--json", "--novelty")
    novelty = json.loads(out.splitlines()[0])["novelty"]
    assert novelty["chars"] == 30 and novelty["training_item"] is None  # a stream run has no items
