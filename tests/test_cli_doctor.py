"""charlm doctor: the report's facts, what `train.precision: auto` picks, problems with their fix, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charlm import __version__
from charlm.cli.main import main
from charlm.runtime import capability
from charlm.ui import doctor

REPO = Path(__file__).resolve().parents[1]


def run_doctor(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["doctor", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_report_has_every_section(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    code, out, err = run_doctor(capsys, "--json", "--no-matmul")
    assert code == 0, err
    report = json.loads(out)
    assert report["versions"]["charlm"] == __version__ and report["versions"]["torch"]
    assert report["cpu"]["cores_usable"] >= 1 and report["folders"]["runs_root_writable"] is True
    assert set(report["folders"]["corpora_built_in"]) == {"jaychou", "timemachine", "tinyshakespeare"}
    facts = report["torch"]
    assert facts["threads"] >= 1 and facts["default_device"] in ("cpu", "cuda", "mps")
    assert facts["precision_auto"] == capability.resolve_precision("auto", facts["default_device"]).name
    assert report["problems"] == [] and "matmul" not in report


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_it_says_what_auto_precision_picks_on_this_cpu(capsys, monkeypatch, native, expected):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(capability, "cpu_bf16_native", lambda: native)
    facts = json.loads(run_doctor(capsys, "--json", "--no-matmul")[1])["torch"]
    assert facts["precision_auto"] == expected and facts["cpu_bf16_native"] is native
    assert ("natively" in facts["precision_why"]) is native


def test_the_matmul_check_measures_both_precisions(monkeypatch):
    monkeypatch.setattr(doctor, "MATMUL_SIZE", 64)
    monkeypatch.setattr(doctor, "MATMUL_SECONDS", 0.01)
    speeds = doctor.matmul_speeds()
    assert set(speeds) == {"fp32_gflops", "bf16_gflops"} and all(v > 0 for v in speeds.values())


def test_a_runs_folder_that_cannot_be_written_is_a_problem_with_its_fix(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(blocker / "runs"))  # under a file: nothing can be made there
    code, out, err = run_doctor(capsys, "--no-matmul")
    assert code == 1
    assert "versions" in out and "problem: the runs folder" in err and "CHARLM_RUNS_DIR" in err


def test_without_torch_it_still_reports_and_says_how_to_fix_it(tmp_path):
    """A broken install: torch cannot be imported. The report still has the versions, processor and folders."""
    bootstrap = (
        "import sys; sys.modules['torch'] = None; from charlm.cli.main import main; "
        "sys.exit(main(['doctor', '--json']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", bootstrap],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["versions"]["charlm"] == __version__ and report["cpu"]["model"]
    assert "torch" not in report and "matmul" not in report
    assert len(report["problems"]) == 1 and report["problems"][0].startswith("torch cannot be imported")


@pytest.mark.slow
def test_the_text_report_prints_each_section(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(doctor, "MATMUL_SECONDS", 0.01)
    code, out, _ = run_doctor(capsys)
    assert code == 0
    for title in ("versions", "cpu", "folders", "torch", "matmul", "precision_auto", "no problems found"):
        assert title in out
