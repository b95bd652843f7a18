"""benchmarks/gpu_check.sh: the one-command GPU check, run here as its CPU smoke test, and its driver's handling
of steps that fail, run out of time or cannot start."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import gpu_check
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def run_script(out: Path, *args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CHARLM_DATA_DIR": str(data)}
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], env=env, capture_output=True, text=True,
                          encoding="utf-8", timeout=600)


@pytest.mark.slow
def test_the_smoke_check_runs_every_step_and_prints_one_table(shared_data, tmp_path):
    out = tmp_path / "out"
    result = run_script(out, "--smoke", data=shared_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    figures = json.loads((out / "figures.json").read_text())
    steps = figures["steps"]
    assert list(steps) == list(gpu_check.STEPS) and all(s["status"] == "ok" for s in steps.values())
    correct = steps["correct"]
    assert correct["failed"] == 0 and correct["skipped"] == len(correct["cases"]) >= 5  # no GPU here
    train = steps["fast"]["train"]
    dtypes = ("fp32", "tf32", "bf16", "bf16_deterministic")
    assert set(train) == {f"lstm_{m}_{d}" for m in ("1x32", "2x48") for d in dtypes}
    assert all(run["chars_per_s"] > 0 for run in train.values())
    assert steps["fast"]["generation"]["gen_1_graph"].startswith("not run")
    for side in ("gpt", "lstm"):
        points = steps[side]["checkpoints"]
        assert list(points["val_at"]) == ["0.8", "1.6", "4"] and all(points["val_at"].values()), side
        assert steps[side]["evals"][-1]["train_seconds"] >= 4
    assert steps["ptb"]["test_bpc"] > 0 and steps["ptb"]["budget"] == 3
    table = (out / "table.txt").read_text()
    assert result.stdout.rstrip().endswith(table.rstrip())  # the table is the last thing printed
    for heading in ("correct (pytest -m gpu)", "fast (LSTM", "race: val loss", "ptb-char"):
        assert heading in table
    files = sorted(p.name for p in out.iterdir())
    assert files == ["correct.log", "fast.log", "figures.json", "gpt.log", "lstm.log", "ptb.log", "table.txt"]
    assert len(files) <= 8  # what the device machine brings back from $OUT


def fake_corpora(folder: Path) -> Path:
    folder.mkdir()
    for name in gpu_check.CORPUS_FILES:
        (folder / name).write_text("x")
    return folder


def test_a_failing_or_overlong_step_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    fake = {"correct": "pass", "fast": "raise SystemExit(3)", "gpt": "import time; time.sleep(60)",
            "lstm": "print('lstm ran')", "ptb": "print('ptb ran')"}
    monkeypatch.setattr(gpu_check, "commands", lambda name, *rest: [[sys.executable, "-c", fake[name]]])
    monkeypatch.setattr(gpu_check, "SMOKE", dataclasses.replace(gpu_check.SMOKE, limits={
        **gpu_check.SMOKE.limits, "gpt": 2}))
    code = gpu_check.main([str(tmp_path / "out"), "--smoke"])
    assert code == 1
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    status = {name: step["status"] for name, step in figures["steps"].items()}
    assert status == {"correct": "ok", "fast": "failed", "gpt": "timeout", "lstm": "ok", "ptb": "ok"}
    assert figures["steps"]["fast"]["exit_codes"] == [3] and figures["steps"]["gpt"]["exit_codes"] == [None]
    assert "lstm ran" in (tmp_path / "out" / "lstm.log").read_text()
    printed = capsys.readouterr().out
    assert "fast     failed" in printed and "gpt      timeout" in printed


def test_only_runs_the_steps_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    monkeypatch.setattr(gpu_check, "commands", lambda name, *rest: [[sys.executable, "-c", "pass"]])
    assert gpu_check.main([str(tmp_path / "out"), "--smoke", "--only", "gpt,ptb"]) == 0
    steps = json.loads((tmp_path / "out" / "figures.json").read_text())["steps"]
    assert [n for n, s in steps.items() if s["status"] != "skipped"] == ["gpt", "ptb"]


def test_without_the_corpora_it_says_where_to_put_them_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script(tmp_path / "out", "--smoke", data=tmp_path / "empty")
    assert result.returncode == 2
    assert "tinyshakespeare.txt" in result.stderr and str(tmp_path / "empty") in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_script_needs_an_output_folder():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_test_properties_reach_the_table_and_a_failed_bf16_test_turns_bf16_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    suite = tmp_path / "test_fake_gpu.py"
    suite.write_text("def test_bf16_autocast_reaches_fp32_loss(record_property):\n"
                     "    record_property('bf16_val_loss', 2.5)\n"
                     "    assert 2.5 <= 2.0, 'bf16 is worse'\n", encoding="utf-8")
    seen = {}

    def fake_commands(name, mode, work, python, limit, bf16_failed):
        seen[name] = bf16_failed
        if name == "correct":
            return [[python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                     f"--junitxml={work / 'correct.xml'}", str(suite)]]
        return [[python, "-c", "pass"]]

    monkeypatch.setattr(gpu_check, "commands", fake_commands)
    assert gpu_check.main([str(tmp_path / "out"), "--smoke"]) == 1
    assert seen == {"correct": False, "fast": True, "gpt": True, "lstm": True, "ptb": True}  # known after correct
    steps = json.loads((tmp_path / "out" / "figures.json").read_text())["steps"]
    assert steps["correct"]["cases"][gpu_check.BF16_TEST]["properties"] == {"bf16_val_loss": "2.5"}
    assert steps["lstm"]["note"] == f"bf16 off: {gpu_check.BF16_TEST} failed"
    table = (tmp_path / "out" / "table.txt").read_text()
    assert "failed  test_bf16_autocast_reaches_fp32_loss  (bf16_val_loss 2.5)" in table
    assert "bf16 is worse" in table and "bf16 off" in table
