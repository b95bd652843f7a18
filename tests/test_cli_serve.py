"""`charlm serve` itself: started as a user starts it (a subprocess), called over HTTP, stopped with SIGTERM;
the warning for every interface, the missing extra, a port in use and a bad --limit, each one line."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

import charlm
from charlm.cli.main import main

REPO = Path(__file__).resolve().parent.parent
EXTRA = "error: charlm serve needs the serve extra: pip install 'charlm[serve]'"
BLOCK_FASTAPI = """
import sys

class NoFastAPI:  # this Python behaves as one without the serve extra
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fastapi":
            raise ImportError("No module named 'fastapi'")

sys.meta_path.insert(0, NoFastAPI())
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-serve")
    settings = ["data.corpus=timemachine", "data.max_chars=5000", "train.epochs=1", "sample.preview_every=0"]
    return Path(charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), root / "run").run_dir)


def environment(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """`charlm serve ARGS` in a subprocess, and the URL it prints once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        process.kill()
        pytest.fail(f"charlm serve printed nothing: {process.communicate()[1]}")
    found = re.search(r"at (http://\S+) \(", line)
    assert found, f"charlm serve said {line!r}"
    return process, found.group(1)


def stop(process: subprocess.Popen) -> str:
    """SIGTERM, as a service manager stops it: nothing under way, so the server stops at once and exits 0 (the
    lifespan's end closes the workers). Its stderr."""
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err
    return err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX's")
def test_serve_answers_on_the_address_it_prints_and_stops_cleanly(run_dir):
    process, url = start("--run-dir", str(run_dir), "--port", "0")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        answer = httpx.post(f"{url}/generate", json={"prefix": "the", "length": 30, "seed": 3}, timeout=30)
        # the server loads the run as charlm.load does and samples by the same code: the same text
        assert answer.json()["samples"][0]["text"] == charlm.load(run_dir).generate("the", 30, seed=3)
    finally:
        err = stop(process)
    assert "warning" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX's")
def test_every_interface_is_served_with_a_one_line_warning(run_dir):
    process, url = start("--run-dir", str(run_dir), "--port", "0", "--host", "0.0.0.0")
    try:
        port = url.rsplit(":", 1)[1]
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
    finally:
        err = stop(process)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "every interface (0.0.0.0)" in warnings[0] and "--host 127.0.0.1" in warnings[0]


def test_without_the_serve_extra_one_line_and_exit_2(run_dir, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_FASTAPI, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "charlm", "serve", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        env=environment(PYTHONPATH=str(tmp_path)),
        timeout=120,
    )
    assert (done.returncode, done.stderr.strip(), done.stdout) == (2, EXTRA, "")


def test_a_port_in_use_and_a_bad_limit_are_one_line_before_the_model_loads(run_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--run-dir", str(run_dir / "nothing-here"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err  # the port, before the missing run
    assert main(["serve", "--run-dir", str(run_dir), "--limit", "computeing=4"]) == 2
    assert "did you mean --limit computing?" in capsys.readouterr().err
    assert main(["serve", "--run-dir", str(run_dir), "--port", "70000"]) == 2
    assert "--port 70000 is not a port" in capsys.readouterr().err
