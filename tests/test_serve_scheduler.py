"""charlm serve under load, over real HTTP: concurrent requests stepped in one batch, the bounded queue's 503,
the time limit's 504 and error event, and a client that leaves mid-stream stopping its generation.

Deterministic without timing: the steps are held at a gate that the test opens (sample_next replaced from the
test side, never a hook in the product), and the test waits for the server's own counts (/health)."""

from __future__ import annotations

import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from helpers import replace_sample_next, serving, tiny_timemachine_model, until

from charlm.serve import batch as batch_module
from charlm.serve.app import create_app
from charlm.serve.limits import Limits

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve-load"))


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/generate", json=body, timeout=60)


def test_concurrent_requests_are_stepped_together_in_one_batch(model, gate, monkeypatch):
    rows = []  # the rows of each batch step
    step = batch_module.Batch.step
    monkeypatch.setattr(batch_module.Batch, "step", lambda self: rows.append(self.rows) or step(self))
    app = create_app(model, Limits())
    stats = app.state.scheduler.stats
    with serving(app) as url, ThreadPoolExecutor(4) as pool:
        try:
            first = pool.submit(post, url, {"prefix": "the", "length": 20})
            assert gate.entered.wait(60)  # the first request's batch is in its first step
            bodies = [
                {"prefix": p, "length": 20, "num_samples": 2, "temperature": t}
                for p, t in zip("abc", (0, 0.5, 1), strict=True)
            ]
            others = [pool.submit(post, url, body) for body in bodies]
            until(lambda: stats()["computing"] == 4, "four requests computing")
            assert stats()["batches"] == 1 and stats()["waiting"] == 0
        finally:
            gate.open()
        answers = [future.result() for future in [first, *others]]
    assert [answer.status_code for answer in answers] == [200] * 4
    assert [len(answer.json()["samples"]) for answer in answers] == [1, 2, 2, 2]
    assert all(s["generated"] == 20 for answer in answers for s in answer.json()["samples"])
    # the three joined at the first step's end: 21 steps of the batch, not 20 + 3 x 20 one after another
    assert rows == [1] + [7] * 19 + [6]


@pytest.mark.parametrize("queue", [0, 1])
def test_past_the_queue_a_request_gets_503_with_retry_after(model, gate, queue):
    app = create_app(model, Limits(computing=1, queue=queue, retry_after=3))
    stats = app.state.scheduler.stats
    seeded = {"prefix": "the", "length": 10, "seed": 1}  # a seeded request computes alone: no one joins it
    with serving(app) as url, ThreadPoolExecutor(2) as pool:
        try:
            computing = pool.submit(post, url, seeded)
            assert gate.entered.wait(60)
            waiting = pool.submit(post, url, seeded) if queue else None
            until(lambda: stats()["waiting"] == queue, f"{queue} waiting")
            for body in (seeded, {"prefix": "the", "length": 10}):
                busy = post(url, body)
                assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
                assert "busy" in busy.json()["error"]
        finally:
            gate.open()
        assert computing.result().status_code == 200
        assert waiting is None or waiting.result().status_code == 200
        until(lambda: stats()["computing"] == 0, "all done")
        assert post(url, seeded).status_code == 200  # room again


def test_past_the_time_limit_504_and_a_streams_error_event(model, gate):
    app = create_app(model, Limits(time_limit=0.3))
    with serving(app) as url:
        try:
            late = post(url, {"prefix": "the", "length": 10, "seed": 2})
            assert late.status_code == 504 and "time limit (0.3 s)" in late.json()["error"]
            stream = post(url, {"prefix": "the", "length": 10, "stream": True})
            last = stream.text.strip().split("\n\n")[-1].split("\n")
            assert last[0] == "event: error" and "time limit" in json.loads(last[1][len("data: ") :])["error"]
        finally:
            gate.open()


@pytest.mark.parametrize("seed", [None, 4], ids=["batched", "alone"])
def test_a_client_that_leaves_mid_stream_stops_its_generation(model, monkeypatch, seed):
    replace_sample_next(monkeypatch, lambda: time.sleep(0.002))  # 2,000 steps: seconds, not milliseconds
    app = create_app(model, Limits())
    stats = app.state.scheduler.stats
    with serving(app) as url:
        body = {"prefix": "the", "length": 2000, "stream": True, "seed": seed}
        with httpx.stream("POST", f"{url}/generate", json=body, timeout=60) as response:
            seen = 0
            for line in response.iter_lines():
                seen += line == "event: chars"
                if seen == 3:
                    break
        until(lambda: stats()["computing"] == 0, "the generation stopped")
        steps = stats()["steps"]
        assert 3 <= steps < 2000
        time.sleep(0.1)
        assert stats()["steps"] == steps
    gc.collect()  # the stopped generation's loop was closed in its worker: this thread's autograd is untouched
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_a_failure_in_a_batch_is_a_500_for_its_requests_and_the_server_goes_on(model, monkeypatch):
    step, calls = batch_module.Batch.step, []

    def failing_once(self):
        calls.append(self.rows)
        if len(calls) == 1:
            raise RuntimeError("a fault injected by the test")
        return step(self)

    monkeypatch.setattr(batch_module.Batch, "step", failing_once)
    app = create_app(model, Limits())
    with serving(app) as url:
        failed = post(url, {"prefix": "the", "length": 10})
        assert failed.status_code == 500
        assert failed.json() == {"error": "unexpected RuntimeError: a fault injected by the test"}
        assert post(url, {"prefix": "the", "length": 10}).status_code == 200
        # the worker counts the job done just after the reply is handed over: wait for it, not for a race
        until(lambda: app.state.scheduler.stats()["computing"] == 0, "the failed batch released")
