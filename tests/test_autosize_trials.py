"""A search's folder is owned like a run folder (autosize/trials.py, search.py, store/run_lock.py): trials train in
RUN/trials/tNNNN and nowhere else, whatever the study or a file says; nothing is deleted; a copy trains its own
trials; RUN's lock covers every write of the search; a folder that holds a search is only ever resumed. The
trainer is faked from the test side (search_helpers), except where a real trainer's check is the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from search_helpers import FakeTraining, plan_and_config, resume, start

from charlm.errors import UsageError
from charlm.files.interrupts import Interrupted
from charlm.store import search_log
from charlm.store.run_dir import RunDir

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]


def interrupted_search(tmp_path, monkeypatch, after: int = 3) -> tuple[Path, FakeTraining]:
    """A search stopped by SIGINT in its trial `after` (0-based, of rung 0)."""
    fake = FakeTraining(monkeypatch)
    run = tmp_path / "run"

    def stop(path, config):
        if len(fake.calls) == after + 1:
            os.kill(os.getpid(), signal.SIGINT)

    fake.during = stop
    with pytest.raises(Interrupted):
        start(run)
    fake.during = None
    return run, fake


def study_of(run: Path):
    return optuna.load_study(
        study_name=json.loads((run / "search.json").read_text())["study"], storage=f"sqlite:///{run / 'study.db'}"
    )


def user_folder(tmp_path: Path, name: str = "mine") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    return folder


@pytest.mark.parametrize("points_at", ["user", "run", "root", "relative", "other-trial"])
def test_a_trials_folder_edited_in_the_study_is_never_used_nor_deleted(tmp_path, monkeypatch, points_at):
    run, fake = interrupted_search(tmp_path, monkeypatch, after=2)
    mine = user_folder(tmp_path)
    target = {
        "user": str(mine),
        "run": str(run),
        "root": "/",
        "relative": "../mine",
        "other-trial": str(run / "trials" / "t0000"),
    }[points_at]
    study = study_of(run)
    for frozen in study.trials:  # every trial not yet trained points elsewhere
        if frozen.state.name == "RUNNING":
            study._storage.set_trial_user_attr(frozen._trial_id, "folder", target)
    fake.calls.clear()
    resume(run)
    assert (mine / "thesis.txt").read_text() == "years of work"
    assert all(
        path == run / "trials" / f"t{n:04d}"
        for path, n in zip(fake.trial_folders(), trained_numbers(fake), strict=True)
    )
    assert search_log.winner(search_log.read_lines(run)) is not None


def trained_numbers(fake: FakeTraining) -> list[int]:
    return [int(config.name.rsplit("-t", 1)[1]) for path, config, _ in fake.calls if path.parent.name == "trials"]


@pytest.mark.parametrize("what", ["trials", "trial"])
def test_a_link_in_place_of_the_trials_folder_is_refused_and_its_target_untouched(tmp_path, monkeypatch, what):
    run, fake = interrupted_search(tmp_path, monkeypatch, after=1)
    mine = user_folder(tmp_path)
    link = run / "trials" if what == "trials" else run / "trials" / "t0002"
    if what == "trials":
        (run / "trials").mkdir(exist_ok=True)
        (run / "trials").rmdir()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(mine, target_is_directory=True)
    with pytest.raises(UsageError, match="is not the search's own folder"):
        resume(run)
    assert sorted(os.listdir(mine)) == ["thesis.txt"]


def test_a_users_folder_where_a_trial_trains_is_refused_untouched_by_the_real_trainer(tmp_path):
    from charlm.autosize import search_state, trials
    from charlm.autosize.stops import Stops

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 400)
    config, chosen = plan_and_config([f"data.corpus={corpus}", "train.epochs=1"])
    state = search_state.new(config, chosen, chosen.budget_s, None)
    folder = user_folder(tmp_path, "t0003")  # where trial 3 would train: not charlm's, no checkpoint

    class Frozen:
        number, params = 3, state.rule

    with Stops("resume"), pytest.raises(UsageError, match="holds files charlm did not write"):
        trials.train_trial(folder, state, Frozen, 1.0, Stops("resume"))
    assert sorted(os.listdir(folder)) == ["thesis.txt"]


def test_a_copied_search_folder_resumes_in_its_own_study_and_trials(tmp_path, monkeypatch):
    import shutil

    run, fake = interrupted_search(tmp_path, monkeypatch, after=2)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name not in (".lock",)}
    fake.calls.clear()
    resume(copy)
    assert {p: p.read_bytes() for p in before} == before  # the original's study and trials unchanged
    assert fake.calls and all(path.is_relative_to(copy) for path, _, _ in fake.calls)
    assert search_log.winner(search_log.read_lines(copy)) is not None
    assert search_log.winner(search_log.read_lines(run)) is None


def test_a_copy_of_a_search_sharing_a_journal_is_refused_while_the_original_holds_it(tmp_path, monkeypatch):
    import shutil

    fake = FakeTraining(monkeypatch)
    journal, run = tmp_path / "study.log", tmp_path / "run"

    def stop(path, config):
        if len(fake.calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    fake.during = stop
    with pytest.raises(Interrupted):
        start(run, [f"search.storage={journal}"])
    fake.during = None
    shutil.copytree(run, tmp_path / "copy")
    with pytest.raises(UsageError, match=f"is a copy of {run}"):
        resume(tmp_path / "copy")
    (run / "search.json").rename(tmp_path / "gone.json")  # moved away: the copy is now the search
    resume(tmp_path / "copy")
    assert search_log.winner(search_log.read_lines(tmp_path / "copy")) is not None


SECOND = """
import sys
sys.path.insert(0, sys.argv[2])
from search_helpers import start
try:
    start(__import__("pathlib").Path(sys.argv[1]))
except Exception as e:
    print(type(e).__name__, e)
"""


def test_a_second_search_on_the_folder_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    """The first holds RUN's lock from before its first write to its end: a second search, started any time,
    is refused naming the first's process, and search.json stays the first's."""
    fake = FakeTraining(monkeypatch)
    run = tmp_path / "run"
    seen = []

    def second(path, config):
        if len(fake.calls) == 2:
            plan = json.loads((run / "search.json").read_text())
            env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
            done = subprocess.run(
                [sys.executable, "-c", SECOND, str(run), str(REPO / "tests")], capture_output=True, text=True, env=env
            )
            seen.append((done.stdout.strip(), plan, json.loads((run / "search.json").read_text())))
            os.remove(run / "search.json")  # the first's check at the folder is not what refuses the second
            again = subprocess.run(
                [sys.executable, "-c", SECOND, str(run), str(REPO / "tests")], capture_output=True, text=True, env=env
            )
            (run / "search.json").write_text(json.dumps(plan))
            seen.append((again.stdout.strip(), plan, plan))

    fake.during = second
    start(run)
    for out, plan, after in seen:
        assert f"UsageError run folder {run} is in use by charlm process {os.getpid()}" in out or "already holds" in out
        assert after == plan
    assert f"in use by charlm process {os.getpid()}" in seen[1][0]
    lines = search_log.read_lines(run)
    assert len(search_log.trials(lines)) == 5 and search_log.winner(lines) is not None


@pytest.mark.parametrize("search", [True, False])
def test_a_folder_holding_an_interrupted_search_is_continued_never_started_again(tmp_path, monkeypatch, capsys, search):
    from charlm.cli.main import main

    run, _ = interrupted_search(tmp_path, monkeypatch, after=1)
    before = (run / "search.json").read_bytes(), (run / "search.jsonl").read_bytes()
    argv = ["train", "--corpus", "x.txt", "--budget", "10m", "-r", str(run)] + ["--search"] * search
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"continue it with charlm train --resume --run-dir {run}" in err, err
    assert ((run / "search.json").read_bytes(), (run / "search.jsonl").read_bytes()) == before
    with pytest.raises(UsageError, match="already holds a search"):
        start(run)  # the library refuses it too
    assert (run / "search.json").read_bytes() == before[0]


def test_the_search_holds_its_lock_with_its_pid_through_its_winner(tmp_path, monkeypatch):
    fake = FakeTraining(monkeypatch)
    run = tmp_path / "run"
    held = []

    def probe(path, config):
        folder = RunDir(run)
        held.append((folder.ownership.is_locked(), (run / ".lock.pid").read_text()))
        if path == run:  # the winner's trainer: the search lends it the lock
            with folder.ownership.lock():
                pass
        else:
            with pytest.raises(UsageError, match=f"in use by charlm process {os.getpid()}: .*kill {os.getpid()}"):
                with folder.ownership.lock():
                    pass

    fake.during = probe
    start(run)
    assert held and all(h == (True, str(os.getpid())) for h in held)
    assert RunDir(run).ownership.is_locked() is False
