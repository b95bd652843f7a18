"""API keys and browser origins over real HTTP: every route but /health needs a key once the server has one,
in each route's error shape; keys from the flag and the environment; CORS for the origins allowed only."""

from __future__ import annotations

import httpx
import pytest
from helpers import serving, tiny_timemachine_model

from charlm.errors import UsageError
from charlm.serve.access import KEY_VARIABLE, api_keys
from charlm.serve.app import create_app

pytestmark = pytest.mark.usefixtures("single_thread")
KEYS = ("first-key", "second-key")
ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve-access"))


@pytest.fixture(scope="module")
def url(model):
    with serving(create_app(model, keys=KEYS, cors_origins=(ORIGIN,))) as url:
        yield url


ROUTES = [
    ("GET", "/model", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("POST", "/generate", {"prefix": "the", "length": 5}),
    ("POST", "/perplexity", {"text": "the time"}),
    ("POST", "/tokenize", {"prompt": "the"}),
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"prompt": "the", "max_tokens": 5}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "the"}], "max_tokens": 5}),
    ("GET", "/no/such/route", None),
]
WRONG = [
    None,
    "Bearer",
    "Bearer  x",
    "Bearer first-ke",
    "Bearer first-key2",
    "Basic first-key",
    "first-key",
    "Bearer x" * 50,
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_but_health_needs_a_key_in_its_own_error_shape(url, method, path, body):
    for header in WRONG:
        headers = {} if header is None else {"Authorization": header}
        refused = httpx.request(method, url + path, json=body, headers=headers, timeout=60)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", header
        error = refused.json()["error"]
        if path.startswith("/v1"):
            assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        else:
            assert "Authorization: Bearer" in error
    for key in KEYS:
        allowed = httpx.request(method, url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert allowed.status_code == (404 if path == "/no/such/route" else 200)


def test_health_is_open_to_all(url):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_the_openai_client_with_a_key(url):
    openai = pytest.importorskip("openai", reason="the openai package is not installed: pip install openai")
    good = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[1], max_retries=0)
    assert good.completions.create(model="any", prompt="the", max_tokens=3).usage.completion_tokens == 3
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0).models.list()


def test_a_browser_origin_allowed_and_one_not(url):
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    answer = httpx.options(f"{url}/v1/completions", headers=preflight)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    simple = httpx.get(f"{url}/v1/models", headers={"Origin": ORIGIN, "Authorization": f"Bearer {KEYS[0]}"})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(f"{url}/v1/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_keys_from_the_flag_and_the_environment(monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    assert api_keys(None) == () and api_keys(["a", "a", " b "]) == ("a", "b")
    monkeypatch.setenv(KEY_VARIABLE, "c,d")
    assert api_keys(["a"]) == ("a", "c", "d")
    for bad in ("c,,d", " ", "tab\tkey", "clé"):
        monkeypatch.setenv(KEY_VARIABLE, bad)
        with pytest.raises(UsageError):
            api_keys(None)
