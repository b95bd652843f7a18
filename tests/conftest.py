"""Shared fixtures: the real corpora folder (optional) and a tiny text-file writer."""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))  # d2l_reference: the seed's code, which tests compare against


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real corpora: $CHARLM_TEST_DATA, else <repo>/../shared/data; skip when absent."""
    folder = Path(os.environ.get("CHARLM_TEST_DATA") or REPO.parent / "shared" / "data")
    if not folder.is_dir():
        pytest.skip("real corpora not found: set CHARLM_TEST_DATA to a folder like ../shared/data")
    return folder


@pytest.fixture
def builtin_cache(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the built-in corpus cache (CHARLM_DATA_DIR) at the real corpora folder."""
    monkeypatch.setenv("CHARLM_DATA_DIR", str(shared_data))
    return shared_data


@pytest.fixture
def write_text(tmp_path: Path):
    """write_text(text, name="corpus.txt") -> path of a UTF-8 file under tmp_path."""

    def write(text: str, name: str = "corpus.txt") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
        return path

    return write


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread (2-core machines thrash under OpenMP); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def gate(monkeypatch):
    """A server's steps wait at a gate until the test opens it; `entered` is set once a step is waiting (the
    sampler replaced from the test side, never a hook in the product)."""
    import threading
    from types import SimpleNamespace

    from helpers import replace_sample_next

    opened, entered = threading.Event(), threading.Event()

    def wait():
        entered.set()
        assert opened.wait(60), "the gate was never opened"

    replace_sample_next(monkeypatch, wait)
    yield SimpleNamespace(open=opened.set, entered=entered)
    opened.set()


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Playwright driving Debian's chromium); skips where either is missing."""
    from browser import chromium_executable

    executable = chromium_executable()
    if executable is None:
        pytest.skip("headless Chromium not found: apt-get install chromium (CI installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def node() -> str:
    """The node executable; skips where it is missing."""
    from browser import node_executable

    path = node_executable()
    if path is None:
        pytest.skip("node not found: apt-get install nodejs (CI installs it)")
    return path


TF32_FLAGS = ("cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


@pytest.fixture(autouse=True)
def fp32_flags_restored():
    """A test that sets TF32 flags (the GPU benchmarks' suites run on the CPU here) sets them for the whole
    process: put them back, or a later test meets torch's refusal of mixed flags (torch.export reads them)."""
    torch = sys.modules.get("torch")  # not imported yet: no flag was set, and the test may want no torch
    if torch is None:
        yield
        return
    backends = {name: functools.reduce(getattr, name.split("."), torch.backends) for name in TF32_FLAGS}
    saved = {name: getattr(b, "fp32_precision", None) for name, b in backends.items()}
    yield
    for name, value in saved.items():
        if value is not None and getattr(backends[name], "fp32_precision", None) != value:
            backends[name].fp32_precision = value


@pytest.fixture(scope="session", autouse=True)
def stop_signals_live():
    """Started under nohup or as a background job, the tests inherit SIGINT and SIGHUP ignored, and charlm (as it
    should) leaves a parent's SIG_IGN alone: the tests of stop signals need them live, in this process and in the
    processes it starts (a Python handler becomes the default at exec; SIG_IGN would be inherited)."""
    for name, live in (("SIGINT", signal.default_int_handler), ("SIGHUP", signal.SIG_DFL)):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, live)
