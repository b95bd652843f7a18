"""charlm serve under hostile or careless use, over real HTTP (the fourth hostile round, docs/hostile-round-4.md):
no option breaks the other rows of a batch, work stops when nobody waits for it, connections cannot be held
for free, nothing tells a stranger where things lie, and every refusal is the API's JSON error.

Work is slowed from the test side where a test must see it stop (the sampler, beam search's step, scoring's
windows wrapped with a short sleep), never by a hook in the product; the test waits for the server's own
counts."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import replace_sample_next, serving, tiny_timemachine_model, until

import charlm
from charlm import evaluate
from charlm.generation import beam as beam_module
from charlm.generation import controls
from charlm.serve.access import host_names
from charlm.serve.app import create_app
from charlm.serve.limits import Limits

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve-hostile"))


def post(url: str, body: dict, path: str = "/generate", **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=kwargs.pop("timeout", 60), **kwargs)


def raw(url: str, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send `data` on a new connection and read what comes back until the server closes it (or `wait`)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def json_error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# 1. One request cannot break the others of its batch

EXTREMES = [
    {"temperature": 1e-40},
    {"temperature": 1e-300},
    {"temperature": 1e300},
    {"top_p": 1e-300},
    {"top_p": 5e-324, "top_k": 3},
    {"repetition_penalty": 1e-40},
    {"repetition_penalty": 1e300},
    {"repetition_penalty": 1e-40, "temperature": 1e-40},
]


def test_no_option_value_breaks_a_batch(model, gate):
    app = create_app(model, Limits())
    stats = app.state.scheduler.stats
    with serving(app) as url, ThreadPoolExecutor(len(EXTREMES) + 1) as pool:
        try:
            plain = pool.submit(post, url, {"prefix": "the", "length": 30, "stream": True})
            assert gate.entered.wait(60)
            extreme = [pool.submit(post, url, {"prefix": "the", "length": 30, **options}) for options in EXTREMES]
            until(lambda: stats()["computing"] == len(EXTREMES) + 1, "every request in the batch")
        finally:
            gate.open()
        answers = [future.result() for future in extreme]
        streamed = plain.result()
    for options, answer in zip(EXTREMES, answers, strict=True):
        assert answer.status_code == 200, (options, answer.text)
        assert answer.json()["samples"][0]["generated"] == 30
    assert streamed.text.rstrip().splitlines()[-2] == "event: done"


def test_a_set_of_rows_that_fails_fails_alone(model, gate, monkeypatch):
    def broken(self, logits):
        raise RuntimeError("a penalty that fails")

    monkeypatch.setattr(controls.RepetitionPenalty, "__call__", broken)
    app = create_app(model, Limits())
    with serving(app) as url, ThreadPoolExecutor(3) as pool:
        try:
            first = pool.submit(post, url, {"prefix": "the", "length": 20})
            assert gate.entered.wait(60)
            bad = pool.submit(post, url, {"prefix": "the", "length": 20, "repetition_penalty": 1.3})
            other = pool.submit(post, url, {"prefix": "a", "length": 20, "temperature": 0.5})
            until(lambda: app.state.scheduler.stats()["computing"] == 3, "three in the batch")
        finally:
            gate.open()
        assert first.result().status_code == 200 and other.result().status_code == 200
        failed = bad.result()
    assert failed.status_code == 500 and "unexpected RuntimeError" in failed.json()["error"]


# 2. Work stops when nobody waits for it


def slow_beam_steps(monkeypatch) -> list:
    """Each beam-search step sleeps 5 ms; the list grows by one per step."""
    taken, original = [], beam_module.reset_rows

    def slow(*args, **kwargs):
        taken.append(1)
        time.sleep(0.005)
        return original(*args, **kwargs)

    monkeypatch.setattr(beam_module, "reset_rows", slow)
    return taken


def slow_scoring_windows(monkeypatch) -> list:
    """Each scoring window sleeps 100 ms (a 48,000-character text: about 9 s); the list grows by one per window."""
    taken, original = [], evaluate._windows

    def slow(*args, **kwargs):
        for window in original(*args, **kwargs):
            taken.append(1)
            time.sleep(0.1)
            yield window

    monkeypatch.setattr(evaluate, "_windows", slow)
    return taken


def stops_growing(counted: list, what: str) -> None:
    """The count stops growing within 2 s: the work has stopped."""
    deadline = time.monotonic() + 10
    while True:
        before = len(counted)
        time.sleep(0.3)
        if len(counted) == before:
            return
        assert time.monotonic() < deadline, f"{what} went on computing"


LONG_TEXT = "the time traveller was expounding a recondite matter to us. " * 800  # 48,000 characters


@pytest.mark.parametrize("kind", ["samples", "beam", "perplexity", "logprobs"])
def test_a_request_whose_client_leaves_stops_at_its_next_step(model, monkeypatch, kind):
    replace_sample_next(monkeypatch, lambda: time.sleep(0.005))  # 2,000 steps: 10 s
    beams, windows = slow_beam_steps(monkeypatch), slow_scoring_windows(monkeypatch)
    app = create_app(model, Limits(text_chars=50_000))
    stats = app.state.scheduler.stats
    path, body, counted = {
        "samples": ("/generate", {"prefix": "the", "length": 2000, "num_samples": 16}, None),
        "beam": ("/generate", {"prefix": "the", "length": 2000, "beam": 8}, beams),
        "perplexity": ("/perplexity", {"text": LONG_TEXT}, windows),
        "logprobs": (
            "/v1/completions",
            {"prompt": LONG_TEXT[:900], "max_tokens": 0, "echo": True, "logprobs": 5},
            windows,
        ),
    }[kind]
    with serving(app) as url:
        with pytest.raises(httpx.ReadTimeout):
            post(url, body, path, timeout=1.0)  # the client gives up after a second and closes the connection
        until(lambda: stats()["computing"] == 0, "the abandoned request withdrawn", 5)
        if counted is not None:
            stops_growing(counted, kind)
        else:
            steps = stats()["steps"]
            time.sleep(0.3)
            assert stats()["steps"] == steps


@pytest.mark.parametrize("kind", ["beam", "perplexity"])
def test_past_the_time_limit_work_that_runs_alone_stops_too(model, monkeypatch, kind):
    beams, windows = slow_beam_steps(monkeypatch), slow_scoring_windows(monkeypatch)
    app = create_app(model, Limits(time_limit=0.5, text_chars=50_000))
    path, body = (
        ("/generate", {"prefix": "the", "length": 2000, "beam": 8})
        if kind == "beam"
        else ("/perplexity", {"text": LONG_TEXT})
    )
    with serving(app) as url:
        late = post(url, body, path)
        assert late.status_code == 504 and "time limit" in late.json()["error"]
        stops_growing(beams if kind == "beam" else windows, kind)
        until(lambda: app.state.scheduler.stats()["computing"] == 0, "nothing computing", 5)


def test_requests_abandoned_in_the_queue_leave_it(model, monkeypatch):
    replace_sample_next(monkeypatch, lambda: time.sleep(0.002))
    app = create_app(model, Limits(computing=1, queue=4))
    stats = app.state.scheduler.stats
    seeded = json.dumps({"prefix": "the", "length": 2000, "seed": 1}).encode()
    with serving(app) as url:
        host = url.removeprefix("http://")
        request = (
            f"POST /generate HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(seeded)}\r\n\r\n"
        ).encode() + seeded
        for _ in range(34):  # sent, and the connection closed 50 ms later: nobody waits for any of them
            raw(url, request, wait=0.05)
        until(lambda: stats()["computing"] + stats()["waiting"] == 0, "the abandoned requests gone", 10)
        assert post(url, {"prefix": "the", "length": 20, "seed": 2}).status_code == 200


# 3. Connections cannot be held for free


@pytest.fixture
def quick(model):
    app = create_app(model, Limits(read_time=0.5, connections=20))
    with serving(app) as url:
        yield url


@pytest.mark.parametrize(
    "half",
    [
        b'POST /generate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"pre',
        b"POST /generate HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        b'5\r\n{"pre\r\n',
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 10\r\n\r\n",
    ],
    ids=["short-body", "unfinished-chunks", "no-body-v1"],
)
def test_a_body_that_never_arrives_is_408_within_the_read_time(quick, half):
    started = time.monotonic()
    status, error = json_error(raw(quick, half))
    assert status == 408 and time.monotonic() - started < 3
    message = error["error"]["message"] if isinstance(error["error"], dict) else error["error"]
    assert "did not arrive within 0.5 s" in message


def test_a_slow_head_is_408_and_closed(quick):
    host, port = quick.removeprefix("http://").rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        answer = b""
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ":  # a header byte every 0.1 s
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert json_error(answer)[0] == 408 and time.monotonic() - started < 5


def test_idle_connections_past_the_cap_are_refused_and_all_are_closed_in_time(quick):
    host, port = quick.removeprefix("http://").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
    try:
        refused = 0
        for sock in idle[20:]:
            answer = sock.recv(4096)
            refused += json_error(answer)[0] == 503
        assert refused == 20  # the cap: 20 open at once
        until(lambda: httpx.get(f"{quick}/health", timeout=5).status_code == 200, "health again", 10)
        for sock in idle[:20]:  # closed by the server once their read time was spent, each told why
            assert json_error(sock.recv(4096))[0] == 408
    finally:
        for sock in idle:
            sock.close()


# 4. What the server tells strangers


def test_model_facts_name_the_corpus_not_where_it_lies(model, tmp_path):
    corpus = tmp_path / "deep" / "folder" / "my corpus.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("the time machine, by h. g. wells. " * 200, encoding="utf-8")
    settings = [f"data.corpus={corpus}", "train.epochs=1", "sample.preview_every=0"]
    run = charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), tmp_path / "run").run_dir
    with serving(create_app(charlm.load(run))) as url:
        facts = httpx.get(f"{url}/model").json()
    assert facts["corpus"] == "my corpus.txt" and str(tmp_path) not in json.dumps(facts)


@pytest.mark.parametrize(
    ("listened", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "localhost:8000", True),
        ("127.0.0.1", "LOCALHOST", True),
        ("127.0.0.1", "[::1]:8000", True),
        ("127.0.0.1", "attacker.example:8000", False),
        ("127.0.0.1", "127.0.0.1.attacker.example", False),
        ("127.0.0.1", "localhost.", False),
        ("::1", "[::1]:80", True),
    ],
)
def test_a_host_name_that_is_not_the_servers_is_refused(model, listened, host, allowed):
    with serving(create_app(model, hosts=host_names(listened, None))) as url:
        for path in ("/model", "/v1/models"):
            answer = httpx.get(url + path, headers={"Host": host})
            assert (answer.status_code == 200) == allowed, (path, host, answer.text)
            if not allowed:
                assert answer.status_code == 400 and "Host header" in str(answer.json()["error"])


def test_host_names_on_every_interface_and_configured():
    assert host_names("0.0.0.0", None) is None  # the names others use are not known here
    assert host_names("0.0.0.0", ["lm.example.org"]) == frozenset({"lm.example.org", "0.0.0.0"})
    assert "lm.example.org" in host_names("127.0.0.1", ["LM.example.org "])


def test_no_page_loads_scripts_from_elsewhere(model):
    with serving(create_app(model)) as url:
        assert httpx.get(f"{url}/docs").status_code == 404 and httpx.get(f"{url}/redoc").status_code == 404
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "charlm"


# 6. Errors in one shape

NOT_JSON = [
    b"\xff\xfe{}",
    b'{"prefix": "\xc3\x28"}',
    b"[" * 32000 + b"]" * 32000,
    b'{"length": ' + b"9" * 5000 + b"}",
    b"{",
    b'{"prefix": "the",}',
    b"{'prefix': 'the'}",
    b'{"prefix": "the"} trailing',
]


@pytest.mark.parametrize("body", NOT_JSON, ids=lambda b: repr(b[:16]))
@pytest.mark.parametrize("path", ["/generate", "/perplexity", "/v1/completions"])
def test_every_body_that_is_not_json_is_one_400(model_url, body, path):
    answer = httpx.post(model_url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "not valid JSON" in (error["message"] if path.startswith("/v1") else error)


@pytest.fixture(scope="module")
def model_url(model):
    with serving(create_app(model)) as url:
        yield url


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n",
        b"POST /generate HTTP/1.1\r\nHost: x\r\ncontent-length: abc\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
    ids=["1MB-header", "bad-length", "bad-chunk", "not-http"],
)
def test_what_the_http_parser_refuses_is_the_apis_json_400(model_url, request_bytes):
    status, error = json_error(raw(model_url, request_bytes))
    assert status == 400 and "not valid HTTP" in error["error"]


def test_head_health_and_a_long_text_of_wide_characters(model_url):
    assert httpx.head(f"{model_url}/health").status_code == 200
    wide = json.dumps({"text": "\u00e9" * 50_000}, ensure_ascii=True).encode()  # 6 bytes a character, escaped
    answer = httpx.post(f"{model_url}/perplexity", content=wide, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "vocabulary" in answer.json()["error"]  # read to the end, not 413
