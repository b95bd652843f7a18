"""search.jsonl read back (store/search_log.py): a line is used only when it is one charlm writes and agrees with
search.json; a hand-edited or damaged line is skipped and counted, never shown (`info`) nor trained from (a forged
winner on `--resume`). The search that writes the files runs with its trainer faked (search_helpers)."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
from search_helpers import FakeTraining, resume, start

from charlm.files.interrupts import Interrupted
from charlm.store import search_log

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    FakeTraining(mp)
    run = tmp_path_factory.mktemp("log") / "run"
    start(run)
    mp.undo()
    return run


def rung(lines: list[dict], trial: int, number: int = 0) -> dict:
    return next(
        line for line in lines if line.get("event") is None and (line["trial"], line["rung"]) == (trial, number)
    )


def forged(lines: list[dict], case: str) -> str:
    """One line as a hand edit (or damage) writes it."""
    line, won = dict(rung(lines, 3)), dict(search_log.winner(lines))
    changes = {
        "trial-99": {"trial": 99},
        "trial-negative": {"trial": -1},
        "trial-text": {"trial": "3"},
        "trial-bool": {"trial": True},
        "rung-7": {"rung": 7},
        "seconds-negative": {"seconds": -5.0},
        "loss-negative": {"val_loss": -3.0},
        "loss-text": {"val_loss": "low"},
        "huge-width": {"params": {**line["params"], "hidden": 10**9}},
        "missing-param": {"params": {k: v for k, v in line["params"].items() if k != "lr"}},
        "rung-seconds": {"rung_seconds": 1e15},
        "diverged-with-loss": {"diverged": True, "error": "x"},
        "pruned-not-bool": {"pruned": "yes"},
        "duplicate": {"val_loss": 0.01},
        "pruned-unlogged-rung": {"event": "pruned", "rung": 1},
        "winner-forged-loss": {**won, "trial": 3, "params": line["params"], "val_loss": 0.01},
        "winner-other-params": {**won, "params": {**won["params"], "hidden": 1024}},
        "winner-huge-budget": {**won, "budget": 1e12},
        "winner-negative-seconds": {**won, "seconds": -1.0},
        "winner-bad-time": {**won, "chosen_at": "yesterday"},
        "event-unknown": {"event": "hello"},
    }
    if case == "loss-nan":
        return json.dumps({**line, "val_loss": math.nan})  # Python's json writes NaN; charlm never does
    if case in ("list", "garbage", "not-utf8"):
        return {"list": "[1, 2]", "garbage": "{not json", "not-utf8": '{"trial": 3, "x": "\udcff"}'}[case]
    return json.dumps({**line, **changes[case]})


CASES = [
    "trial-99", "trial-negative", "trial-text", "trial-bool", "rung-7", "seconds-negative", "loss-negative",
    "loss-text", "loss-nan", "huge-width", "missing-param", "rung-seconds", "diverged-with-loss", "pruned-not-bool",
    "duplicate", "pruned-unlogged-rung", "winner-forged-loss", "winner-other-params", "winner-huge-budget",
    "winner-negative-seconds", "winner-bad-time", "event-unknown", "list", "garbage", "not-utf8",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_line_that_is_not_the_searchs_is_skipped_and_counted(finished, tmp_path, case):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    lines = search_log.read_lines(run)
    with open(run / "search.jsonl", "ab") as f:
        f.write(forged(lines, case).encode("utf-8", "surrogateescape") + b"\n")
    log = search_log.read_log(run)
    assert log.lines == lines and log.skipped == 1
    assert search_log.winner(log.lines) == search_log.winner(lines)


def test_info_warns_of_skipped_lines_and_shows_none_of_them(finished, tmp_path, capsys):
    import shutil

    from charlm.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    lines = search_log.read_lines(run)
    with open(run / "search.jsonl", "a", encoding="utf-8") as f:
        for case in ("trial-99", "seconds-negative", "winner-forged-loss"):
            f.write(forged(lines, case) + "\n")
    assert main(["info", "-r", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "skipped 3 line(s) that are not the search's" in err and "99" not in out and "-5.0" not in out
    assert f"trial {search_log.winner(lines)['trial']} won" in out
    assert main(["info", "-r", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["search"] == lines and shown["search_skipped"] == 3


@pytest.mark.parametrize("case", ["forged-loss", "other-params", "out-of-range-trial"])
def test_a_forged_winner_is_not_trained_the_search_chooses_its_own(tmp_path, monkeypatch, case):
    fake = FakeTraining(monkeypatch)
    run = tmp_path / "run"
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 6 else None
    with pytest.raises(Interrupted):  # in the last rung: every rung-0 line is there, trial 3 was pruned
        start(run)
    line = rung(search_log.read_lines(run), 3)
    won = {
        "event": "winner",
        "trial": 3,
        "params": line["params"],
        "val_loss": line["val_loss"],
        "seconds": 0.0,
        "search_seconds": 10.0,
        "budget": 100.0,
        "copied": False,
        "again": False,
        "chosen_at": "2026-01-01T00:00:00",
    }
    won |= {
        "forged-loss": {"val_loss": 0.01},
        "other-params": {"params": {**line["params"], "layers": 3 - line["params"]["layers"]}},
        "out-of-range-trial": {"trial": 5},
    }[case]
    with open(run / "search.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(won) + "\n")
    assert search_log.winner(search_log.read_lines(run)) is None
    fake.during, fake.calls[:] = None, []
    resume(run)
    real = search_log.winner(search_log.read_lines(run))
    assert real is not None and real["trial"] != 3
    winner_config = next(config for path, config, _ in fake.calls if path == run)
    assert winner_config.model.hidden_size == real["params"]["hidden"]
    assert winner_config.model.num_layers == real["params"]["layers"]
