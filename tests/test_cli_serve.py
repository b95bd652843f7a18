"""`charlm serve` itself: started as a user starts it (a subprocess), called over HTTP, stopped with SIGTERM;
the warning for every interface, the missing extra, a port in use and a bad --limit, each one line."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import until

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
SLOW_STEPS = """
import time

import charlm.generation.sampling as sampling  # before charlm.serve.batch imports it: both see the slow one

original = sampling.sample_next


def slow(*args, **kwargs):  # each character takes 10 ms in this Python: streams last seconds, not milliseconds
    time.sleep(0.01)
    return original(*args, **kwargs)


sampling.sample_next = slow
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-serve")
    settings = ["data.corpus=timemachine", "data.max_chars=5000", "train.epochs=1", "sample.preview_every=0"]
    return Path(charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), root / "run").run_dir)


def environment(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def start(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`charlm serve ARGS` in a subprocess, and the URL it prints once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or environment(),
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
    assert "CHARLM_API_KEY=" in warnings[0]  # and how to require a key


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX's")
def test_a_key_from_the_environment_guards_every_route_and_silences_the_warning(run_dir):
    env = environment(CHARLM_API_KEY="s3cret-key,other-key")
    process, url = start("--run-dir", str(run_dir), "--port", "0", "--host", "0.0.0.0", env=env)
    try:
        port = url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{local}/health", timeout=30).status_code == 200
        assert httpx.get(f"{local}/model", timeout=30).status_code == 401
        for key in ("s3cret-key", "other-key"):
            allowed = httpx.get(f"{local}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert allowed.status_code == 200 and allowed.json()["data"][0]["id"] == run_dir.name
    finally:
        err = stop(process)
    assert "warning" not in err and "s3cret" not in err


def test_an_empty_key_is_one_line_before_the_model_loads(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("CHARLM_API_KEY", "")
    assert main(["serve", "--run-dir", str(run_dir / "nothing-here")]) == 2
    assert "CHARLM_API_KEY holds an empty key" in capsys.readouterr().err


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


def slow_server(run_dir: Path, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`charlm serve` whose every character takes 10 ms (the sampler slowed from the test side, in its Python)."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_STEPS, encoding="utf-8")
    env = environment(PYTHONPATH=str(tmp_path))
    return start("--run-dir", str(run_dir), "--port", "0", *args, env=env)


class Streaming:
    """A streamed request read in a thread: its events as they come."""

    def __init__(self, url: str, path: str, body: dict):
        self.lines: list[str] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(url + path, body), daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the stream never began"

    def _read(self, url: str, body: dict) -> None:
        try:
            with httpx.stream("POST", url, json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line:
                        self.lines.append(line)
                        self.started.set()
        except httpx.HTTPError as error:  # a server that exits at once cuts it
            self.lines.append(f"cut: {type(error).__name__}")

    def finish(self) -> list[str]:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.lines


STOPS = [signal.SIGTERM, signal.SIGINT, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("stop_signal", STOPS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.slow
def test_a_stop_signal_lets_the_streams_under_way_finish_refuses_new_work_and_exits_0(run_dir, tmp_path, stop_signal):
    process, url = slow_server(run_dir, tmp_path, "--limit", "shutdown_grace=30")
    try:
        native = Streaming(url, "/generate", {"prefix": "the", "length": 150, "stream": True})
        v1 = Streaming(url, "/v1/completions", {"prompt": "the", "max_tokens": 150, "stream": True})
        process.send_signal(stop_signal)
        until(lambda: httpx.get(f"{url}/health").status_code == 503, "health says stopping", 10)
        assert httpx.get(f"{url}/health").json()["status"] == "stopping"
        refused = httpx.post(f"{url}/generate", json={"prefix": "the", "length": 5})
        assert refused.status_code == 503 and "stopping" in refused.json()["error"]
        refused = httpx.post(f"{url}/v1/completions", json={"prompt": "the", "max_tokens": 5})
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "server_error"
        native_lines, v1_lines = native.finish(), v1.finish()
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and "Traceback" not in err, err
    assert native_lines[-2] == "event: done" and len(json.loads(native_lines[-1][6:])["samples"][0]["text"]) == 153
    assert v1_lines[-1] == "data: [DONE]"
    assert "".join(json.loads(line[6:])["choices"][0]["text"] for line in v1_lines[:-1]) != ""
    assert json.loads(v1_lines[-2][6:])["choices"][0]["finish_reason"] == "length"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_past_the_grace_the_requests_under_way_are_told_and_the_server_exits_0(run_dir, tmp_path):
    process, url = slow_server(run_dir, tmp_path, "--limit", "shutdown_grace=1")
    try:
        native = Streaming(url, "/generate", {"prefix": "the", "length": 2000, "stream": True})
        v1 = Streaming(url, "/v1/completions", {"prompt": "the", "max_tokens": 2000, "stream": True})
        with ThreadPoolExecutor(1) as pool:
            plain = pool.submit(
                httpx.post, f"{url}/generate", json={"prefix": "a", "length": 2000, "seed": 1}, timeout=60
            )
            until(lambda: httpx.get(f"{url}/health").json()["computing"] == 3, "all three computing", 20)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            took = time.monotonic() - started
            cut = plain.result()
    finally:
        process.kill()
    assert process.returncode == 0 and "Traceback" not in err and took < 10, (took, err)
    assert cut.status_code == 503 and "stopped before this request finished" in cut.json()["error"]
    native_lines, v1_lines = native.finish(), v1.finish()
    assert native_lines[-2] == "event: error" and "stopped before" in native_lines[-1]
    assert v1_lines[-1] == "data: [DONE]" and "stopped before" in json.loads(v1_lines[-2][6:])["error"]["message"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_signal_exits_at_once(run_dir, tmp_path):
    process, url = slow_server(run_dir, tmp_path, "--limit", "shutdown_grace=60")
    try:
        stream = Streaming(url, "/generate", {"prefix": "the", "length": 2000, "stream": True})
        process.send_signal(signal.SIGTERM)
        until(lambda: httpx.get(f"{url}/health").status_code == 503, "health says stopping", 10)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        process.kill()
    assert stream.finish()[-1].startswith("cut:")
    assert process.returncode == 128 + signal.SIGINT and took < 5, (process.returncode, took)
    assert err.strip().splitlines()[-1].startswith("charlm serve: a second stop signal") and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_stop_with_half_sent_bodies_answers_them_and_logs_no_traceback(run_dir, tmp_path):
    process, url = slow_server(run_dir, tmp_path, "--limit", "shutdown_grace=5", "--limit", "read_time=60")
    host, port = url.removeprefix("http://").rsplit(":", 1)
    halves = []
    try:
        for path in ("/generate", "/v1/completions", "/perplexity"):
            sock = socket.create_connection((host, int(port)), timeout=20)
            sock.sendall(f'POST {path} HTTP/1.1\r\nHost: {host}\r\ncontent-length: 500\r\n\r\n{{"pre'.encode())
            halves.append(sock)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        answers = [read_to_close(sock) for sock in halves]
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        for sock in halves:
            sock.close()
    assert process.returncode == 0, err
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 503") and b"stopping" in answer
    assert "Traceback" not in err and str(REPO) not in err and sys.prefix not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file limits")
@pytest.mark.slow
def test_a_flood_of_idle_connections_under_a_low_file_limit_leaves_health_answering(run_dir):
    import resource

    def low_file_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "serve", "--run-dir", str(run_dir), "--port", "0", "--limit", "read_time=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        preexec_fn=low_file_limit,
    )
    flood = []
    try:
        found = re.search(r"at (http://\S+) \(", process.stdout.readline())
        assert found, process.stderr.read()
        url = found.group(1)
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for _ in range(300):  # more than the server's file limit
            try:
                flood.append(socket.create_connection((host, int(port)), timeout=5))
            except OSError:
                break
        until(lambda: _health(url) == 200, "health answering again", 20)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        for sock in flood:
            sock.close()
    assert process.returncode == 0 and "Traceback" not in err and len(err) < 2000, err[-2000:]


def _health(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code
    except httpx.HTTPError:
        return None


def read_to_close(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection (the head and the body may come apart)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer
