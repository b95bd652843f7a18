"""surprisal: per-character bits under `charlm perplexity`'s protocol, the breakdown, the command and its page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import save_untrained_run, screenshot_colours, surprisal_of

from charlm.analysis.surprisal import HEAT_STOPS, RARE, Surprisal, heat
from charlm.cli.main import main

pytestmark = pytest.mark.usefixtures("single_thread")


def made_up(ids: list[int], bits: list[float], train_counts: list[int] | None) -> Surprisal:
    return surprisal_of(
        list("abcdef"),
        ids,
        bits,
        sum(bits) / len(bits) * math.log(2),
        train_counts,
        None if train_counts is not None else "no corpus",
    )


def test_breakdown_by_hand():
    # targets: b c a a d  (ids[1:]); train counts: a 10, b 0, c 3, d 4, e 0, f 7
    report = made_up([0, 1, 2, 0, 0, 3, 5], [12.0, 6.0, 1.0, 2.0, 9.0], [10, 0, 3, 4, 0, 7])
    parts = report.breakdown()
    bands = {b.name: b for b in parts.bands}
    assert {name: b.chars for name, b in bands.items()} == {"unseen": 1, "rare": 2, "common": 2}
    assert bands["unseen"].mean_bits == 12.0 and bands["unseen"].share_of_loss == pytest.approx(12 / 30)
    assert bands["rare"].mean_bits == 7.5 and bands["rare"].share_of_text == pytest.approx(0.4)
    assert bands["common"].mean_bits == 1.5 and bands["common"].share_of_loss == pytest.approx(0.1)
    assert sum(b.share_of_loss for b in parts.bands) == pytest.approx(1)
    assert [(c.char, c.count, c.train_count, c.mean_bits) for c in parts.costly] == [
        ("b", 1, 0, 12.0),
        ("d", 1, 4, 9.0),
        ("c", 1, 3, 6.0),
        ("a", 2, 10, 1.5),
    ]
    assert parts.costly[0].share_of_loss == pytest.approx(0.4)
    assert RARE == 5 and "rare (1-4" in bands["rare"].description


def test_breakdown_without_training_counts_and_an_empty_band():
    report = made_up([0, 0, 0], [1.0, 3.0], None)
    parts = report.breakdown()
    assert parts.bands is None and parts.note == "no corpus"
    assert [(c.char, c.count, c.train_count) for c in parts.costly] == [("a", 2, None)]
    counted = made_up([0, 0, 0], [1.0, 3.0], [5, 0, 0, 0, 0, 0]).breakdown()
    assert [b.mean_bits for b in counted.bands] == [None, None, 2.0]
    json.dumps(counted.to_dict(), allow_nan=False)  # valid JSON: no NaN for the empty bands


def test_display_marks_what_is_not_scored():
    report = made_up([0, 1, 2, 3, 4], [1.0, 2.0, 3.0], [1] * 6)  # 4 targets, the last (a tail) not scored
    assert report.display(10) == [("a", None), ("b", 1.0), ("c", 2.0), ("d", 3.0), ("e", None)]
    assert report.display(2) == [("a", None), ("b", 1.0)]


def test_heat_runs_from_white_to_the_last_stop():
    assert heat(0) == (255, 255, 255) and heat(-1) == heat(0)
    assert heat(1) == HEAT_STOPS[-1][1] == heat(7)
    reds = [heat(f / 10)[1] for f in range(11)]
    assert reds == sorted(reds, reverse=True)  # darker as the cost grows


# --- the command --------------------------------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "far", "away"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small run trained by the real command; the val split holds characters unseen and rare in training."""
    import random

    folder = tmp_path_factory.mktemp("surprisal")
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(300))
    text += "\nzebra quiz vex jumps\nzoo quay\n"  # z, q, x, j, b, y, u...: the tail is val
    corpus = folder / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    run = folder / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"),
                "--corpus",
                str(corpus),
                "--run-dir",
                str(run),
                "--device",
                "cpu",
                "--set",
                "train.epochs=1",
                "--set",
                "data.val_fraction=0.02",
                "--set",
                "data.max_chars=null",
                "--set",
                "sample.preview_every=0",
            ]
        )
        == 0
    )
    return folder, run, corpus


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "source",
    [["--split", "val"], ["--split", "train"], ["--file", "FILE"], ["--text", "the cat sat on a zebra\n"]],
    ids=lambda s: s[0],
)
def test_totals_equal_charlm_perplexity(trained, capsys, source):
    folder, run, corpus = trained
    source = [str(corpus) if s == "FILE" else s for s in source]
    plain = run_json(capsys, "perplexity", "--run-dir", str(run), "--device", "cpu", "--json", "--no-mix", *source)
    full = run_json(capsys, "perplexity", "--run-dir", str(run), "--device", "cpu", "--json", "--breakdown", *source)
    assert {k: full[k] for k in plain} == plain  # the same figures to the last bit
    bands = full["breakdown"]["bands"]
    assert sum(b["chars"] for b in bands) == plain["chars"]
    assert sum(b["share_of_loss"] for b in bands) == pytest.approx(1, abs=1e-9)
    mean_bits = sum(b["mean_bits"] * b["chars"] for b in bands if b["chars"]) / plain["chars"]
    assert mean_bits == pytest.approx(plain["bits_per_char"], rel=1e-6)  # float32 per-character values


def test_the_val_split_has_unseen_and_rare_characters_that_cost_more(trained, capsys):
    _, run, _ = trained
    full = run_json(capsys, "perplexity", "--run-dir", str(run), "--json", "--breakdown")
    bands = {b["name"]: b for b in full["breakdown"]["bands"]}
    assert bands["unseen"]["chars"] > 0 and bands["common"]["chars"] > 0
    assert bands["unseen"]["mean_bits"] > bands["common"]["mean_bits"]
    costly = full["breakdown"]["costly"]
    assert len(costly) == 10
    assert [c["share_of_loss"] for c in costly] == sorted((c["share_of_loss"] for c in costly), reverse=True)


def test_show_prints_the_shaded_text_legend_and_tables(trained, capsys):
    _, run, _ = trained
    capsys.readouterr()
    assert main(["perplexity", "--run-dir", str(run), "--text", "the cat\nsat on a mat", "--show"]) == 0
    printed = capsys.readouterr().out
    assert "the cat↵\nsat on a mat" in printed
    assert "bits:" in printed and "uniform guess" in printed
    assert "where the loss comes from" in printed and "costliest characters" in printed
    assert "nats/char" in printed and "on --text: 19 chars" in printed


def test_outside_the_vocabulary_and_bad_flags_are_refused(trained, capsys, tmp_path):
    _, run, corpus = trained
    cases = [
        (["--text", "the cat 😀 sat 😀 €"], "the text has 2 characters the vocabulary lacks ('😀€')"),
        (["--show", "--json"], "--show and --json both print to stdout"),
        (["--split", "val", "--text", "the"], "--split and --text were given: pass one of them, not both"),
        (["--html", str(tmp_path / "missing" / "p.html")], "folder"),
        (["--html", str(tmp_path)], "is a folder"),
        (["--show", "--show-chars", "0"], "--show-chars must be >= 1"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(["perplexity", "--run-dir", str(run), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_a_changed_training_corpus_leaves_the_figures_and_drops_the_bands(trained, capsys, tmp_path):
    folder, _, corpus = trained
    copy = tmp_path / "corpus.txt"
    copy.write_text(corpus.read_text(encoding="utf-8"), encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", copy, ["model.kind=gru", "data.max_chars=null"])
    copy.write_text(corpus.read_text(encoding="utf-8")[:-40], encoding="utf-8")
    full = run_json(capsys, "perplexity", "--run-dir", str(run), "--text", "the cat", "--json", "--breakdown")
    assert full["breakdown"]["bands"] is None and "changed since this run was trained" in full["breakdown"]["note"]
    assert full["chars"] == 6 and len(full["breakdown"]["costly"]) == 6  # h e space c a t


@pytest.mark.parametrize(
    "kind",
    [
        ["model.kind=lstm", "model.num_layers=2"],
        ["model.kind=rnn_relu"],
        ["model.kind=rnn_tanh", "model.input=onehot"],
        ["model.kind=gru"],
    ],
    ids=lambda s: s[0][11:],
)
def test_every_model_kind(trained, capsys, tmp_path, kind):
    _, _, corpus = trained
    run = save_untrained_run(tmp_path / "run", corpus, kind)
    plain = run_json(capsys, "perplexity", "--run-dir", str(run), "--split", "train", "--json", "--no-mix")
    full = run_json(
        capsys, "perplexity", "--run-dir", str(run), "--split", "train", "--json", "--html", str(tmp_path / "p.html")
    )
    assert {k: full[k] for k in plain} == plain
    assert (tmp_path / "p.html").stat().st_size > 1000


def test_the_page_in_a_browser(trained, browser, capsys, tmp_path):
    from browser import open_page

    _, run, _ = trained
    page_file = tmp_path / "surprisal.html"
    full = run_json(
        capsys, "perplexity", "--run-dir", str(run), "--json", "--html", str(page_file), "--show-chars", "100"
    )
    page = open_page(browser, page_file)
    dom = page.page
    assert dom.locator("#text span.c").count() == 100
    assert dom.locator("#text span.c.unscored").count() == 1  # the first character
    figures = {
        row.get_attribute("data-figure"): row.locator("td").nth(1).text_content()
        for row in dom.locator("#figures tr").all()
    }
    assert figures == {
        "chars scored": f"{full['chars']:,}",
        "nats/char": f"{full['nats_per_char']:.4f}",
        "bits/char": f"{full['bits_per_char']:.4f}",
        "perplexity": f"{full['perplexity']:.4f}",
    }
    bands = dom.locator("#bands tbody tr")
    assert bands.count() == 3
    for k, band in enumerate(full["breakdown"]["bands"]):
        cells = bands.nth(k).locator("td").all_text_contents()
        assert cells[1:] == [
            f"{band['chars']:,}",
            f"{100 * band['share_of_text']:.1f}%",
            "–" if band["mean_bits"] is None else f"{band['mean_bits']:.2f}",
            f"{100 * band['share_of_loss']:.1f}%",
        ]
    assert dom.locator("#costly tbody tr").count() == len(full["breakdown"]["costly"]) == 10
    data = json.loads(dom.text_content("#data"))
    assert data["figures"] == {k: full[k] for k in ("nats_per_char", "bits_per_char", "perplexity", "chars")}
    dom.hover("#text span.c >> nth=7")
    assert dom.is_visible("#tip") and dom.locator("#tip table.top tr").count() == 5
    assert f"{data['bits'][7]:.2f} bits" in dom.text_content("#tip")
    assert screenshot_colours(dom.screenshot()) > 50
    page.check_offline()
    page.close()
