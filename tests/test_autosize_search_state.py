"""Every number of a search bounded by what can run (autosize/space.py's check_rungs, search_state.py): settings
and a search.json's values refused in one line before any candidate is drawn or trained, nothing written."""

from __future__ import annotations

import json
import time

import pytest
from search_helpers import FakeTraining, resume, start

from charlm.autosize import space
from charlm.errors import UsageError
from charlm.store import search_log

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize(
    "sets, message",
    [
        (["search.trials=100000000"], "search.trials=100000000 is not 2 to 1000 candidates"),
        (["search.trials=1001"], "search.trials=1001 is not 2 to 1000"),
        # 30 s of search: 0.02 s each at rung 0, 200 at 0.1 s
        (["search.trials=1000", "search.share=0.05"], "set search.trials to 200 or fewer"),
        (["search.reduction=1000000000000000"], "each cut keeps 1 in 1000000000000000"),
        (["search.rungs=3", "search.reduction=1000000000000000"], "leave none to compare by rung 1"),
        (["search.rungs=2000"], "search.rungs=2000 with search.reduction=2"),
        (["search.rungs=100000000", "search.reduction=3"], "search.rungs=100000000"),
        (["search.trials=1000", "search.rungs=11"], "leave none to compare by rung 10"),  # 2^10 > 1000
        (["search.trials=2", "search.rungs=3"], "2 candidates leave none to compare by rung 2"),
    ],
)
def test_settings_no_search_can_run_are_refused_before_anything(tmp_path, monkeypatch, sets, message):
    fake = FakeTraining(monkeypatch)
    began = time.monotonic()
    with pytest.raises(UsageError, match=message) as refused:
        start(tmp_path / "run", sets)
    assert time.monotonic() - began < 5 and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists() and not fake.calls


def test_the_bounds_leave_the_usual_searches_alone():
    assert space.check_rungs(270, trials=9, rungs=3, reduction=3)[2] == pytest.approx(270 / 21 * 9)
    assert len(space.check_rungs(3600, trials=1000, rungs=10, reduction=2)) == 10  # 2^9 = 512 <= 1000
    assert space.check_rungs(10, trials=5, rungs=1, reduction=10**15) == [2.0]  # no cut: the reduction is moot
    assert space.check_rungs(3.6, trials=4, rungs=2, reduction=2) == pytest.approx([0.6, 1.2])
    with pytest.raises(UsageError, match="raise --budget"):
        space.check_rungs(0.1, trials=2, rungs=1, reduction=2)


@pytest.fixture(scope="module")
def stopped_once(tmp_path_factory):
    """A search stopped by SIGINT in its third trial (copied by each test that edits it)."""
    import os
    import signal

    from charlm.files.interrupts import Interrupted

    mp = pytest.MonkeyPatch()
    fake = FakeTraining(mp)
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 2 else None
    run = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.raises(Interrupted):
        start(run)
    mp.undo()
    return run


def stopped_search(stopped_once, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(stopped_once, run)
    return run, FakeTraining(monkeypatch)


def edited(plan: dict, edit: str) -> dict:
    """search.json with one hand edit."""
    plan = json.loads(json.dumps(plan))
    if edit == "trials":
        plan["trials"] = 10_000_000
    elif edit == "reduction":
        plan["reduction"] = 10**15
    elif edit == "rung_seconds":
        plan["rung_seconds"] = [6.7e14, 1.34e15]
    elif edit == "more-rungs":
        plan["rung_seconds"] = plan["rung_seconds"] * 1000
    elif edit == "budget":
        plan["budget_s"] = -40
    elif edit == "budget-inf":
        plan["budget_s"] = 1e308 * 10
    elif edit == "id":
        plan["id"] = "../../x"
    elif edit == "width":
        plan["space"]["widths"] = [10**9]
    elif edit == "lr":
        plan["space"]["lr"] = [1e-3, 1e9]
    elif edit == "rule":
        plan["rule"]["hidden"] = 10**9
    elif edit == "base":
        plan["base"]["train"]["lr"] = -1
    elif edit == "shared-nowhere":
        plan["shared"], plan["storage"] = True, None
    elif edit == "seed":
        plan["seed"] = -1
    elif edit == "missing":
        del plan["space"]
    elif edit == "unknown":
        plan["extra"] = 1
    elif edit == "type":
        plan["trials"] = "nine"
    return plan


EDITS = ["trials", "reduction", "rung_seconds", "more-rungs", "budget", "budget-inf", "id", "width", "lr", "rule"]
EDITS += ["base", "shared-nowhere", "seed", "missing", "unknown", "type"]


@pytest.mark.parametrize("edit", EDITS)
def test_a_search_json_no_search_can_run_is_refused_on_resume_touching_nothing(
    stopped_once, tmp_path, monkeypatch, edit
):
    run, fake = stopped_search(stopped_once, tmp_path, monkeypatch)
    plan = json.loads((run / "search.json").read_text())
    (run / "search.json").write_text(json.dumps(edited(plan, edit)))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock.pid"}
    with pytest.raises(
        UsageError, match=f"{run / 'search.json'} (is damaged|cannot be read) \\(.*\\): the search cannot resume"
    ) as e:
        resume(run)
    assert "\n" not in str(e.value) and not fake.calls
    assert {name: (run / name).read_bytes() for name in before} == before


def test_a_whole_search_json_resumes(stopped_once, tmp_path, monkeypatch):
    run, fake = stopped_search(stopped_once, tmp_path, monkeypatch)
    resume(run)
    assert fake.calls and search_log.winner(search_log.read_lines(run)) is not None
