"""Auto-sizing: the rule (pure), the calibration cache, the config it builds, and `charlm train --budget`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_unreadable

from charlm.autosize import auto, calibrate, rule
from charlm.autosize.rule import CorpusStats, Shape
from charlm.config import ModelConfig
from charlm.model import CharRNN

REPO = Path(__file__).resolve().parents[1]


def compute_bound(flops_per_s: float = 3e11):
    """A machine whose training speed is its FLOP rate over 6 x the weights a character passes through."""

    def speed(shape: Shape, batch: int, steps: int, vocab: int = 65) -> float:
        return flops_per_s / (6 * shape.parameters(vocab))

    return speed


def stats(train_chars: int, vocab: int = 65) -> CorpusStats:
    return CorpusStats("corpus", train_chars, train_chars // 9, vocab)


@pytest.mark.parametrize("embed", [64, None])
@pytest.mark.parametrize("layers", [1, 2])
def test_shape_counts_the_weights_of_the_model_charlm_builds(embed, layers):
    shape = Shape(96, layers, embed)
    cfg = ModelConfig(
        kind="lstm",
        input="embedding",
        embed_size=96 if embed is None else embed,
        hidden_size=96,
        num_layers=layers,
        tie_weights=embed is None,
    )
    model = CharRNN(cfg, 70)
    assert shape.parameters(70) == model.num_parameters(embedding=False)
    assert shape.weights() == sum(p.numel() for p in model.rnn.parameters())


def test_a_longer_budget_or_a_faster_machine_buys_a_larger_model():
    big = stats(10_000_000)
    sizes = [rule.plan(big, seconds, compute_bound()).parameters for seconds in (30, 120, 600, 3600)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    slow, fast = (rule.plan(big, 120, compute_bound(rate)).parameters for rate in (3e10, 3e12))
    assert slow < fast


def test_the_chosen_model_is_the_widest_the_budget_can_train():
    chosen = rule.plan(stats(10_000_000), 600, compute_bound())
    assert chosen.chars_per_weight >= rule.CHARS_PER_WEIGHT
    wider = Shape(rule.WIDTHS[rule.WIDTHS.index(chosen.shape.hidden) + 1], 1, chosen.shape.embed)
    assert compute_bound()(wider, 16, 64) * 600 < rule.CHARS_PER_WEIGHT * wider.weights()


def test_a_small_corpus_caps_the_model_and_gets_dropout():
    small, large = stats(50_000), stats(50_000_000)
    on_small, on_large = (rule.plan(s, 600, compute_bound()) for s in (small, large))
    assert on_small.shape.weights() <= rule.MAX_WEIGHTS_PER_CHAR * 50_000
    assert on_small.parameters < on_large.parameters
    assert on_small.dropout > 0.3 and on_large.dropout == 0.0  # many epochs against a fraction of one
    assert on_small.epochs == rule.MAX_EPOCHS and on_small.epoch_limit == rule.MAX_EPOCHS  # stops before the budget
    assert on_large.epochs < 1 and on_large.epoch_limit is None and on_small.chars_seen == 40 * 50_000


def test_dropout_rises_with_the_epochs_a_budget_makes():
    corpus = stats(1_000_000)
    dropouts = [rule.plan(corpus, seconds, compute_bound()).dropout for seconds in (10, 120, 600, 3600)]
    assert dropouts == sorted(dropouts) and dropouts[0] == 0.0 and dropouts[-1] <= rule.MAX_DROPOUT


def test_a_tiny_corpus_gets_the_smallest_model_and_a_window_that_fits():
    chosen = rule.plan(stats(2_700), 240, compute_bound())
    assert chosen.shape == Shape(rule.WIDTHS[0])
    assert chosen.batch * chosen.steps * 4 <= 2_700
    assert chosen.dropout == rule.MAX_DROPOUT


def test_many_updates_switch_to_batch_32_and_a_large_vocabulary_is_tied():
    assert rule.plan(stats(50_000_000), 3600, compute_bound()).batch == 32
    assert rule.plan(stats(50_000_000), 30, compute_bound()).batch == 16
    chinese = rule.plan(stats(60_000, vocab=2_500), 120, compute_bound())
    assert chinese.shape.embed is None and chinese.label_smoothing > 0


def test_the_why_line_names_the_shape_speed_and_epochs():
    line = rule.plan(stats(1_000_000), 600, compute_bound()).why
    assert line.startswith("LSTM 1x") and "chars/s" in line and "10m" in line and "epochs" in line


def test_calibration_measures_once_then_reads_the_cache(tmp_path):
    path = tmp_path / "calibration.json"
    first = calibrate.Calibration(torch.device("cpu"), "fp32", 40, path)
    speed = first.speed(Shape(16, 1, 8), 4, 8)
    assert speed > 0 and len(first.measured) == 1
    second = calibrate.Calibration(torch.device("cpu"), "fp32", 40, path)
    assert second.speed(Shape(16, 1, 8), 4, 8) == speed and second.measured == []
    saved = json.loads(path.read_text())
    saved["machine"]["cpu"] = "another processor"
    path.write_text(json.dumps(saved))
    third = calibrate.Calibration(torch.device("cpu"), "fp32", 40, path)
    third.speed(Shape(16, 1, 8), 4, 8)
    assert third.measured  # another machine's speeds are measured again


def test_calibration_survives_an_unreadable_cache(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("{not json")
    assert calibrate.Calibration(torch.device("cpu"), "fp32", 40, path).speeds == {}


@pytest.mark.parametrize(
    "speed",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "-800",
        "0",
        "-0.0",
        "1e300",
        "1" + "0" * 400,
        '"fast"',
        "true",
        "null",
        "[1234]",
        '{"v": 1}',
    ],
)
def test_a_cached_speed_that_was_not_measured_is_measured_again(tmp_path, monkeypatch, speed):
    path = tmp_path / "calibration.json"
    monkeypatch.setattr(calibrate, "measure", lambda *a, **kw: 4321.0)
    first = calibrate.Calibration(torch.device("cpu"), "fp32", 40, path)
    first.speed(Shape(16, 1, 8), 4, 8)
    good = json.loads(path.read_text())
    (key,) = good["speeds"]
    text = json.dumps({**good, "speeds": {key: "SPEED", "other": 99.0}}).replace('"SPEED"', speed)
    path.write_text(text)  # raw text: NaN and Infinity are what a careless editor (or Python's json) writes
    again = calibrate.Calibration(torch.device("cpu"), "fp32", 40, path)
    assert again.speed(Shape(16, 1, 8), 4, 8) == 4321.0 and again.measured == [key]
    unreadable = speed in ("NaN", "Infinity", "-Infinity")  # not JSON: nothing of such a file is trusted
    expected = {key: 4321.0} if unreadable else {"other": 99.0, key: 4321.0}
    assert json.loads(path.read_text())["speeds"] == expected  # strict JSON again, a good entry kept


@pytest.mark.parametrize("damage", ["fifo", "dev-zero", "folder", "huge", "list", "speeds-list", "not-utf8", "deep"])
def test_a_cache_that_is_not_a_bounded_json_file_is_ignored_without_hanging(tmp_path, damage):
    path = tmp_path / "calibration.json"
    if not make_unreadable(path, damage):
        path.write_bytes(
            {
                "list": b"[1, 2]",
                "speeds-list": json.dumps({"machine": calibrate.machine(), "speeds": [1.0]}).encode(),
                "not-utf8": b'{"\xff": 1}\xff',
                "deep": b"[" * 50_000,
            }[damage]
        )
    assert calibrate.Calibration(torch.device("cpu"), "fp32", 40, path).speeds == {}


@pytest.mark.slow
def test_budget_training_with_a_nan_cache_measures_again(write_text, tmp_path):
    corpus = write_text("the cat sat on the mat. " * 125)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    argv = ("train", "--corpus", str(corpus), "--budget", "2s", "--device", "cpu", "--set", "train.epochs=1")
    assert charlm(*argv, "--run-dir", str(tmp_path / "first"), cwd=tmp_path, env_extra=env).returncode == 0
    path = tmp_path / "cache" / "charlm" / "calibration.json"
    saved = json.loads(path.read_text())
    bad = dict(zip(saved["speeds"], ["NaN", "-800", "0", "1e300", "Infinity"] * 9, strict=False))
    path.write_text(
        json.dumps({**saved, "speeds": bad})
        .replace('"NaN"', "NaN")
        .replace('"Infinity"', "Infinity")
        .replace('"-800"', "-800")
        .replace('"0"', "0")
        .replace('"1e300"', "1e300")
    )
    done = charlm(*argv, "--run-dir", str(tmp_path / "second"), cwd=tmp_path, env_extra=env)
    assert done.returncode == 0 and "unexpected" not in done.stderr, done.stderr
    assert "auto: LSTM" in done.stdout and "nan" not in done.stdout.lower() and "-800" not in done.stdout
    speeds = json.loads(path.read_text())["speeds"].values()
    assert all(0 < v < calibrate.MAX_SPEED for v in speeds)


def test_auto_config_on_a_tiny_file_is_a_tiny_valid_config(write_text, tmp_path):
    corpus = write_text("the cat sat on the mat. " * 125)  # 3,000 characters
    # 10 minutes: 40 epochs of this text on any machine (the plan only; nothing trains here)
    config, chosen = auto.auto_config(str(corpus), 600.0, ["train.device=cpu"], tmp_path / "cal.json")
    assert config.model.hidden_size == rule.WIDTHS[0] and config.train.time_budget == "10m"
    assert config.train.patience >= 3 and config.sample.prefixes == ["the"]
    assert config.train.epochs == rule.MAX_EPOCHS and "= 40 epochs of 2,700 train chars and stops" in chosen.why
    assert config.name.startswith("auto-") and chosen.stats.train_chars == 2_700
    assert config.train.batch_size * config.train.num_steps * 4 <= 2_700


def test_overrides_stay_on_top_of_the_plan(write_text, tmp_path):
    corpus = write_text("abcdefgh " * 400)
    config, _ = auto.auto_config(
        str(corpus), 3.0, ["train.device=cpu", "model.hidden_size=40", "sample.prefixes=[ab]"], tmp_path / "cal.json"
    )
    assert config.model.hidden_size == 40 and config.sample.prefixes == ["ab"]


def charlm(*args, cwd: Path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_train_with_a_budget_sizes_trains_and_keeps_the_config(write_text, tmp_path):
    corpus = write_text("the cat sat on the mat. " * 125)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = charlm(
        "train",
        "--corpus",
        str(corpus),
        "--budget",
        "3s",
        "--run-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        cwd=tmp_path,
        env_extra=env,
    )
    assert done.returncode == 0, done.stderr
    assert "auto: LSTM 1x32" in done.stdout
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "name: auto-corpus\n" in saved and "time_budget: 3s" in saved
    assert (tmp_path / "cache" / "charlm" / "calibration.json").exists()
    resumed = charlm(
        "train",
        "--resume",
        "--run-dir",
        str(tmp_path / "run"),
        "--set",
        "train.time_budget=4s",
        cwd=tmp_path,
        env_extra=env,
    )
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0s"], "--budget must be a positive duration"),
        (["--budget", "soon"], "--budget = 'soon' is not a duration"),
        (["--config", "auto", "--resume", "--run-dir", "x"], "drop --config auto"),
        (["--budget", "5s", "--nproc", "2"], "auto-sizing plans for one process"),
    ],
)
def test_bad_auto_requests_are_one_line_errors(args, message, write_text, tmp_path):
    corpus = write_text("abc " * 1000)
    done = charlm(
        "train", "--corpus", str(corpus), *args, cwd=tmp_path, env_extra={"XDG_CACHE_HOME": str(tmp_path / "cache")}
    )
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_early_stopping_ends_an_auto_run_that_stops_improving(tmp_path):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc" * 600 + "cba" * 60, encoding="utf-8")  # fitting train makes val worse
    config, _ = auto.auto_config(
        str(corpus), 30.0, ["train.device=cpu", "data.val_fraction=0.0909"], tmp_path / "cal.json"
    )
    from charlm import train

    summary = train(config, tmp_path / "run")
    assert summary.stopped == "early_stopping" and summary.train_seconds < 30
    assert not math.isnan(summary.best_loss)


def test_plain_train_on_another_corpus_is_the_lyrics_default_and_says_so(write_text, tmp_path):
    corpus = write_text("the cat sat on the mat. " * 125)
    done = charlm(
        "train",
        "--corpus",
        str(corpus),
        "--set",
        "train.epochs=1",
        "--run-dir",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        cwd=tmp_path,
        env_extra={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr
    assert "tip: `charlm train --corpus" in done.stdout and "--budget 10m` sizes the model" in done.stdout
    assert "name: jaychou-lstm" in (tmp_path / "run" / "config.yaml").read_text()
    assert not (tmp_path / "cache" / "charlm" / "calibration.json").exists()  # nothing was measured


def test_early_stopping_is_on_once_a_run_sees_its_text_and_off_before():
    small = rule.plan(stats(50_000), 120, compute_bound())
    huge = rule.plan(stats(90_000_000), 20, compute_bound())
    assert small.epochs >= 1 > huge.epochs

    def patience(chosen):
        items = auto.plan_overrides(chosen, chosen.budget_s)
        item = next(i for i in items if i.startswith("train.patience="))
        return int(item.split("=")[1])

    assert patience(small) >= 3 and patience(huge) == 0
