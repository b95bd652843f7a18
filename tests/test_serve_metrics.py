"""GET /metrics read back with prometheus-client's own parser: requests by route and status (an unknown path
counted as "other", never as a new series), queue depth, requests computing, characters generated, time to
the first character, time per character, rows per batch step."""

from __future__ import annotations

import httpx
import pytest
from helpers import serving, tiny_timemachine_model

from charlm.serve.app import create_app

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is not installed")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve-metrics"))


def scrape(url: str) -> dict:
    """{(sample name, labels as a sorted tuple): value}."""
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = {}
    for family in parser.text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_figures_follow_the_requests(model):
    with serving(create_app(model)) as url:
        before = scrape(url)
        assert before[("charlm_queue_depth", ())] == 0 and before[("charlm_requests_computing", ())] == 0
        httpx.post(f"{url}/generate", json={"prefix": "the", "length": 40, "num_samples": 3})
        httpx.post(f"{url}/v1/completions", json={"prompt": "the", "max_tokens": 10, "seed": 1})
        httpx.post(f"{url}/generate", json={"length": -1})
        for path in ("/nothing/1", "/nothing/2", "/nothing/3"):
            httpx.get(url + path)
        after = scrape(url)
    counted = {key: value for key, value in after.items() if key[0] == "charlm_requests_total"}
    assert counted[("charlm_requests_total", (("route", "/generate"), ("status", "200")))] == 1
    assert counted[("charlm_requests_total", (("route", "/generate"), ("status", "400")))] == 1
    assert counted[("charlm_requests_total", (("route", "/v1/completions"), ("status", "200")))] == 1
    assert counted[("charlm_requests_total", (("route", "other"), ("status", "404")))] == 3
    assert after[("charlm_chars_generated_total", ())] - before[("charlm_chars_generated_total", ())] == 3 * 40 + 10
    assert after[("charlm_time_to_first_char_seconds_count", ())] == 2
    assert after[("charlm_time_per_char_seconds_count", ())] == 2
    assert after[("charlm_batch_rows_count", ())] == 40  # the unseeded request's steps; the seeded one runs alone
    assert after[("charlm_batch_rows_bucket", (("le", "2.0"),))] == 0
    assert after[("charlm_batch_rows_bucket", (("le", "4.0"),))] == 40  # 3 rows each step
