"""The real `charlm train` process killed at random moments, and stopped by SIGINT / SIGTERM."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import SLOW_FSYNC

from charlm.store import layout
from charlm.store.checkpoint import load_payload
from charlm.store.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


def make_corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = ["分开", "不分开", "爱情", "你的", "微笑", "天空", "我想", "回家", "风景", "rain"]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(6)) for _ in range(160)), encoding="utf-8")
    return path


def start(run_dir: Path, corpus: Path, *extra: str, slow_writes: float = 0) -> subprocess.Popen:
    args = [
        sys.executable,
        "-c",
        SLOW_FSYNC,
        str(slow_writes),
        "train",
        "--config",
        TINY,
        "--corpus",
        str(corpus),
        "--device",
        "cpu",
        "--run-dir",
        str(run_dir),
        "--set",
        "sample.preview_every=0",
        *extra,
    ]
    if (run_dir / layout.LAST).exists():
        args.append("--resume")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(proc: subprocess.Popen, run_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / layout.METRICS).exists() or not (run_dir / layout.METRICS).read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.soak
def test_sigkill_at_random_moments_never_loses_the_run(tmp_path):
    """20+ SIGKILLs across a run's life, a checkpoint per batch, each fsync slowed (SLOW_FSYNC) so that
    many kills land in the middle of a write."""
    corpus = make_corpus(tmp_path / "corpus.txt")
    run_dir = tmp_path / "run"
    big = ("--set", "model.hidden_size=256", "--set", "train.epochs=12", "--set", "train.checkpoint_every_batches=1")
    rng = random.Random(1)
    kills = mid_save = 0
    while True:
        launched = time.time()
        proc = start(run_dir, corpus, *big, slow_writes=0.1)
        if kills >= 20:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err
            break
        if kills % 2:  # every other kill lands while training: after the run says it is running
            status = run_dir / "status.json"
            while not (status.exists() and status.stat().st_mtime >= launched) and proc.poll() is None:
                time.sleep(0.02)
            delay = rng.uniform(0.0, 1.0)
        else:  # the others anywhere from start-up on
            delay = rng.uniform(0.2, 4.0)
        try:
            proc.wait(timeout=delay)
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            pytest.fail("the run finished before 20 kills: make it longer")
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            kills += 1
        mid_save += any(run_dir.glob(".*.tmp"))  # a write was cut short: its temp file never got renamed
        for name in (layout.LAST, layout.BEST):
            if (run_dir / name).exists():
                load_payload(run_dir / name)  # whole and readable, whatever the moment of the kill
    assert kills >= 20 and mid_save >= 1
    records = [r for r in RunDir(run_dir).metrics.read() if "event" not in r]
    assert [r["epoch"] for r in records] == list(range(1, 13))
    assert load_payload(run_dir / layout.LAST)["epoch"] == 12
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
@pytest.mark.slow
def test_a_signal_saves_prints_the_resume_command_and_exits_with_its_code(tmp_path, signum, code):
    corpus = make_corpus(tmp_path / "corpus.txt")
    run_dir = tmp_path / "run"
    proc = start(run_dir, corpus, "--set", "train.epochs=500")
    wait_for_training(proc, run_dir)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"charlm train --resume --run-dir {run_dir}" in err
    saved = load_payload(run_dir / layout.LAST)
    resumed = start(run_dir, corpus, "--set", f"train.epochs={saved['epoch'] + 1}")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "resuming after" in out


def test_a_second_ctrl_c_exits_at_once_and_leaves_a_loadable_run(tmp_path):
    corpus = make_corpus(tmp_path / "corpus.txt")
    run_dir = tmp_path / "run"
    proc = start(run_dir, corpus, "--set", "train.epochs=500")
    wait_for_training(proc, run_dir)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    load_payload(run_dir / layout.LAST)


# `python -m charlm` with the signal (the first argument) sent to itself as the final eval starts: from the test
# side, where a person's `kill` would land once training is over
SIGNAL_IN_FINAL_EVAL = """
import os, sys
from charlm.training import evals
signum, final = int(sys.argv.pop(1)), evals.Evals.final
def signalled(self, requests):
    os.kill(os.getpid(), signum)
    return final(self, requests)
evals.Evals.final = signalled
from charlm.cli.main import entry
entry()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_signal_in_the_final_eval_exits_as_an_interrupted_run_and_the_resume_finishes(tmp_path, signum):
    corpus = make_corpus(tmp_path / "corpus.txt")
    run_dir = tmp_path / "run"
    args = ["train", "--config", TINY, "--corpus", str(corpus), "--device", "cpu", "--run-dir", str(run_dir)]
    args += ["--set", "sample.preview_every=0", "--set", "data.test_fraction=0.1", "--set", "train.epochs=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    command = [sys.executable, "-c", SIGNAL_IN_FINAL_EVAL, str(int(signum)), *args]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signum, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("interrupted: "), proc.stderr
    assert f"continue with: charlm train --resume --run-dir {run_dir}" in proc.stderr
    assert RunDir(run_dir).status.read()["state"] == "interrupted"
    resumed = subprocess.run(
        [sys.executable, "-m", "charlm", *args, "--resume"], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert RunDir(run_dir).status.read()["state"] == "finished"
    assert [r["event"] for r in RunDir(run_dir).metrics.read() if "event" in r] == ["resume", "final"]
