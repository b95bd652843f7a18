"""charlm on a platform without POSIX (Windows), simulated: CI has no Windows machine, so these tests run
charlm in a Python whose POSIX-only modules cannot be imported and whose POSIX-only names are gone, and
drive the real CLI there: help, data list, a training run, runs, and the lock refusing a second trainer.

The simulation is Linux without fcntl, which no real platform is: filelock falls back there to its soft lock
(a file whose existence is the lock), where Windows takes LockFileEx. So these tests prove that nothing in
charlm needs POSIX and that the refusal works through filelock's API; tests/test_runlock.py tests the OS lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")

# What Windows lacks (and a library could reach for), taken away before anything imports charlm.
WITHOUT_POSIX = """
import os, signal, sys, warnings
for name in ("fcntl", "termios", "tty", "pty", "resource", "pwd", "grp", "syslog"):
    sys.modules[name] = None  # `import fcntl` now raises ImportError, as on Windows
# Libraries choose their code by sys.platform, which still says linux (numpy calls os.uname there): they are
# imported before the names go, so that only charlm meets a platform without them.
import numpy, rich, safetensors, torch, typer, yaml  # noqa
for name in ("SIGHUP", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPIPE", "SIGCHLD"):
    delattr(signal, name)
for name in ("fork", "pread", "pwrite", "getuid", "geteuid", "getgid", "killpg", "getpgid", "setsid",
             "statvfs", "uname", "getloadavg", "sched_getaffinity", "O_NOFOLLOW", "O_DIRECTORY"):
    delattr(os, name)
# filelock says once that it fell back to its soft lock: true of this simulation only (see the docstring)
warnings.filterwarnings("ignore", message="only soft file lock is available")
"""

CLI = (
    WITHOUT_POSIX
    + """
sys.argv = ["charlm", *sys.argv[1:]]
from charlm.cli.main import entry
entry()
"""
)

HOLD = (
    WITHOUT_POSIX
    + """
import time
from pathlib import Path
from charlm.store.run_dir import RunDir
with RunDir(Path(sys.argv[1])).ownership.lock() as lock:
    lock.record_pid()
    print("held", flush=True)
    time.sleep(600)
"""
)

IMPORT_ALL = (
    WITHOUT_POSIX
    + """
import importlib, pkgutil
import charlm
sys.path.insert(0, sys.argv[1])  # benchmarks/, the scripts the tests import
modules = [m.name for m in pkgutil.walk_packages(charlm.__path__, "charlm.") if m.name != "charlm.__main__"]
modules += [p[:-3] for p in os.listdir(sys.argv[1]) if p.endswith(".py")]
for name in modules:
    importlib.import_module(name)
from charlm.training.stop import STOP_SIGNALS
print(len(modules), *(signal.Signals(s).name for s in STOP_SIGNALS))
"""
)


def python(code: str, *args: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        **popen,
    )


def charlm(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = python(CLI, *args, cwd=cwd)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_the_simulation_takes_away_what_windows_lacks(tmp_path):
    check = (
        WITHOUT_POSIX
        + """
import importlib
for name in ("fcntl", "resource"):
    try:
        importlib.import_module(name)
    except ImportError:
        print("no", name)
print(hasattr(signal, "SIGHUP"), hasattr(os, "pread"))
"""
    )
    out, err = python(check, cwd=tmp_path).communicate(timeout=60)
    assert out.split("\n")[:3] == ["no fcntl", "no resource", "False False"], err


def test_every_module_of_charlm_and_the_benchmarks_imports_without_posix(tmp_path):
    proc = python(IMPORT_ALL, str(REPO / "benchmarks"), cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    count, *signals = out.split()
    assert int(count) > 40 and signals == ["SIGINT", "SIGTERM"]  # no SIGHUP to catch


def test_help_and_data_list_work_without_posix(tmp_path):
    code, out, err = charlm("--help", cwd=tmp_path)
    assert code == 0 and "train" in out and "generate" in out, err
    code, out, err = charlm("data", "list", cwd=tmp_path)
    assert code == 0 and "shakespeare" in out.lower(), err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run made by the CLI without POSIX."""
    root = tmp_path_factory.mktemp("nonposix")
    corpus = root / "corpus.txt"
    corpus.write_text("the cat sat on the mat; the dog sat on the log.\n" * 200, encoding="utf-8")
    code, out, err = charlm(
        "train",
        "--config",
        TINY,
        "--corpus",
        str(corpus),
        "--device",
        "cpu",
        "--run-dir",
        str(root / "runs" / "no-posix"),
        "--set",
        "train.epochs=1",
        cwd=root,
    )
    assert code == 0, err
    return root, corpus


def test_a_run_trains_and_is_listed_without_posix(trained):
    root, _ = trained
    run = root / "runs" / "no-posix"
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", "last.pt", "best.pt", "status.json"):
        assert (run / name).is_file(), name
    code, out, err = charlm("runs", "--root", str(root / "runs"), cwd=root)
    assert code == 0 and any("no-posix" in line and "finished" in line for line in out.splitlines()), out + err


def test_a_second_trainer_is_refused_naming_the_holder_without_posix(trained):
    root, corpus = trained
    run = root / "runs" / "no-posix"
    holder = python(HOLD, str(run), cwd=root)
    try:
        assert holder.stdout.readline() == "held\n", holder.communicate(timeout=60)
        code, out, err = charlm(
            "train",
            "--resume",
            "--run-dir",
            str(run),
            "--corpus",
            str(corpus),
            "--device",
            "cpu",
            "--set",
            "train.epochs=2",
            cwd=root,
        )
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert code == 2, err
    assert err.count("\n") == 1 and f"in use by charlm process {holder.pid}" in err, err
