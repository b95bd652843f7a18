"""The OpenAI-compatible routes driven by the real `openai` Python package over real HTTP: completions (plain,
n, stop, seed, streamed, logprobs, echo, prompts as lists and as character ids), models, chat; the SDK's own
exception classes for a 400 and a 429; unknown fields ignored on /v1 and refused on the native routes."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import serving, tiny_timemachine_model, until

from charlm.evaluate import TextSource, score_model
from charlm.serve.app import create_app
from charlm.serve.limits import Limits

openai = pytest.importorskip("openai", reason="the openai package is not installed: pip install openai")
pytestmark = pytest.mark.usefixtures("single_thread")
LIMITS = Limits(prefix_chars=200, length=300, num_samples=4, stop_texts=3, text_chars=2000)
PROMPT = "the time traveller"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_timemachine_model(tmp_path_factory.mktemp("serve-openai"))


@pytest.fixture(scope="module")
def url(model):
    with serving(create_app(model, LIMITS)) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, **options):
    return client.completions.create(model="any", **{"prompt": PROMPT, **options})


def test_models_list_the_served_model_by_its_folder_name(client, model):
    [listed] = client.models.list().data
    assert listed.id == model.path.name and listed.owned_by == "charlm"
    assert client.models.retrieve(listed.id).id == listed.id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_a_plain_completion_counts_characters_as_tokens(client):
    answer = complete(client, max_tokens=25, temperature=0)
    [choice] = answer.choices
    assert answer.object == "text_completion" and choice.index == 0 and choice.finish_reason == "length"
    assert len(choice.text) == 25
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(PROMPT), 25)
    assert answer.usage.total_tokens == len(PROMPT) + 25


def test_n_choices_and_several_prompts_each_answered_with_n(client):
    assert [c.index for c in complete(client, max_tokens=10, n=3).choices] == [0, 1, 2]
    both = complete(client, prompt=["the ", "a"], max_tokens=10, n=2, seed=3)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    again = complete(client, prompt="a", max_tokens=10, n=2, seed=3)
    assert [c.text for c in both.choices[2:]] == [c.text for c in again.choices]  # prompt 2's choices, alone
    assert both.usage.prompt_tokens == len("the ") + len("a") and both.usage.completion_tokens == 40


def test_a_seed_gives_the_same_text_twice(client):
    first, second = (complete(client, max_tokens=40, temperature=1.0, seed=11, n=2) for _ in range(2))
    assert [c.text for c in first.choices] == [c.text for c in second.choices]
    assert first.choices[0].text != first.choices[1].text


def test_a_stop_text_ends_a_choice_and_is_left_out(client):
    stopped = complete(client, max_tokens=200, temperature=1.0, seed=2, n=4, stop=["e", "th"])
    for choice in stopped.choices:
        assert "e" not in choice.text and "th" not in choice.text
        assert choice.finish_reason == "stop" or len(choice.text) == 200
    assert any(choice.finish_reason == "stop" for choice in stopped.choices)


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 1.0, "seed": 9, "stop": [" t", "e"]}])
def test_a_stream_assembled_is_the_whole_answer(client, options):
    whole = complete(client, max_tokens=60, **options).choices[0]
    chunks = list(complete(client, max_tokens=60, stream=True, **options))
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.text
    assert [c.choices[0].finish_reason for c in chunks][-1] == whole.finish_reason
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])


def test_a_stream_ends_with_the_usage_when_asked(client):
    chunks = list(complete(client, max_tokens=12, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == len(PROMPT)


def test_logprobs_are_the_models_own_and_match_perplexity(client, url, model):
    choice = complete(client, max_tokens=30, temperature=0, logprobs=5).choices[0]
    logprobs = choice.logprobs
    assert logprobs.tokens == list(choice.text) and len(logprobs.token_logprobs) == 30
    assert logprobs.text_offset == list(range(len(PROMPT), len(PROMPT) + 30))
    for token, chosen, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert len(top) == 5 and sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        assert max(top, key=top.get) == token and top[token] == pytest.approx(chosen, abs=1e-6)  # greedy: the top
    # the chosen character's log-probability is what /perplexity gives it (a two-character text: one stream)
    first = complete(client, prompt="t", max_tokens=1, temperature=1.0, seed=4, logprobs=1).choices[0]
    bits = httpx.post(f"{url}/perplexity", json={"text": "t" + first.text, "bits": True}).json()["bits"]
    assert -first.logprobs.token_logprobs[0] / math.log(2) == pytest.approx(bits[0], rel=1e-5)
    # and over the whole prompt and choice, `charlm perplexity --text`'s figure (one stream, state carried)
    text = PROMPT + choice.text
    figures, _ = score_model(model.net, model.vocab, model.checkpoint, source=TextSource(text=text))
    ours = complete(client, prompt=text, max_tokens=0, echo=True, logprobs=0).choices[0].logprobs
    assert ours.token_logprobs[0] is None and ours.tokens == list(text)
    assert -math.fsum(ours.token_logprobs[1:]) == pytest.approx(figures["nats_per_char"] * figures["chars"], rel=1e-5)


def test_echo_puts_the_prompt_first_and_scores_it(client):
    choice = complete(client, max_tokens=5, temperature=0, echo=True, logprobs=2).choices[0]
    assert choice.text.startswith(PROMPT) and len(choice.text) == len(PROMPT) + 5
    assert choice.logprobs.tokens == list(choice.text) and choice.logprobs.text_offset[:3] == [0, 1, 2]
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
    streamed = "".join(c.choices[0].text for c in complete(client, max_tokens=5, temperature=0, echo=True, stream=True))
    assert streamed == choice.text


def test_a_prompt_of_character_ids_is_its_text(client, url):
    ids = httpx.post(f"{url}/tokenize", json={"prompt": PROMPT}).json()["tokens"]
    assert len(ids) == len(PROMPT)
    assert httpx.post(f"{url}/detokenize", json={"tokens": ids}).json() == {"prompt": PROMPT}
    by_ids = complete(client, prompt=ids, max_tokens=20, temperature=0).choices[0].text
    assert by_ids == complete(client, max_tokens=20, temperature=0).choices[0].text


def test_chat_completions_whole_and_streamed(client):
    messages = [{"role": "system", "content": "the"}, {"role": "user", "content": "time traveller"}]
    whole = client.chat.completions.create(model="any", messages=messages, max_tokens=30, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert len(whole.choices[0].message.content) == 30
    assert whole.usage.prompt_tokens == len("the\ntime traveller\n")  # the template: each content on its own line
    chunks = list(
        client.chat.completions.create(model="any", messages=messages, max_tokens=30, temperature=0, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"prompt": "the 分"}, "prompt", "'分'"),
        ({"max_tokens": 301}, "max_tokens", "less than or equal to 300"),
        ({"presence_penalty": 0.5}, "presence_penalty", "repetition_penalty"),
        ({"frequency_penalty": 1.0}, "frequency_penalty", "repetition_penalty"),
        ({"temperature": -1.0}, None, "temperature"),
        ({"n": 5}, "n", "less than or equal to 4"),
        ({"stop": ["a", "b", "c", "d"]}, "stop", "at most 3"),
    ],
)
def test_a_bad_request_is_the_sdks_bad_request_error_naming_the_field(client, options, param, words):
    with pytest.raises(openai.BadRequestError) as raised:
        complete(client, **{"max_tokens": 5, **options})
    error = raised.value.body
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert param is None or error["param"] == param


def test_unknown_fields_are_ignored_on_v1_and_refused_on_the_native_routes(client, url):
    extras = {"user": "someone", "logit_bias": {}, "best_of": 1, "suffix": None, "no_such_field": [1, 2]}
    assert len(complete(client, max_tokens=5, extra_body=extras).choices[0].text) == 5
    native = httpx.post(f"{url}/generate", json={"prefix": "the", "length": 5, "logprobs": 1})
    assert native.status_code == 422 and "logprobs" in native.json()["error"]


def test_a_full_queue_is_the_sdks_rate_limit_error_with_retry_after(model, gate):
    app = create_app(model, Limits(computing=1, queue=0, retry_after=2))
    with serving(app) as url, ThreadPoolExecutor(1) as pool:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        try:
            busy = pool.submit(complete, client, max_tokens=5, seed=1)  # a seeded request computes alone
            assert gate.entered.wait(60)
            with pytest.raises(openai.RateLimitError) as raised:
                complete(client, max_tokens=5, seed=2)
            assert raised.value.response.headers["retry-after"] == "2"
            assert raised.value.body["code"] == "rate_limit_exceeded"
            native = httpx.post(f"{url}/generate", json={"prefix": "the", "length": 5, "seed": 2})
            assert native.status_code == 503  # the native route as before
        finally:
            gate.open()
        assert len(busy.result().choices[0].text) == 5
        until(lambda: app.state.scheduler.stats()["computing"] == 0, "all done")
        retrying = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=2, timeout=60)
        assert len(complete(retrying, max_tokens=5).choices[0].text) == 5
