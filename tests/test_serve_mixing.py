"""`charlm serve --mix`: every route uses the mix. An untrained model on a text of four lines the counts know
by heart: served mixed, it scores those lines far better than alone (the same figures as `perplexity --mix`),
samples them, and its OpenAI logprobs are the mix's."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import httpx
import pytest
from helpers import LINES, lines_run, serving

import charlm
from charlm.cli.main import main
from charlm.serve.app import create_app
from charlm.serve.mixing import ServedMix

pytest.importorskip("pydivsufsort")
pytestmark = pytest.mark.usefixtures("single_thread")
TEXT = "\n".join(LINES[:3]) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return lines_run(tmp_path_factory.mktemp("mix") / "run", lines=300, settings=["data.val_fraction=0.2"])


@pytest.fixture(scope="module")
def model(run):
    return charlm.load(run)


@pytest.fixture(scope="module")
def mixed(model):
    with serving(create_app(model, mix=ServedMix.load(model, max_copy=None, say=print))) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


@pytest.fixture(scope="module")
def alone(model):
    with serving(create_app(model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def test_perplexity_gives_the_networks_figures_and_the_mixs_as_the_cli_does(mixed, alone, run, tmp_path, capsys):
    network = alone.post("/perplexity", json={"text": TEXT}).json()
    answer = mixed.post("/perplexity", json={"text": TEXT, "bits": True}).json()
    assert {k: answer[k] for k in network} == network  # the network's figures at the top, unchanged
    capsys.readouterr()
    # the server reads a text as `perplexity --file` reads a file
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    assert main(["perplexity", "-r", str(run), "--file", str(tmp_path / "text.txt"), "--mix", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["mix"]
    assert {k: answer["mix"][k] for k in cli} == cli  # the same code path: the same figures, exactly
    assert answer["mix"]["nats_per_char"] < 0.5 * network["nats_per_char"]
    bits = answer["mix"]["bits"]
    assert len(bits) == answer["mix"]["chars"]
    # each character's bits from its loss kept in float32, the figure summed in float64
    assert sum(bits) * math.log(2) / len(bits) == pytest.approx(answer["mix"]["nats_per_char"], rel=1e-6)


def test_samples_of_the_mix_recite_the_lines_the_network_alone_cannot(mixed, alone):
    body = {"prefix": LINES[0][:6], "length": 200, "seed": 3, "temperature": 0.5}
    sample = mixed.post("/generate", json=body).json()["samples"][0]["text"]
    lines = [line for line in sample.split("\n")[1:-1] if line]
    assert lines and all(line in LINES for line in lines), sample
    untrained = alone.post("/generate", json=body).json()["samples"][0]["text"]
    assert not any(line in LINES for line in untrained.split("\n")[1:-1])


def test_many_mixed_requests_at_once_each_keep_their_own_rows(mixed):
    bodies = [{"prefix": line[:5], "length": 80, "seed": i, "temperature": 0.3} for i, line in enumerate(LINES)]
    with httpx.Client(base_url=str(mixed.base_url), timeout=60) as client:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: client.post("/generate", json=body).json(), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        text = answer["samples"][0]["text"]
        # each sample carries on the line its own prefix starts
        assert text.startswith(body["prefix"]) and text.split("\n")[0] in LINES, text


def test_openai_logprobs_are_the_mixs_and_agree_with_its_figures(mixed, run, capsys):
    body = {"model": "run", "prompt": TEXT, "max_tokens": 0, "echo": True, "logprobs": 2}
    choice = mixed.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    chosen = choice["token_logprobs"][1:]
    capsys.readouterr()
    # `perplexity --text` reads a text in one stream, as the logprobs are read
    assert main(["perplexity", "-r", str(run), "--text", TEXT, "--mix", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["mix"]
    assert len(chosen) == scored["chars"]
    # two code paths (the whole distribution against the character's own probability): equal to rounding
    assert -sum(chosen) / len(chosen) == pytest.approx(scored["nats_per_char"], rel=1e-6)
    for token, best, logprob in zip(choice["tokens"][1:], choice["top_logprobs"][1:], chosen, strict=True):
        assert len(best) == 2 and max(best.values()) >= logprob - 1e-9
        assert token not in best or best[token] == pytest.approx(logprob, abs=1e-9)


def test_beam_is_refused_and_the_facts_say_the_model_is_mixed(mixed, alone):
    refused = mixed.post("/generate", json={"prefix": "a", "length": 5, "beam": 2})
    assert refused.status_code == 400 and "drop beam" in refused.json()["error"]
    assert mixed.get("/model").json()["mix"] == {"counts": "training split", "max_copy": None}
    assert alone.get("/model").json()["mix"] is None


def test_max_copy_without_mix_is_one_line_and_exit_2(run, capsys):
    code = main(["serve", "-r", str(run), "--max-copy", "5", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: --max-copy needs --mix"


@pytest.mark.slow
def test_the_command_serves_the_mix_it_fitted(run, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "serve", "-r", str(run), "--port", "0", "--mix", "--max-copy", "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.split(" at ")[1].split(" ")[0]
        assert httpx.get(f"{url}/model").json()["mix"]["max_copy"] == 40
    finally:
        process.terminate()
        process.wait(30)


def test_the_openai_client_unmodified_reads_the_mixs_completions_and_logprobs(mixed):
    openai = pytest.importorskip("openai", reason="the openai SDK is not installed: pip install -e '.[dev]'")
    client = openai.OpenAI(base_url=f"{mixed.base_url}/v1", api_key="unused", max_retries=0)
    done = client.completions.create(model="run", prompt=LINES[0][:6], max_tokens=40, temperature=0, logprobs=1)
    choice = done.choices[0]
    # the mix writes what the counts know: the prompt's line ends as a known line does ("the ca" + "t ran away",
    # of "then the cat ran away"), the next lines are known lines; its logprobs are the mix's (near certain,
    # where the untrained network is not)
    first, *rest = choice.text.split("\n")[:-1]
    assert any(known.endswith(LINES[0][:6] + first) for known in LINES) and set(rest) <= set(LINES), choice.text
    assert len(choice.logprobs.tokens) == 40 and min(choice.logprobs.token_logprobs) > -1.0
