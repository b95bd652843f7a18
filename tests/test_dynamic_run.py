"""dynamic.run and the commands on it: `perplexity --dynamic` (static and dynamic side by side, --json, --show,
--html, tuning and the rms statistics kept in the run folder), `generate --adapt`, `Model.perplexity(dynamic=True)`
and `Model.adapt`, on a run trained here in seconds through the real CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

import charlm
from charlm.cli.main import main
from charlm.dynamic import stats, tuning
from charlm.dynamic.adapter import Adapter, DynamicOptions
from charlm.dynamic.scoring import dynamic_losses
from charlm.store.model_dir import load_model

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parent.parent
WORDS = "the a of to and in is it you that he was for on are with as his they be at one have this".split()
# made-up names of the corpus's letters, read twice: what adaptation is for
PASSAGE = "the wuderith hit fethisovan at bothnavy and "


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dynamic")
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(400)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config, corpus = str(REPO / "configs" / "tiny.yaml"), str(root / "corpus.txt")
    args = ["train", "-c", config, "--corpus", corpus, "-r", str(root / "run"), "-q", "--set", "train.epochs=2"]
    assert main([*args, "--set", "sample.prefixes=[the]"]) == 0
    return root / "run"


def run_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["perplexity", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lr_zero_gives_the_static_figure_of_charlm_perplexity_exactly(run, capsys):
    text = PASSAGE * 3
    static = run_json(capsys, "-r", str(run), "--text", text)  # a string is read in one stream
    both = run_json(capsys, "-r", str(run), "--text", text, "--dynamic", "--dynamic-lr", "0")
    assert both["static"]["nats_per_char"] == static["nats_per_char"]
    assert both["dynamic"]["nats_per_char"] == static["nats_per_char"]
    assert both["static"]["chars"] == both["dynamic"]["chars"] == static["chars"]
    assert both["precision"] == "fp32"  # tiny.yaml trains in fp32


def test_json_reports_both_figures_the_values_and_the_times(run, capsys):
    out = run_json(capsys, "-r", str(run), "--text", PASSAGE * 4, "--dynamic", "--dynamic-lr", "0.5")
    assert (out["method"], out["lr"], out["chosen_by"]) == ("sgd", 0.5, "lr given, defaults")
    assert out["decay"] == DynamicOptions().resolved().decay  # the default of the method
    assert out["static"]["seconds"] > 0 and out["dynamic"]["seconds"] > 0
    assert out["dynamic"]["bits_per_char"] < out["static"]["bits_per_char"] - 0.1  # a repeated passage: it adapts
    assert out["gain_bits_per_char"] == pytest.approx(out["static"]["bits_per_char"] - out["dynamic"]["bits_per_char"])


def test_the_second_reading_of_a_passage_drops_under_dynamic_evaluation_only(run):
    model, vocab, saved = load_model(run)
    first, twice = len(PASSAGE) * 2, torch.tensor(vocab.encode(PASSAGE * 4), dtype=torch.uint8)
    num_steps = saved.config.train.num_steps
    static = dynamic_losses(model, twice, Adapter(model, DynamicOptions("sgd", 0.0, 0.0)), num_steps=num_steps).nats
    copied = type(model)(saved.model_config, len(vocab))
    copied.load_state_dict(model.state_dict())
    dynamic = dynamic_losses(copied, twice, Adapter(copied, DynamicOptions("sgd", 0.5, 0.0)), num_steps=num_steps)
    before, after = slice(0, first - 1), slice(first - 1, None)
    # static: the second two copies cost what the first two did; dynamic: far less
    assert abs(static[after].mean() - static[before].mean()) < 0.15
    assert dynamic.nats[after].mean() < static[after].mean() - 0.4


def test_dynamic_flags_without_dynamic_are_refused(run, capsys):
    for flags in (["--dynamic-lr", "0.1"], ["--dynamic-tune"], ["--dynamic-method", "rms"]):
        assert main(["perplexity", "-r", str(run), *flags]) == 2
        assert "add --dynamic" in capsys.readouterr().err
    for flags, says in (
        (["--dynamic-method", "adam"], "dynamic method 'adam' is not valid: use sgd or rms"),
        (["--dynamic-lr", "-1"], "--dynamic-lr must be a number >= 0"),
        (["--dynamic-decay", "2"], "--dynamic-decay must be between 0 and 1"),
    ):
        assert main(["perplexity", "-r", str(run), "--dynamic", *flags]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err


def test_rms_statistics_are_measured_once_kept_and_measured_again_for_other_weights(run, capsys):
    kept = run / stats.stats_name("best")
    kept.unlink(missing_ok=True)
    first = run_json(capsys, "-r", str(run), "--text", PASSAGE * 2, "--dynamic", "--dynamic-method", "rms")
    assert kept.is_file() and first["method"] == "rms"
    stamp = kept.stat().st_mtime_ns
    again = run_json(capsys, "-r", str(run), "--text", PASSAGE * 2, "--dynamic", "--dynamic-method", "rms")
    assert kept.stat().st_mtime_ns == stamp  # read, not measured again
    assert again["dynamic"]["nats_per_char"] == first["dynamic"]["nats_per_char"]
    model, _, _ = load_model(run)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert stats.read_cached(kept, stats.weights_hash(model), shapes) is not None
    assert stats.read_cached(kept, "other weights", shapes) is None  # a newer best.pt: measured again
    kept.write_bytes(b"not safetensors")
    assert stats.read_cached(kept, stats.weights_hash(model), shapes) is None
    assert main(["perplexity", "-r", str(run), "--dynamic-stats"]) == 0
    assert "kept in dynamic-stats-best.safetensors" in capsys.readouterr().err
    assert stats.read_cached(kept, stats.weights_hash(model), shapes) is not None


def test_tuning_chooses_on_val_keeps_the_choice_and_later_runs_use_it(run, capsys, monkeypatch):
    (run / tuning.TUNED).unlink(missing_ok=True)
    out = run_json(capsys, "-r", str(run), "--split", "train", "--dynamic", "--dynamic-tune")
    saved = json.loads((run / tuning.TUNED).read_text())
    grid = saved["sgd"]["grid"]
    assert len(grid) == len(tuning.GRID["sgd"][0]) * len(tuning.GRID["sgd"][1])
    best = min(grid, key=lambda r: r["nats_per_char"])
    assert saved["sgd"]["chosen"] == [best["lr"], best["decay"]] == [out["lr"], out["decay"]]
    assert out["chosen_by"].startswith("tuned on the first")
    later = run_json(capsys, "-r", str(run), "--text", PASSAGE, "--dynamic")
    assert (later["lr"], later["decay"], later["chosen_by"]) == (
        best["lr"],
        best["decay"],
        "tuned on val (dynamic.json)",
    )


def test_show_and_html_shade_the_dynamic_bits(run, capsys, tmp_path):
    text = PASSAGE * 3
    assert main(["perplexity", "-r", str(run), "--text", text, "--dynamic", "--dynamic-lr", "0.5", "--show"]) == 0
    out = capsys.readouterr().out
    assert "dynamic evaluation: sgd, lr 0.5" in out
    page = tmp_path / "dyn.html"
    assert (
        main(["perplexity", "-r", str(run), "--text", text, "--dynamic", "--dynamic-lr", "0.5", "--html", str(page)])
        == 0
    )
    html = page.read_text()
    assert "dynamic evaluation: sgd, lr 0.5" in html
    static_page = tmp_path / "static.html"
    assert main(["perplexity", "-r", str(run), "--text", text, "--html", str(static_page)]) == 0
    assert "dynamic evaluation" not in static_page.read_text()


def test_the_python_api_scores_dynamically_and_adapts_a_copy(run):
    model = charlm.load(run)
    text = PASSAGE * 4
    result = model.perplexity(text, dynamic=True, lr=0.5)
    assert result["bits_per_char"] < result["static"]["bits_per_char"] - 0.1
    assert model.perplexity(text, dynamic=True, lr=0.0)["nats_per_char"] == result["static"]["nats_per_char"]
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    adapted = model.adapt(text * 3, lr=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())  # the loaded model is unchanged
    assert adapted.perplexity(PASSAGE * 2)["nats_per_char"] < model.perplexity(PASSAGE * 2)["nats_per_char"] - 0.2
    with pytest.raises(charlm.errors.UsageError, match="unknown dynamic evaluation option 'rate'"):
        model.perplexity(text, dynamic=True, rate=0.1)
    with pytest.raises(charlm.errors.UsageError, match="adapt reads one text"):
        model.adapt()


def test_generate_adapt_samples_in_the_style_of_the_file(run, capsys, tmp_path):
    style = tmp_path / "style.txt"
    style.write_text(PASSAGE * 30, encoding="utf-8")
    common = ["generate", "-r", str(run), "--prefix", "the ", "--length", "300", "--temperature", "0.5", "--seed", "1"]
    assert main(common) == 0
    plain = capsys.readouterr().out
    assert main([*common, "--adapt", str(style)]) == 0
    captured = capsys.readouterr()
    assert "adapted to" in captured.err and "bits/char as it read" in captured.err
    names = ("wuderith", "fethisovan", "bothnavy", "hit")
    # the adapted model writes the file's made-up words, which the corpus never had
    assert sum(captured.out.count(n) for n in names) > sum(plain.count(n) for n in names)
    assert main([*common, "--adapt", str(tmp_path / "missing.txt")]) != 0


def one_line(capsys, code: int, *args) -> str:
    """Run the CLI, expecting exit `code`, one line on stderr and nothing on stdout; the line."""
    capsys.readouterr()
    assert main(list(args)) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err, err
    return err


@pytest.mark.parametrize("lr", ["1e9", "1e38", "100", "3e38"])
@pytest.mark.parametrize("output", [["--json"], [], ["--show"], ["--breakdown", "--json"], ["--dynamic-method", "rms"]])
def test_a_diverged_adaptation_is_one_line_never_figures(run, capsys, lr, output):
    """Figures of a model thrown off by its steps (2e8 bits/char, NaN, an infinite perplexity) are never shown,
    whatever the output: Diverged (exit 1) naming the lr and what to change."""
    err = one_line(
        capsys, 1, "perplexity", "-r", str(run), "--text", PASSAGE * 4, "--dynamic", "--dynamic-lr", lr, *output
    )
    assert err.startswith("error: dynamic evaluation diverged") and f"lr {float(lr):g}" in err
    assert "pass a lower --dynamic-lr" in err


@pytest.mark.parametrize("lr", ["1e300", "1e39", "inf", "nan", "-inf"])
def test_a_step_size_no_float32_step_can_hold_is_refused_before_reading(run, capsys, lr):
    err = one_line(capsys, 2, "perplexity", "-r", str(run), "--text", PASSAGE, "--dynamic", "--dynamic-lr", lr)
    assert "--dynamic-lr" in err


def test_the_api_and_generate_adapt_refuse_a_diverged_adaptation(run, capsys, tmp_path):
    model = charlm.load(run)
    for lr in (1e9, 1e30):
        with pytest.raises(charlm.errors.Diverged, match="dynamic evaluation diverged"):
            model.adapt(PASSAGE * 4, lr=lr)
        with pytest.raises(charlm.errors.Diverged, match="dynamic evaluation diverged"):
            model.perplexity(PASSAGE * 4, dynamic=True, lr=lr)
    with pytest.raises(charlm.errors.UsageError, match="float32"):
        model.adapt(PASSAGE, lr=1e300)
    style = tmp_path / "style.txt"
    style.write_text(PASSAGE * 4, encoding="utf-8")
    (run / tuning.TUNED).write_text(  # a grid pair, as --dynamic-tune writes: used by --adapt
        json.dumps({"format": tuning.FORMAT, "weights": stats.weights_hash(model.net), "sgd": {"chosen": [0.4, 0.0]}})
    )
    try:
        assert main(["generate", "-r", str(run), "--adapt", str(style), "-n", "20", "--seed", "1"]) == 0
        assert "lr 0.4, decay 0: tuned on val (dynamic.json)" in capsys.readouterr().err
    finally:
        (run / tuning.TUNED).unlink()


@pytest.mark.parametrize(
    "chosen", [[1e9, 0.01], [1e300, 0.0], [0.2, 5.0], [-0.2, 0.01], ["0.2", 0.01], [0.2], None, [0.15, 0.01]]
)
def test_a_tampered_dynamic_json_is_ignored_for_the_defaults(run, capsys, chosen):
    """dynamic.json only ever holds a pair of the grid: any other (huge, negative, text, off the grid) is not
    charlm's and the method's defaults are used, never an absurd figure."""
    weights = stats.weights_hash(load_model(run)[0])
    (run / tuning.TUNED).write_text(
        json.dumps({"format": tuning.FORMAT, "weights": weights, "sgd": {"chosen": chosen}})
    )
    try:
        out = run_json(capsys, "-r", str(run), "--text", PASSAGE * 2, "--dynamic")
    finally:
        (run / tuning.TUNED).unlink()
    assert (out["lr"], out["decay"], out["chosen_by"]) == (*DynamicOptions().resolved().to_dict().values(), "defaults")[
        1:
    ]


def test_tuning_keeps_a_diverged_pair_as_null_and_ranks_it_last(run, monkeypatch):
    model, _, saved = load_model(run)
    monkeypatch.setitem(tuning.GRID, "sgd", ((0.2, 1e9), (0.0,)))
    ids = torch.tensor(load_model(run)[1].encode(PASSAGE * 3))
    results = tuning.tune(
        model, ids, "sgd", rms=None, num_steps=saved.config.train.num_steps, device="cpu", precision="fp32"
    )
    assert [r["lr"] for r in results] == [0.2, 1e9] and results[1]["nats_per_char"] is None
    json.dumps(results, allow_nan=False)  # what dynamic.json keeps is JSON


def shapes_of(model) -> dict:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


@pytest.mark.parametrize("damage", ["wrong shape", "extra tensor", "missing tensor", "float16", "int8", "sparse 4 GB"])
def test_rms_statistics_of_another_shape_or_size_are_measured_again_not_read(run, capsys, damage):
    """A statistics file is judged by its header against the model's parameters before it is read: one of other
    shapes, names or dtypes, or larger than the model's statistics are (a sparse 4 GB file), is measured again."""
    from safetensors.torch import save_file

    model = load_model(run)[0]
    kept, weights = run / stats.stats_name("best"), stats.weights_hash(model)
    good = {n: torch.ones(shape) for n, shape in shapes_of(model).items()}
    name = next(iter(good))
    bad = {
        "wrong shape": {**good, name: torch.ones(3, 3)},
        "extra tensor": {**good, "decoder.weight": torch.ones(2)},
        "missing tensor": {k: v for k, v in good.items() if k != name},
        "float16": {k: v.half() for k, v in good.items()},
        "int8": {k: v.to(torch.int8) for k, v in good.items()},
    }.get(damage)
    if bad is None:
        kept.unlink(missing_ok=True)
        with open(kept, "wb") as f:
            f.truncate(4 * 1024**3)  # sparse: reading it would take 4 GB
    else:
        save_file(bad, kept, metadata={"format": stats.FORMAT, "weights": weights, "chars": "1"})
    assert stats.read_cached(kept, weights, shapes_of(model)) is None
    out = run_json(capsys, "-r", str(run), "--text", PASSAGE * 2, "--dynamic", "--dynamic-method", "rms")
    assert out["method"] == "rms" and math.isfinite(out["dynamic"]["nats_per_char"])
    assert stats.read_cached(kept, weights, shapes_of(model)) is not None  # measured again, and kept
