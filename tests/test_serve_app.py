"""charlm serve's app over real HTTP (uvicorn on a free port in a thread, httpx): every endpoint, every limit's
error, streaming, the OpenAPI page's maxima. The scheduler's behaviour under load is tests/test_serve_scheduler.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest
from helpers import serving, tiny_timemachine_model

import charlm
from charlm.errors import UsageError
from charlm.generation.options import SamplingOptions
from charlm.serve.app import create_app
from charlm.serve.limits import Limits

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("single_thread")
LIMITS = Limits(prefix_chars=50, length=300, num_samples=4, beam=3, stop_texts=2, stop_chars=5, text_chars=2000)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(model):
    with serving(create_app(model, LIMITS)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def events(response) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a text/event-stream body."""
    found = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_health_and_the_model_facts(client, model):
    assert client.get("/health").json()["status"] == "ok"
    facts = client.get("/model").json()
    m = model.checkpoint.model_config
    assert (facts["kind"], facts["hidden_size"], facts["num_layers"]) == (m.kind, m.hidden_size, m.num_layers)
    assert facts["vocab_size"] == len(model.vocab) and facts["name"] == "tiny" and facts["loss_split"] == "val"
    assert facts["loss"] == model.checkpoint.train_state.last_record["val_loss"]
    assert facts["parameters"] == model.net.num_parameters() and facts["epoch"] == 1


def test_a_seeded_request_gives_the_text_of_the_api_and_the_records_of_generate_json(client, model):
    body = {"prefix": "The ", "length": 60, "seed": 7, "num_samples": 2, "temperature": 0.9, "top_k": 10}
    response = client.post("/generate", json=body)
    assert response.status_code == 200
    samples = response.json()["samples"]
    # the same code path as charlm.load(...).samples (Stream's own loop): the same text, exactly
    assert [s["text"] for s in samples] == model.samples("The ", 60, 2, seed=7, temperature=0.9, top_k=10)
    options = SamplingOptions(temperature=0.9, top_k=10, num_samples=2, seed=7)
    assert samples[1].keys() == {"sample", "prefix", "text", "generated", "stop", "bits_per_char", "options"}
    assert samples[1]["options"] == {"length": 60, **options.to_dict()} and samples[1]["sample"] == 2


def test_unseeded_samples_stop_texts_and_beam_search(client, model):
    samples = client.post("/generate", json={"prefix": "the", "length": 40, "num_samples": 3}).json()["samples"]
    assert len(samples) == 3 and all(s["text"].startswith("the") and s["generated"] == 40 for s in samples)
    stopped = client.post("/generate", json={"prefix": "the", "length": 200, "stop": ["e"], "num_samples": 4})
    for s in stopped.json()["samples"]:
        assert (s["stop"] == "e" and s["text"].endswith("e")) or s["generated"] == 200
        assert "e" not in s["text"][3:-1]
    beams = client.post("/generate", json={"prefix": "the", "length": 20, "beam": 3, "num_samples": 2}).json()
    expected = model.samples("the", 20, 2, temperature=0.0, beam=3)
    assert [s["text"] for s in beams["samples"]] == expected
    assert client.post("/generate", json={"length": 0}).json()["samples"][0]["generated"] == 0


def test_a_stream_sends_each_character_then_the_samples(client):
    body = {"prefix": "the", "length": 50, "num_samples": 2, "stop": ["e "], "stream": True}
    response = client.post("/generate", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    found = events(response)
    kinds = [kind for kind, _ in found]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"chars"} and 1 <= len(kinds) - 1 <= 50
    final = found[-1][1]["samples"]
    for n, sample in enumerate(final):
        streamed = "".join(data["chars"][n] for _, data in found[:-1])
        assert sample["prefix"] + streamed == sample["text"]  # nothing after a stop text is sent


def test_a_seeded_stream_ends_with_the_text_of_the_json_answer(client):
    body = {"prefix": "the", "length": 30, "seed": 5}
    plain = client.post("/generate", json=body).json()["samples"]
    found = events(client.post("/generate", json={**body, "stream": True}))
    assert found[-1] == ("done", {"samples": plain})
    assert "the" + "".join(data["chars"][0] for _, data in found[:-1]) == plain[0]["text"]


def test_perplexity_gives_the_figures_of_the_api_and_each_characters_bits(client, model):
    text = "The Time Traveller was expounding a recondite matter to us."
    answer = client.post("/perplexity", json={"text": text}).json()
    expected = model.perplexity(text)
    assert answer.keys() == {"nats_per_char", "bits_per_char", "perplexity", "chars"}
    assert answer["chars"] == expected["chars"]
    # char_losses sums as evaluate does (its docstring: the same to the last bit); a tolerance all the same
    assert answer["nats_per_char"] == pytest.approx(expected["nats_per_char"], rel=1e-9)
    detailed = client.post("/perplexity", json={"text": text, "bits": True}).json()
    assert len(detailed["bits"]) == detailed["chars"] == len(detailed["scored"])
    assert detailed["scored"] == text[1 : 1 + detailed["chars"]]
    assert math.fsum(detailed["bits"]) / detailed["chars"] == pytest.approx(detailed["bits_per_char"], rel=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"length": 301}, 422, "length: Input should be less than or equal to 300"),
        ({"num_samples": 5}, 422, "num_samples: Input should be less than or equal to 4"),
        ({"beam": 4}, 422, "beam: Input should be less than or equal to 3"),
        ({"prefix": "a" * 51}, 422, "prefix: String should have at most 50 characters"),
        ({"stop": ["a", "b", "c"]}, 422, "stop: List should have at most 2 items"),
        ({"stop": ["abcdef"]}, 422, "stop.0: String should have at most 5 characters"),
        ({"repetition_window": 5000}, 422, "repetition_window: Input should be less than or equal to 4096"),
        ({"length": "5"}, 422, "length: Input should be a valid integer"),
        ({"stream": 1}, 422, "stream: Input should be a valid boolean"),
        ({"prefix_file": "/etc/passwd"}, 422, "prefix_file: Extra inputs are not permitted"),
        ({"prefix": "日"}, 400, "the prefix has characters the model never saw"),
        ({"beam": 2, "stream": True}, 400, "beam search does not stream"),
        ({"weights": "fp8"}, 400, "weights must be fp32, bf16 or int8, not 'fp8'"),
    ],
)
def test_each_limit_and_bad_value_is_a_json_error_naming_it(client, body, status, words):
    response = client.post("/generate", json=body)
    assert response.status_code == status and words in response.json()["error"], response.text


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": -1},
        {"top_p": 0},
        {"num_samples": 0},
        {"seed": -1},
        {"beam": 2, "top_k": 3},
        {"beam": 2, "num_samples": 3},
        {"repetition_penalty": 0},
        {"stop": [""]},
    ],
)
def test_the_rules_of_the_options_are_the_clis_with_its_words(client, options):
    with pytest.raises(UsageError) as cli:
        SamplingOptions.of({k: tuple(v) if k == "stop" else v for k, v in options.items()}).check(100)
    response = client.post("/generate", json=options)
    assert response.status_code == 400 and response.json() == {"error": str(cli.value)}


def test_perplexity_and_request_size_limits(client):
    long = client.post("/perplexity", json={"text": "a" * 2001})
    assert long.status_code == 422 and "text: String should have at most 2000 characters" in long.json()["error"]
    unknown = client.post("/perplexity", json={"text": "日本語"})
    assert unknown.status_code == 400 and "the vocabulary lacks" in unknown.json()["error"]
    assert client.post("/perplexity", json={"text": "a"}).status_code == 400  # one character has no prediction
    # the body's limit is derived from the text's: 2,000 characters of any kind fit, in JSON's longest form
    assert LIMITS.body_limit == 12 * 2000 + 64 * 1024
    escaped = '{"text": "' + "\\ud83d\\ude00" * 2000 + '"}'
    fits = client.post("/perplexity", content=escaped.encode(), headers={"content-type": "application/json"})
    assert fits.status_code == 400 and "the vocabulary lacks" in fits.json()["error"]  # read, not refused as large
    huge = client.post(
        "/generate", content=b" " * (LIMITS.body_limit + 1), headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and f"{LIMITS.body_limit:,} bytes" in huge.json()["error"]

    def chunks():  # no Content-Length: the limit counts what arrives
        for _ in range(LIMITS.body_limit // 1024 + 2):
            yield b" " * 1024

    chunked = client.post("/generate", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    broken = client.post("/generate", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    assert client.get("/nothing").json() == {"error": "Not Found"}


def test_the_openapi_page_lists_every_option_with_its_maximum(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    generate = schema["GenerateRequest"]["properties"]
    assert set(generate) == {"prefix", "length", "stream", *SamplingOptions.__dataclass_fields__}
    assert generate["length"]["maximum"] == 300 and generate["num_samples"]["maximum"] == 4
    assert generate["beam"]["maximum"] == 3 and generate["repetition_window"]["maximum"] == 4096
    assert generate["stop"]["maxItems"] == 2 and generate["stop"]["items"]["maxLength"] == 5
    assert generate["prefix"]["anyOf"][0]["maxLength"] == 50
    assert schema["PerplexityRequest"]["properties"]["text"]["maxLength"] == 2000
    assert all(field["description"] for field in generate.values())
    assert not {name for name in generate if any(word in name for word in ("file", "path", "dir"))}
    # FastAPI's pages load their scripts from a CDN (blank offline): not served; the schema is
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_a_run_on_documents_is_served_as_generate_reads_it(tmp_path):
    """Lines with the state reset at each, lower-cased: the server puts the prefix in the run's text form and
    zeroes a row's state at <eod>, so a seeded answer is `Model.generate`'s and /perplexity is the CLI's."""
    settings = ["data.corpus=timemachine", "data.max_chars=8000", "train.epochs=1", "sample.preview_every=0"]
    settings += ["data.documents=lines", "train.reset_state_at_documents=true", "data.lowercase=true"]
    summary = charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), tmp_path / "run")
    model = charlm.load(summary.run_dir)
    with serving(create_app(model, LIMITS)) as url, httpx.Client(base_url=url, timeout=60) as client:
        body = {"prefix": "The ", "length": 120, "seed": 3, "temperature": 1.0}
        answer = client.post("/generate", json=body).json()["samples"][0]
        assert answer["text"] == model.generate("The ", 120, seed=3, temperature=1.0)
        assert answer["text"].startswith("the ")  # the run's text form
        unseeded = client.post("/generate", json={"prefix": "The ", "length": 50}).json()["samples"][0]
        assert unseeded["text"].startswith("the ")
        text = "the time traveller\nwas here\n"
        scored = client.post("/perplexity", json={"text": text}).json()
        assert scored["nats_per_char"] == pytest.approx(model.perplexity(text)["nats_per_char"], abs=1e-9)
