"""neurons: every unit recorded as the model computes it, ranked by correlation; the command and its page."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import make_rnn, save_untrained_run, screenshot_colours

from charlm.analysis.neurons import Correlations, Recorder, decode, record
from charlm.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = [
    dict(kind="lstm"),
    dict(kind="lstm", num_layers=2),
    dict(kind="gru", num_layers=2),
    dict(kind="rnn_tanh"),
    dict(kind="rnn_relu", num_layers=2),
    dict(kind="lstm", num_layers=2, locked_dropout=True, dropout=0.2),
    dict(kind="gru", input="embedding", embed_size=5),
]


@pytest.mark.parametrize("settings", KINDS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_recorded_states_are_the_models(settings):
    """The last layer's h gives the model's logits; an LSTM's c gives its h (h = o * tanh(c)) and its final c."""
    torch.manual_seed(0)
    model = make_rnn(9, hidden_size=12, **settings).eval()
    recorder = Recorder(model, torch.device("cpu"))
    ids = torch.randint(0, 9, (3, 20))
    hidden, states = None, []
    for start in range(0, 20, 7):  # windows, the state carried
        values, hidden = recorder.window(ids[:, start : start + 7], hidden)
        states.append(values)
    values = torch.cat(states)  # (20, 3, units)
    per_layer = 24 if model.kind == "lstm" else 12
    assert values.shape == (20, 3, per_layer * model.num_layers) == (20, 3, len(recorder.units))
    with torch.no_grad():
        logits, final = model(ids)
        top_h = values[:, :, (model.num_layers - 1) * per_layer :][:, :, :12]
        assert torch.allclose(model.head(top_h), logits, atol=1e-5)
    if model.kind == "lstm":
        for layer in range(model.num_layers):
            h = values[:, :, layer * 24 : layer * 24 + 12]
            c = values[:, :, layer * 24 + 12 : layer * 24 + 24]
            assert torch.allclose(c[-1], final[1][layer], atol=1e-5)
            assert bool((h.abs() <= c.tanh().abs() + 1e-6).all())  # |h| = |o tanh(c)| with 0 < o < 1
        assert [u.label for u in recorder.units[:13:12]] == ["L0.h0", "L0.c0"]


def test_correlations_match_torch_corrcoef():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=generator)
    f = torch.stack(
        [
            x[:, 2] * 3 + torch.randn(300, generator=generator) * 0.1,
            torch.randn(300, generator=generator),
            torch.ones(300),
        ],
        dim=1,
    )
    sums = Correlations(f, 4)
    for chunk in range(0, 300, 70):
        sums.add(x[chunk : chunk + 70], f[chunk : chunk + 70])
    r = sums.result()
    expected = torch.corrcoef(torch.cat([f[:, :2], x], dim=1).T)[:2, 2:]
    assert torch.allclose(r[:2].float(), expected, atol=1e-5)
    assert r[0].abs().argmax() == 2 and r[0, 2] > 0.99
    assert torch.equal(r[2], torch.zeros(4, dtype=torch.float64))  # a constant feature correlates with nothing


def planted_vowel_model(chars: list[str]):
    """A one-layer RNN whose unit 3 is tanh(+5) after a vowel and tanh(-5) after anything else."""
    torch.manual_seed(0)
    model = make_rnn(len(chars), kind="rnn_tanh", hidden_size=8).eval()
    with torch.no_grad():
        model.rnn.weight_ih_l0[3] = torch.tensor([5.0 if c in "aeiou" else -5.0 for c in chars])
        model.rnn.weight_hh_l0[3] = 0
        model.rnn.bias_ih_l0[3] = model.rnn.bias_hh_l0[3] = 0
    return model


@pytest.mark.parametrize(("streams", "page_chars"), [(1, 50), (4, 300), (7, 1000)])
def test_a_planted_unit_ranks_first_and_the_excerpt_is_in_text_order(streams, page_chars):
    from charlm.analysis.features import compute

    chars = list("abcdeiou \n")
    model = planted_vowel_model(chars)
    ids = torch.randint(0, len(chars), (401,), generator=torch.Generator().manual_seed(1))
    text = decode(chars, ids)
    features = compute(["vowel", "line-position"], text)
    matrix = torch.stack([f.values for f in features], dim=1)
    recorder, r, excerpt, read = record(
        model, ids, matrix, batch_size=streams, num_steps=6, device=torch.device("cpu"), page_chars=page_chars
    )
    assert read == streams * (400 // streams)
    assert int(r[0].abs().argmax()) == 3 and r[0, 3] > 0.999
    kept = min(page_chars, read)
    assert excerpt.shape == (kept, 8)
    expected = torch.tensor([math.tanh(5.0) if c in "aeiou" else -math.tanh(5.0) for c in text[:kept]])
    assert torch.allclose(excerpt[:, 3], expected, atol=1e-6)


@pytest.fixture(scope="module")
def lyrics(tmp_path_factory):
    folder = tmp_path_factory.mktemp("neurons")
    line = 'he said "go (now)" and left\nthe end of [a] line\n'
    corpus = folder / "corpus.txt"
    corpus.write_text(line * 60, encoding="utf-8")
    return folder, corpus


@pytest.mark.parametrize(
    "settings",
    [["model.kind=lstm", "model.num_layers=2"], ["model.kind=gru"], ["model.kind=rnn_tanh", "model.input=onehot"]],
    ids=lambda s: s[0][11:],
)
def test_the_command_on_every_model_kind(lyrics, settings, capsys):
    folder, corpus = lyrics
    run = save_untrained_run(folder / settings[0], corpus, settings)
    assert main(["neurons", "--run-dir", str(run), "--split", "train", "--top", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    hidden = 64 * (2 if "lstm" in settings[0] else 1) * (2 if "model.num_layers=2" in settings else 1)
    assert report["units"] == hidden
    assert [f["feature"] for f in report["features"]] == ["quote", "bracket", "line-position", "newline-next", "vowel"]
    assert all(len(f["top"]) == 2 and abs(f["top"][0]["r"]) >= abs(f["top"][1]["r"]) for f in report["features"])


def test_the_command_prints_a_table_and_refuses_bad_input(lyrics, capsys, tmp_path):
    folder, corpus = lyrics
    run = save_untrained_run(folder / "table", corpus, ["model.kind=gru"])
    assert main(["neurons", "--run-dir", str(run), "--feature", "said", "--feature", "vowel", "--top", "1"]) == 0
    printed = capsys.readouterr().out
    assert "/said/" in printed and "vowel" in printed and "chars read in" in printed
    assert main(["neurons", "--run-dir", str(run), "--feature", "(oops"]) == 2
    assert "nor a valid regular expression" in capsys.readouterr().err
    assert main(["neurons", "--run-dir", str(run), "--html", str(tmp_path / "no" / "n.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["neurons", "--run-dir", str(run), "--top", "0"]) == 2
    assert not (tmp_path / "no").exists()


def test_the_page_in_a_browser(lyrics, browser, tmp_path, capsys):
    from browser import open_page

    folder, corpus = lyrics
    run = save_untrained_run(folder / "page", corpus, ["model.kind=lstm"])
    page_file = tmp_path / "neurons.html"
    argv = [
        "neurons",
        "--run-dir",
        str(run),
        "--split",
        "train",
        "--top",
        "3",
        "--page-chars",
        "400",
        "--feature",
        "quote",
        "--feature",
        "line-position",
        "--feature",
        "[a-z]+",
    ]
    assert main([*argv, "--html", str(page_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    page = open_page(browser, page_file)
    dom = page.page
    assert dom.locator("#text span.c").count() == 400
    assert dom.locator("#picker option").count() == 9
    rows = dom.locator("#units tbody tr")
    assert rows.count() == 9
    shown = [[float(v) for v in rows.nth(k).locator("td.r").all_text_contents()[1:]] for k in range(9)]
    expected = [round(u["r"], 3) for f in report["features"] for u in f["top"]]
    assert [s[0] for s in shown] == pytest.approx(expected, abs=6e-4)  # the page's r are the CLI's (3 decimals)
    quote_choice = dom.locator("#units tbody tr[data-feature='quote']").first
    quote_choice.click()
    underlined = dom.locator("#text span.c.on").count()
    text = corpus.read_text(encoding="utf-8")[:400]
    assert underlined == sum(1 for k in range(400) if text[: k + 1].count('"') % 2 == 1)
    coloured = dom.evaluate("[...document.querySelectorAll('#text span.c')].filter(s => s.style.background).length")
    assert coloured == 400
    dom.hover("#text span.c >> nth=5")
    assert "L0." in dom.text_content("#info")
    assert screenshot_colours(dom.screenshot()) > 50  # rendered: text, shades, a table (a blank page has 1)
    page.check_offline()
    page.close()


def test_the_timing_script_runs(lyrics, tmp_path, capsys):
    """benchmarks/neurons_time.py at a tiny size: it prints both timings and their ratio."""
    from neurons_time import main as time_neurons

    _, corpus = lyrics
    run = save_untrained_run(tmp_path / "run", corpus, ["model.kind=lstm"])
    result = time_neurons(["--run-dir", str(run), "--file", str(corpus), "--chars", "600", "--repeat", "2"])
    assert result["chars"] == 592 and result["units"] == 128  # 16 streams of 37 characters; h and c of 64
    assert len(result["runs"]["neurons"]) == len(result["runs"]["perplexity"]) == 2
    assert result["neurons_seconds"] == min(result["runs"]["neurons"]) > 0
    assert json.loads(capsys.readouterr().out) == result
