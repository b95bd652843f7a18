"""benchmarks/gpu_check.sh: the one-command GPU check, run here as its CPU smoke test, and its driver's handling
of steps that fail, run out of time or cannot start."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gpu_check
import gpu_steps
import pytest

from charlm.runtime import capability

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def run_script(out: Path, *args: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "CHARLM_DATA_DIR": str(data)}
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), *args], env=env, capture_output=True, text=True, encoding="utf-8", timeout=600
    )


@pytest.mark.slow
def test_the_smoke_check_runs_every_step_and_prints_one_table(shared_data, tmp_path):
    out = tmp_path / "out"
    result = run_script(out, "--smoke", data=shared_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    steps = json.loads((out / "figures.json").read_text())["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    assert {n: s["status"] for n, s in steps.items() if s["status"] != "ok"} == {"fast": "skipped", "gpt": "skipped"}
    correct = steps["correct"]
    assert correct["failed"] == 0 and correct["skipped"] == len(correct["cases"]) >= 7  # no GPU here
    for model in steps["sweep"]["models"].values():  # bf16 training: refused where the CPU has no bf16 LSTM
        expected = [True] * 3 if capability.cpu_bf16_kernel("lstm") else [False] * 3
        assert ["chars_per_s" in run and run["chars_per_s"] > 0 for run in model["batches"].values()] == expected
    assert "fp32_val_loss" in steps["fp16"] or "skipped" in steps["fp16"]  # train.precision may not exist yet
    for name, run in gpu_check.SMOKE.runs.items():
        points = steps[name]["checkpoints"]  # computed by time_to_loss.py from the run's metrics.jsonl
        assert list(points["val_at"]) == [f"{m:g}" for m in run.marks] and all(points["val_at"].values()), name
        assert steps[name]["evals"][-1]["train_seconds"] >= run.budget
    assert steps["ptb"]["test_bpc"] > 0 and steps["ptb"]["budget"] == 3
    assert steps["auto3m"]["config"] == "auto-tinyshakespeare"  # sized by --budget
    table = (out / "table.txt").read_text()
    assert result.stdout.rstrip().endswith(table.rstrip())  # the table is the last thing printed
    for heading in (
        "correct (pytest -m gpu)",
        "fp16 against fp32",
        "sweep: bf16 training by batch",
        "training runs",
        "test ",
    ):
        assert heading in table
    assert sorted(p.name for p in out.iterdir()) == ["figures.json", "logs.txt", "table.txt"]  # at most 8 come back
    assert "===== s3m =====" in (out / "logs.txt").read_text()


def fake_corpora(folder: Path, ptb: bool = True) -> Path:
    folder.mkdir()
    for name in (gpu_steps.SHAKESPEARE, *(gpu_steps.PTB_FILES if ptb else ())):
        (folder / name).write_text("x")
    return folder


def test_a_failing_or_overlong_step_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    fake = {
        "sweep": ["raise SystemExit(3)"],
        "s3m": ["import time; time.sleep(60)", "print('s3m summary')"],
        "s60": ["print('s60 ran')"],
    }
    monkeypatch.setattr(
        gpu_check, "commands", lambda name, *rest: [[sys.executable, "-c", code] for code in fake.get(name, ["pass"])]
    )
    monkeypatch.setattr(
        gpu_check,
        "SMOKE",
        dataclasses.replace(gpu_check.SMOKE, limits={**gpu_check.SMOKE.limits, "s3m": gpu_steps.SUMMARY_SECONDS + 2}),
    )
    code = gpu_check.main([str(tmp_path / "out"), "--smoke"])
    assert code == 1
    figures = json.loads((tmp_path / "out" / "figures.json").read_text())
    status = {name: step["status"] for name, step in figures["steps"].items() if step["status"] != "skipped"}
    assert status == {
        "sweep": "failed",
        "calibrate": "ok",
        "ptb": "ok",
        "s3m": "timeout",
        "s60": "ok",
        "auto3m": "ok",
        "correct": "ok",
        "fp16": "ok",
    }
    assert figures["steps"]["sweep"]["exit_codes"] == [3] and figures["steps"]["s3m"]["exit_codes"] == [None, 0]
    logs = (tmp_path / "out" / "logs.txt").read_text()
    assert "s3m summary" in logs  # the summary kept its time when the training ran out of its own
    assert "s60 ran" in logs  # after s3m, in its lane
    printed = capsys.readouterr().out
    assert "sweep     failed" in printed and "s3m       timeout" in printed


def test_the_lanes_run_at_once_after_the_steps_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    record = tmp_path / "order.txt"

    def commands(name, *rest):  # each step notes when it started and ended; the lane steps overlap
        note = f"import time; f = open({str(record)!r}, 'a'); f.write('{name} start\\n'); f.flush(); "
        return [
            [
                sys.executable,
                "-c",
                note + f"time.sleep({0.1 if name in gpu_check.ALONE else 1.5}); f.write('{name} end\\n')",
            ]
        ]

    monkeypatch.setattr(gpu_check, "commands", commands)
    assert gpu_check.main([str(tmp_path / "out"), "--smoke"]) == 0
    events = record.read_text().split("\n")
    assert events[:4] == ["sweep start", "sweep end", "calibrate start", "calibrate end"]
    starts = {line.split()[0] for line in events[4:8]}
    assert starts == {"ptb", "s3m", "auto3m", "correct"}  # the four lanes began before any of them ended
    assert events.index("s60 start") > events.index("s3m end") and events.index("fp16 start") > events.index(
        "correct end"
    )


def test_without_ptb_the_ptb_step_is_skipped_saying_why(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data", ptb=False)))
    monkeypatch.setattr(gpu_check, "commands", lambda name, *rest: [[sys.executable, "-c", "pass"]])
    assert gpu_check.main([str(tmp_path / "out"), "--smoke", "--only", "ptb,s60"]) == 0
    steps = json.loads((tmp_path / "out" / "figures.json").read_text())["steps"]
    assert steps["ptb"]["status"] == "skipped" and "ptb.char.train.txt" in steps["ptb"]["note"]
    assert [n for n, s in steps.items() if s["status"] != "skipped"] == ["s60"]
    assert "[ptb] skipped: ptb-char not found" in capsys.readouterr().out


def test_without_the_corpora_it_says_where_to_put_them_and_writes_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script(tmp_path / "out", "--smoke", data=tmp_path / "empty")
    assert result.returncode == 2
    assert "tinyshakespeare.txt" in result.stderr and str(tmp_path / "empty") in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_script_needs_an_output_folder():
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_on_a_gpu_every_step_ends_by_the_deadline_and_ptb_gets_what_phase_one_left():
    mode = gpu_check.GPU
    assert gpu_check.TOTAL_SECONDS + gpu_steps.KILL_GRACE < 9 * 60  # a step's limit, then its SIGKILL
    started_400_s_ago = time.perf_counter() - 400
    assert 115 <= gpu_check.step_limit("ptb", mode, started_400_s_ago) <= gpu_check.TOTAL_SECONDS - 400
    assert gpu_check.step_limit("s60", gpu_check.GPU, time.perf_counter()) == mode.limits["s60"]
    ptb = gpu_steps.commands("ptb", mode, Path("/w"), "python", limit=200)
    assert "train.time_budget=140s" in ptb[0]  # 200 s left, less the run's overhead outside its budget
    assert gpu_steps.commands("ptb", mode, Path("/w"), "python", limit=420)[0][-1] == "train.time_budget=300s"


def test_test_properties_reach_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(fake_corpora(tmp_path / "data")))
    suite = tmp_path / "test_fake_gpu.py"
    suite.write_text(
        "def test_bf16_autocast_reaches_fp32_loss(record_property):\n"
        "    record_property('bf16_val_loss', 2.5)\n"
        "    assert 2.5 <= 2.0, 'bf16 is worse'\n",
        encoding="utf-8",
    )

    def fake_commands(name, mode, work, python, limit):
        if name == "correct":
            return [
                [
                    python,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-o",
                    "junit_family=xunit1",
                    f"--junitxml={work / 'correct.xml'}",
                    str(suite),
                ]
            ]
        return [[python, "-c", "pass"]]

    monkeypatch.setattr(gpu_check, "commands", fake_commands)
    assert gpu_check.main([str(tmp_path / "out"), "--smoke", "--only", "correct"]) == 1
    steps = json.loads((tmp_path / "out" / "figures.json").read_text())["steps"]
    assert steps["correct"]["cases"]["test_bf16_autocast_reaches_fp32_loss"]["properties"] == {"bf16_val_loss": "2.5"}
    table = (tmp_path / "out" / "table.txt").read_text()
    assert "failed  test_bf16_autocast_reaches_fp32_loss  (bf16_val_loss 2.5)" in table and "bf16 is worse" in table
