"""The demo page of `charlm export --html`: its JavaScript computes the Python model's numbers (in node),
and the page runs offline in headless Chromium (type a prefix, click Generate, read the text)."""

from __future__ import annotations

import copy
import json
import random
import subprocess
from pathlib import Path

import pytest
import torch
from browser import open_page
from helpers import make_rnn

from charlm.cli.main import main
from charlm.config import Config
from charlm.data import Vocab
from charlm.errors import UsageError
from charlm.export.demo import build_page
from charlm.generation.fast_step import FastStep
from charlm.generation.sampling import generate
from charlm.store.checkpoint import Checkpoint, load_model

REPO = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("demo_node.js")
VOCAB = Vocab("abcdefghij klmnop\n,.;分开")
PREFIX = "ba分 cab"
LENGTH = 200
# (kind, input, layers, extra ModelConfig fields): every kind, one-hot and embedding input, two layers, tied
# weights, the per-layer layout (weight drop) and d2l's one-layer one-hot RNN (the model's gather path)
CASES = [
    (kind, inputs, 2, extra)
    for kind in ("rnn_tanh", "rnn_relu", "lstm", "gru")
    for inputs, extra in (
        ("onehot", {}),
        ("embedding", {"embed_size": 8}),
        ("embedding", {"embed_size": 16, "tie_weights": True}),
    )
]
CASES += [("lstm", "embedding", 2, {"embed_size": 8, "weight_drop": 0.3}), ("rnn_tanh", "onehot", 1, {})]
IDS = [
    f"{k}-{i}{'-tied' if e.get('tie_weights') else ''}{'-wdrop' if 'weight_drop' in e else ''}-{n}layer"
    for k, i, n, e in CASES
]
# float16 pages against the float32 model: |logit error| <= this x the largest |logit| (float16 keeps 11 bits,
# 2^-11 = 4.9e-4 relative per weight); measured at most 6.9e-4 on these models (README, `charlm export --html`)
FLOAT16_RELATIVE_TOLERANCE = 2e-3


def tiny_model(number: int, kind: str, inputs: str, layers: int, extra: dict):
    torch.manual_seed(100 + number)
    model = make_rnn(len(VOCAB), kind, hidden_size=16, num_layers=layers, input=inputs, **extra)
    with torch.no_grad():
        model.head.weight.mul_(4.0)  # peaked predictions, as a trained model has (random ones are near-uniform)
    return model.eval()


def checkpoint_of(model) -> Checkpoint:
    config = Config()
    config.model = model.config
    return Checkpoint(
        model=model.state_dict(), model_config=model.config, vocab=VOCAB.chars, config=config, corpus_sha256=""
    )


def as_stored(model, precision: str):
    """The model with the page's weights (rounded to float16, or not), computing in float64."""
    stored = copy.deepcopy(model).double()
    if precision == "float16":
        with torch.no_grad():
            for parameter in stored.parameters():
                parameter.copy_(parameter.half().double())
    return stored


def python_steps(model, prefix: str, length: int, vocab: Vocab = VOCAB) -> tuple[torch.Tensor, str]:
    """Logits after each character of the prefix and of the greedy continuation, one step per character
    (step.FastStep, which tests/test_step.py checks against the model's forward), in the model's dtype."""
    dtype = next(model.parameters()).dtype
    hidden = model.begin_hidden(1)
    hidden = tuple(h.to(dtype) for h in hidden) if isinstance(hidden, tuple) else hidden.to(dtype)
    step = FastStep(model)
    rows, text = [], ""
    ids = vocab.encode(prefix)
    with torch.inference_mode():
        for t in range(len(ids) + length):
            if t >= len(ids):
                ids.append(int(rows[-1].argmax()))
                text += vocab.chars[ids[-1]]
            out, hidden = step(torch.tensor([ids[t]]), hidden)
            rows.append(out[0])
    return torch.stack(rows), text


def forward_logits(model, prefix: str) -> torch.Tensor:
    """The model's own forward over the prefix: the logits after each of its characters."""
    with torch.inference_mode():
        logits, _ = model(torch.tensor([VOCAB.encode(prefix)]), None)
    return logits[:, 0]


@pytest.fixture(scope="module")
def node_results(node, tmp_path_factory):
    """Pages for every case at both precisions, run in one node process: {(case, precision): result}."""
    folder = tmp_path_factory.mktemp("pages")
    requests, keys, models = [], [], {}
    for number, case in enumerate(CASES):
        models[number] = model = tiny_model(number, *case)
        for precision in ("float16", "float32"):
            page = folder / f"{number}-{precision}.html"
            page.write_text(build_page(model, checkpoint_of(model), "best", precision).html, encoding="utf-8")
            requests.append({"page": str(page), "prefix": PREFIX, "length": LENGTH})
            keys.append((number, precision))
    (folder / "requests.json").write_text(json.dumps(requests), encoding="utf-8")
    done = subprocess.run(
        [node, str(HARNESS), str(folder / "requests.json")],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return models, dict(zip(keys, json.loads(done.stdout), strict=True))


@pytest.mark.parametrize("number", range(len(CASES)), ids=IDS)
def test_the_page_computes_the_model_it_stores(node_results, number):
    """float64 in both: the same greedy text, and logits equal to rounding."""
    models, results = node_results
    for precision in ("float16", "float32"):
        result = results[(number, precision)]
        logits, text = python_steps(as_stored(models[number], precision), PREFIX, LENGTH)
        assert result["greedy"] == text and len(text) == LENGTH
        assert result["generated"] == text  # the page's own generator, as the Generate button runs it
        assert torch.allclose(torch.tensor(result["logits"], dtype=torch.float64), logits, rtol=0, atol=1e-9)


@pytest.mark.parametrize("number", range(len(CASES)), ids=IDS)
def test_the_page_reproduces_charlm_generate(node_results, number):
    """Against the float32 model of `charlm generate`: float32 pages exactly; float16 pages within the tolerance."""
    models, results = node_results
    model = models[number]
    greedy = generate(model, VOCAB, PREFIX, LENGTH)[0][len(PREFIX) :]
    logits = forward_logits(model, PREFIX)
    scale = float(logits.abs().max())
    for precision, tolerance in (("float32", 1e-5), ("float16", FLOAT16_RELATIVE_TOLERANCE * scale)):
        result = results[(number, precision)]
        page_logits = torch.tensor(result["logits"], dtype=torch.float64)[: len(PREFIX)]
        assert (page_logits - logits.double()).abs().max() <= tolerance, precision
        assert result["greedy"] == greedy, precision


# --- the page in headless Chromium, exported from a run by the real command -------------------------------

WORDS = "the a of to and in is it you that he was for on are with as his they be at one have this".split()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run of a few seconds through `charlm train`, on English-like text."""
    root = tmp_path_factory.mktemp("run")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(300)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--corpus",
            str(root / "corpus.txt"),
            "--device",
            "cpu",
            "--run-dir",
            str(root / "run"),
            "--set",
            "train.epochs=2",
            "--set",
            "sample.prefixes=[the]",
        ]
    )
    assert code == 0
    return root / "run"


def generate_in_page(page, prefix: str, length: int, temperature: float, seed: str = "") -> tuple[str, str]:
    """Type the settings, click Generate, wait for the end; (the text in the output box, the status line)."""
    page.fill("#prefix", prefix)
    page.fill("#length", str(length))
    page.fill("#temperature", str(temperature))
    page.fill("#seed", seed)
    page.evaluate("document.getElementById('status').dataset.state = ''")
    page.click("#generate")
    page.wait_for_selector("#status[data-state=done], #status[data-state=error]", timeout=60_000)
    return page.text_content("#output"), page.text_content("#status")


def test_the_page_generates_in_chromium_offline(browser, tiny_run, tmp_path, capsys):
    page_file = tmp_path / "demo.html"
    capsys.readouterr()
    assert main(["export", "--run-dir", str(tiny_run), "--html", str(page_file)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {page_file}: ")
    model, vocab, _ = load_model(tiny_run / "best.pt")
    stored = as_stored(model, "float16")

    opened = open_page(browser, page_file)
    page = opened.page
    assert page.text_content("#title") == "tiny" and page.input_value("#prefix") == "the"
    card = page.text_content("#card")
    assert "gru 1x64, embedding 32" in card and "val loss" in card and "nats/char" in card
    text, status = generate_in_page(page, "you are ", 80, 0)
    assert text == "you are " + python_steps(stored, "you are ", 80, vocab)[1]
    assert status.startswith("80 characters in ") and "chars/s" in status
    assert float(page.get_attribute("#status", "data-chars-per-second")) > 0

    seeded = generate_in_page(page, "the ", 60, 1.0, seed="7")[0]
    assert generate_in_page(page, "the ", 60, 1.0, seed="7")[0] == seeded  # a seed repeats the sample
    assert generate_in_page(page, "the ", 60, 1.0, seed="8")[0] != seeded
    no_prefix = generate_in_page(page, "", 30, 0)[0]
    assert no_prefix == python_steps(stored, "\n", 30, vocab)[1]  # it starts after a new line
    text, status = generate_in_page(page, "the 😀", 10, 0)
    assert (
        text == ""
        and status
        == "error: the prefix has characters the model never saw: '😀'; use characters of the training corpus"
    )
    text, status = generate_in_page(page, "the ", 0, 0)
    assert status == "error: length must be an integer from 1 to 100000"

    generate_in_page(page, "you are ", 120, 0.8, seed="1")
    page.screenshot(path=str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    opened.check_offline()
    opened.close()


def test_the_measurement_script_runs(browser, node, tiny_run, tmp_path):
    """benchmarks/demo_page.py (the README's sizes and chars/s) at tiny sizes."""
    import demo_page

    (result,) = demo_page.measure(browser, [tiny_run], 30, 30, 1, tmp_path / "shot.png", tmp_path)
    assert result["page_bytes"] == (tmp_path / "run.html").stat().st_size
    assert result["greedy_identical_chars"] == 30 and result["prefix"] == "the"
    assert result["max_logit_diff"] <= FLOAT16_RELATIVE_TOLERANCE * result["max_abs_logit"]
    assert result["chromium_chars_per_s"] > 0 and (tmp_path / "shot.png").is_file()


def test_export_refuses_bad_targets(tiny_run, tmp_path, capsys):
    for argv, fragment in [
        (["export", "--run-dir", str(tiny_run)], "--html FILE"),
        (["export", "--run-dir", str(tiny_run), "--html", str(tmp_path / "no" / "demo.html")], "does not exist"),
        (["export", "--run-dir", str(tiny_run), "--html", str(tmp_path)], "is a folder"),
        (
            ["export", "--run-dir", str(tiny_run), "--html", str(tmp_path / "d.html"), "--precision", "int8"],
            "precision 'int8' is not valid",
        ),
        (["export", "--run-dir", str(tmp_path / "none"), "--html", str(tmp_path / "d.html")], "not found"),
        (
            ["export", "--run-dir", str(tiny_run), "--html", str(tmp_path / "d.html"), "--checkpoint", "first"],
            "use best or last",
        ),
    ]:
        capsys.readouterr()
        assert main(argv) == 2, argv
        message = capsys.readouterr().err
        assert fragment in message and message.count("\n") == 1, message
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_page_is_one_file_with_the_model_escaped(tmp_path):
    model = tiny_model(0, "gru", "embedding", 1, {"embed_size": 8})
    checkpoint = checkpoint_of(model)
    checkpoint.config.name = "</script><script>alert(1)</script>"
    page = build_page(model, checkpoint, "last", "float16")
    html = page.html
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the model JSON and the code
    assert "src=" not in html and "http" not in html.replace("http-equiv", "")
    spec = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert spec["card"]["name"] == checkpoint.config.name and spec["card"]["checkpoint"].startswith("last.pt")
    assert page.weights == model.num_parameters() and page.weight_bytes == 2 * page.weights
    assert build_page(model, checkpoint, "best", "float32").weight_bytes == 4 * page.weights
    tied = tiny_model(1, "lstm", "embedding", 2, {"embed_size": 16, "tie_weights": True})
    assert build_page(tied, checkpoint_of(tied)).weights == tied.num_parameters()  # the shared matrix once


def test_float16_overflow_is_refused():
    model = tiny_model(0, "gru", "embedding", 1, {"embed_size": 8})
    with torch.no_grad():
        model.head.bias[0] = 1e5
    with pytest.raises(UsageError, match="--precision float32"):
        build_page(model, checkpoint_of(model))
    assert build_page(model, checkpoint_of(model), precision="float32").weights == model.num_parameters()


@pytest.mark.parametrize(
    "hostile",
    [
        "</script><script>alert(1)</script>",
        "<!--<script>",
        "</SCRIPT >",
        "\u2028\u2029",
        "]]></x>&amp;",
        "<img src=x onerror=alert(1)>",
    ],
)
def test_text_from_the_run_cannot_leave_the_page_s_json(hostile):
    model = tiny_model(0, "gru", "embedding", 1, {"embed_size": 8})
    checkpoint = checkpoint_of(model)
    checkpoint.config.data.corpus = hostile
    html = build_page(model, checkpoint, "last", "float16").html
    assert html.lower().count("<script") == 2 and html.lower().count("</script") == 2 and "<!--" not in html
    spec = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert spec["card"]["corpus"] == Path(hostile).name  # the page names a corpus file by its name


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    """A run of a few seconds on capitalised lines as documents (data.documents=lines, each ended by <eod>),
    the state reset at each, the text lower-cased."""
    root = tmp_path_factory.mktemp("lines")
    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))).capitalize() for _ in range(400)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = [
        "data.documents=lines",
        "train.reset_state_at_documents=true",
        "data.lowercase=true",
        "sample.prefixes=[the]",
    ]
    code = main(
        ["train", "--config", str(REPO / "configs" / "tiny.yaml"), "--corpus", str(root / "corpus.txt")]
        + ["--device", "cpu", "--run-dir", str(root / "run"), "--set", "train.epochs=15"]
        + [arg for setting in settings for arg in ("--set", setting)]
    )
    assert code == 0
    return root / "run"


def test_the_page_writes_items_of_a_documents_model(browser, lines_run, tmp_path):
    import charlm

    page_file = tmp_path / "items.html"
    assert main(["export", "--run-dir", str(lines_run), "--html", str(page_file), "--precision", "float32"]) == 0
    model = charlm.load(lines_run)
    opened = open_page(browser, page_file)
    page = opened.page
    assert page.is_visible("#mode") and page.is_visible("#count")
    # text mode, greedy: the prefix lower-cased, <eod> a line break that restarts the state, as charlm generate
    # (a float32 page computes in float64: the same argmax as the float32 model, as test_the_page_reproduces...)
    text, _ = generate_in_page(page, "The ", 80, 0)
    expected = model.generate("The ", 80, temperature=0)
    assert "<eod>" in expected and text == expected.replace("<eod>", "\n") and text.startswith("the ")

    page.select_option("#mode", "items")
    page.fill("#count", "4")
    generate_in_page(page, "The ", 60, 0)
    assert page.is_hidden("#output") and page.is_visible("#output-items")
    (greedy,) = model.items(1, 60, prefix="The ", temperature=0)
    shown = page.locator("#output-items .item").all_text_contents()
    assert shown == [greedy.text] * 4  # greedy: every item is the same one
    assert page.locator("#output-items .item").first.get_attribute("data-ended") == str(greedy.ended).lower()

    _, status = generate_in_page(page, "", 40, 1.0, seed="3")
    shown = page.locator("#output-items .item").all_text_contents()
    assert len(shown) == 4 and len(set(shown)) > 1 and status.endswith("chars/s)")
    assert all(item and "\n" not in item for item in shown)
    assert "<eod>" not in page.text_content("main")  # the symbol is never shown by name
    page.screenshot(path=str(tmp_path / "items.png"))
    assert (tmp_path / "items.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    opened.check_offline()
    opened.close()


def test_a_stream_model_s_page_has_no_items_mode(browser, tiny_run, tmp_path):
    page_file = tmp_path / "demo.html"
    assert main(["export", "--run-dir", str(tiny_run), "--html", str(page_file)]) == 0
    opened = open_page(browser, page_file)
    assert opened.page.is_hidden("#mode") and opened.page.is_hidden("#count")
    opened.check_offline()
    opened.close()
