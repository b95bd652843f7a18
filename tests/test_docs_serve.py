"""The serving page's examples run against a real server (a tiny lyrics model on a free port of 127.0.0.1):
every `curl` line of its bash blocks and every Python block, with the page's localhost:8000 made the test
server's address. test_docs.py runs the page's `charlm` lines; this runs what talks to the server."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import serving
from test_docs import blocks, logical_lines

import charlm
from charlm.serve.app import create_app

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "serve.md"
ADDRESS = re.compile(r"(?:http://)?(?:localhost|127\.0\.0\.1):8000")
pytestmark = pytest.mark.usefixtures("single_thread")
# the lm-eval example reads a local file with `datasets`: no network, and its cache out of the user's home
for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(name, "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="charlm-hf-"))


def examples(language: str) -> list[tuple[int, str]]:
    """(line number, text) of each curl line (bash) or each whole block (python) of the page."""
    found = []
    for kind, start, body in blocks(PAGE.read_text(encoding="utf-8")):
        if kind == "python" == language:
            found.append((start, "\n".join(body)))
        elif kind == "bash" == language:
            found += [(n, text) for n, text, _ in logical_lines(body, start, console=False) if text.startswith("curl")]
    return found


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    settings = ["data.corpus=jaychou", "data.max_chars=100000", "train.epochs=1", "sample.preview_every=0"]
    root = tmp_path_factory.mktemp("docs-serve")
    run = charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), root / "lyrics").run_dir
    with serving(create_app(charlm.load(run))) as url:
        yield url


def test_the_page_has_the_examples_the_guide_promises():
    assert len(examples("bash")) >= 8 and len(examples("python")) >= 3
    assert any("/v1/completions" in text for _, text in examples("bash"))
    assert any("from openai import OpenAI" in text for _, text in examples("python"))


@pytest.mark.parametrize(("line", "text"), examples("bash"), ids=lambda v: str(v)[:40])
def test_each_curl_line_answers(url, line, text):
    command = "curl --fail-with-body" + ADDRESS.sub(url, text).removeprefix("curl")  # an HTTP error fails it
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), f"serve.md:{line}: {done.stderr or done.stdout}"


@pytest.mark.parametrize(("line", "code"), examples("python"), ids=lambda v: str(v)[:40])
def test_each_python_block_runs(url, line, code, capsys):
    exec(compile(ADDRESS.sub(url, code), f"serve.md:{line}", "exec"), {})
    assert capsys.readouterr().out.strip()
