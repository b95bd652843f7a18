"""`charlm train --budget D --search` (autosize/search.py, space.py, study.py): the space around the rule, the
rungs, and the search end to end through the CLI: pruning, files, info, plot, resume, a study shared by two
processes, and the message without Optuna."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from charlm.autosize import rule, space
from charlm.store import search_log

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and dog ran far away from home".split()
# tiny settings: a trial of one epoch of a 9 KB corpus ends by its epochs, before its rung's time, so its val loss
# does not depend on this machine's speed (which trials are pruned is then the same on every machine)
FAST = ["--set", "train.epochs=1", "--set", "search.trials=5", "--set", "search.rungs=2", "--set", "search.reduction=2"]


def corpus_file(folder: Path, words: int = 1500) -> Path:
    import random

    rng = random.Random(1)
    path = folder / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(words)), encoding="utf-8")
    return path


def charlm(*args, cwd: Path, env_extra: dict | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cwd / "cache")}
    env.update(env_extra or {})
    argv = [sys.executable, "-m", "charlm", *args]
    if not wait:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def plan_for(train_chars: int = 200_000) -> rule.Plan:
    stats = rule.CorpusStats("x", train_chars, train_chars // 10, 65)
    return rule.plan(stats, 600, lambda shape, batch, steps: 3e6 / shape.hidden)


def test_the_space_holds_the_rules_choice():
    chosen = plan_for()
    around = space.neighbourhood(chosen)
    params = space.rule_params(chosen)
    assert params["hidden"] in around.widths and chosen.shape.hidden == around.widths[1]  # a neighbour each side
    assert around.dropout[0] <= params["dropout"] <= around.dropout[1]
    assert around.lr[0] < params["lr"] < around.lr[1]
    assert params["batch"] in around.batches and params["layers"] in around.layers
    items = dict(item.split("=", 1) for item in space.overrides(params, tied=False))
    assert items["model.hidden_size"] == str(chosen.shape.hidden) and items["model.weight_drop"] == "0"


def test_search_settings_are_checked_with_the_config():
    from charlm.config import Config, load_config
    from charlm.errors import ConfigError

    assert not Config().search.enabled  # the rule alone unless asked
    with pytest.raises(ConfigError, match=r"search.share must be in \(0, 1\)"):
        load_config(None, ["search.share=1.5"])
    with pytest.raises(ConfigError, match="search.reduction must be at least 2"):
        load_config(None, ["search.reduction=1"])
    with pytest.raises(ConfigError, match="search.min_passes must be at least 0"):
        load_config(None, ["search.min_passes=-1"])


def test_the_rungs_grow_by_the_reduction_and_fit_the_search_share():
    rungs = space.rung_seconds(270, trials=9, rungs=3, reduction=3)
    assert rungs[1] == pytest.approx(3 * rungs[0]) and rungs[2] == pytest.approx(9 * rungs[0])
    # 9 candidates at rung 0, 3 trained on to rung 1, 1 to rung 2: the share exactly (floats: approx)
    assert 9 * rungs[0] + 3 * (rungs[1] - rungs[0]) + (rungs[2] - rungs[1]) == pytest.approx(270)


def test_a_rungs_cut_keeps_the_best_one_in_reduction_once_all_are_in():
    values = {0: 3.9, 1: 4.02, 2: 4.09, 3: 4.03, 4: 4.10, 5: 4.08, 6: 4.04, 7: 4.11, 8: 4.085}
    assert space.kept(values, 3) == {0, 1, 3}  # the best 3 of 9, whatever order they came in
    assert space.kept({0: 2.0, 1: 1.5}, 3) == {1}  # at least one goes on
    assert space.kept({0: float("nan"), 1: 9.0, 2: 8.0, 3: 7.0}, 2) == {3, 2}  # a diverged trial ranks last
    assert space.kept({}, 3) == set()


def test_the_winner_trains_again_from_the_start_only_when_its_whole_run_fits():
    # 40 epochs at 6 s each (a trial ran 4 of them in 24 s): 240 s, and 264 with a tenth to spare
    assert space.whole_run_fits(seconds=24, epochs_done=4, epochs=40, left=270)
    assert not space.whole_run_fits(seconds=24, epochs_done=4, epochs=40, left=260)
    assert not space.whole_run_fits(seconds=24, epochs_done=40, epochs=40, left=1e9)  # its run is done: copy it
    assert not space.whole_run_fits(seconds=24, epochs_done=0, epochs=40, left=1e9)  # no speed measured
    assert not space.whole_run_fits(seconds=24, epochs_done=4, epochs=100_000, left=600)  # the budget ends it


def test_the_log_folds_a_cuts_pruned_line_into_the_rungs_line():
    line = {"trial": 2, "rung": 0, "params": {"hidden": 64}, "val_loss": 4.0, "seconds": 5.0, "pruned": False}
    lines = [line, {**line, "trial": 3}, {**line, "event": "pruned", "pruned": True}]
    by_trial = search_log.trials(lines)
    assert [step["pruned"] for step in by_trial[2]] == [True] and not by_trial[3][0]["pruned"]
    assert len(by_trial[2]) == 1  # one line per trial and rung


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    corpus = corpus_file(folder)
    done = charlm(
        "train", "--corpus", str(corpus), "--budget", "20s", "--search", "--device", "cpu", "-r", "run", *FAST,
        cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder, done


@pytest.mark.slow
def test_a_search_prunes_and_its_winner_continues_in_the_run_folder(searched):
    folder, done = searched
    run = folder / "run"
    lines = search_log.read_lines(run)
    by_trial = search_log.trials(lines)
    assert sorted(by_trial) == [0, 1, 2, 3, 4] and by_trial[0][0]["rule"]  # the rule's choice is the first
    assert any(steps[-1]["pruned"] for steps in by_trial.values())
    # each cut waited for its rung: of the 5 candidates at rung 0, exactly the best 5 // 2 went on, pruned or not
    first = {number: steps[0]["val_loss"] for number, steps in by_trial.items()}
    went_on = {number for number, steps in by_trial.items() if not steps[0]["pruned"]}
    assert went_on == space.kept(first, 2) and len(went_on) == 2
    won = search_log.winner(lines)
    assert won is not None and won["copied"] and not won["again"] and not by_trial[won["trial"]][-1]["pruned"]
    study = optuna.load_study(study_name="auto-corpus", storage=f"sqlite:///{run / 'study.db'}")
    assert won["trial"] == study.best_trial.number
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
    # the winner's run continued from its checkpoint: its metrics, then the resume event, in the run folder
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("event") == "resume" for m in metrics) and "epoch" in metrics[0]
    config = (run / "config.yaml").read_text()
    assert "name: auto-corpus\n" in config and f"hidden_size: {won['params']['hidden']}\n" in config
    assert "search: trial" in done.stdout and "pruned at rung 0" in done.stdout and "(rule)" in done.stdout


def test_info_shows_the_search_and_plot_draws_its_rungs(searched):
    folder, _ = searched
    shown = charlm("info", "-r", "run", cwd=folder)
    assert shown.returncode == 0, shown.stderr
    assert "val rung 0" in shown.stdout and "winner" in shown.stdout
    as_json = json.loads(charlm("info", "-r", "run", "--json", cwd=folder).stdout)
    assert len([line for line in as_json["search"] if "event" not in line]) >= 5
    pytest.importorskip("matplotlib")
    drawn = charlm("plot", "-r", "run", "--out", "search.png", cwd=folder)
    assert drawn.returncode == 0, drawn.stderr
    from PIL import Image

    with Image.open(folder / "search.png") as png:
        assert png.size[0] > png.size[1] * 3  # four panels side by side (three without a search)


@pytest.mark.slow
def test_a_search_interrupted_resumes_where_it_stopped(tmp_path):
    corpus = corpus_file(tmp_path)
    args = ["train", "--corpus", str(corpus), "--budget", "8s", "--search", "--device", "cpu", "-r", "run"]
    slow = ["--set", "search.trials=4", "--set", "search.rungs=2", "--set", "search.reduction=2"]
    process = charlm(*args, *slow, cwd=tmp_path, wait=False)
    log = tmp_path / "run" / "search.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().strip()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # inside a trial (the trainer saves it) or between two: both resume
    process.communicate(timeout=120)
    before = search_log.read_lines(tmp_path / "run")
    assert before and search_log.winner(before) is None, "the search ended before it could be interrupted"
    resumed = charlm("train", "--resume", "-r", "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    after = search_log.read_lines(tmp_path / "run")
    assert after[: len(before)] == before  # finished rungs kept, not trained again
    rungs = [(line["trial"], line["rung"]) for line in after if "event" not in line]
    assert len(rungs) == len(set(rungs)) and search_log.winner(after) is not None
    assert sorted({trial for trial, _ in rungs}) == [0, 1, 2, 3]


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path):
    corpus = corpus_file(tmp_path)
    journal = tmp_path / "study.log"
    args = ["train", "--corpus", str(corpus), "--budget", "20s", "--search", "--study-storage", str(journal)]
    processes = [charlm(*args, "--device", "cpu", "-r", f"run{i}", *FAST, cwd=tmp_path, wait=False) for i in (1, 2)]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="auto-corpus", storage=storage)
    owners = {t.user_attrs["search"] for t in study.trials}
    assert len(owners) == 2 and len(study.trials) == 10  # five each, in one study
    mine = [set(search_log.trials(search_log.read_lines(tmp_path / f"run{i}"))) for i in (1, 2)]
    assert not mine[0] & mine[1] and len(mine[0] | mine[1]) == 10
    for i in (1, 2):
        won = search_log.winner(search_log.read_lines(tmp_path / f"run{i}"))
        chosen_at = datetime.fromisoformat(won["chosen_at"])
        done_then = [t for t in study.trials if t.state.name == "COMPLETE" and t.datetime_complete <= chosen_at]
        assert won["trial"] == min(done_then, key=lambda t: t.value).number  # the study's best when it chose
    last = max((1, 2), key=lambda i: search_log.winner(search_log.read_lines(tmp_path / f"run{i}"))["chosen_at"])
    assert search_log.winner(search_log.read_lines(tmp_path / f"run{last}"))["trial"] == study.best_trial.number


@pytest.mark.slow
def test_a_winner_whose_whole_run_fits_in_the_time_left_trains_again_from_the_start(tmp_path):
    corpus = corpus_file(tmp_path, words=25_000)
    # a fifth of 40 s to 5 trials: rungs of about 1 and 2 s, shorter than the 6 epochs (about 10 s here); the
    # 6 epochs fit in the 32 s left. Both hold on a machine 4 times faster or 2.5 times slower than this one.
    few = ["--set", "search.share=0.2", "--set", "train.epochs=6", *FAST[2:]]
    args = ["train", "--corpus", str(corpus), "--budget", "40s", "--search", "--device", "cpu", "-r", "run", *few]
    done = charlm(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    won = search_log.winner(search_log.read_lines(run))
    study = optuna.load_study(study_name="auto-corpus", storage=f"sqlite:///{run / 'study.db'}")
    assert study.trials[won["trial"]].user_attrs["epochs_done"] < 6, "the trials ran all 6 epochs in their rungs"
    assert won["again"] and not won["copied"] and won["seconds"] == 0, won
    assert "trains again from the start" in done.stdout
    # one run from its first epochs to its sixth, ended by its epochs: no resume from the trial's checkpoint
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any("event" in m for m in metrics) and metrics[0]["epoch"] <= 2 and metrics[-1]["epochs_done"] == 6
    assert not any(m["stopped"] for m in metrics)


def test_a_candidate_whose_loss_turns_nan_drops_out_and_the_search_goes_on(tmp_path, monkeypatch):
    import torch

    import charlm.training.loop as loop
    from charlm.autosize import search, trials
    from charlm.autosize.auto import auto_config
    from charlm.events import SilentReporter
    from charlm.ui.search import search_rows

    real_train_trial, real_functional = trials.train_trial, loop.F

    class NanLoss:  # the training loss of trial 1 turns NaN, as an lr drawn too high makes it
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def cross_entropy(*args, **kwargs):
            return real_functional.cross_entropy(*args, **kwargs) * float("nan")

    def train_trial(path, state, frozen, seconds, stops):
        monkeypatch.setattr(loop, "F", NanLoss() if frozen.number == 1 else real_functional)
        return real_train_trial(path, state, frozen, seconds, stops)

    monkeypatch.setattr(trials, "train_trial", train_trial)
    sets = ["train.device=cpu", "search.enabled=true", *[item for item in FAST if item != "--set"]]
    config, plan = auto_config(str(corpus_file(tmp_path)), 20, sets)
    said = []
    summary = search.start(config, plan, plan.budget_s, tmp_path / "run", reporter=SilentReporter(), say=said.append)
    assert summary.best_loss < 10
    lines = search_log.read_lines(tmp_path / "run")
    dropped = search_log.trials(lines)[1]
    assert len(dropped) == 1 and dropped[0]["diverged"] and dropped[0]["val_loss"] is None
    assert "NaN/Inf loss or gradient norm at epoch 1, batch 1" in dropped[0]["error"]
    assert any(line.get("diverged") for line in said)
    study = optuna.load_study(study_name="auto-corpus", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study.trials[1].state.name == "FAIL" and search_log.winner(lines)["trial"] != 1
    # the other four met the cut as before: the best 4 // 2 of them went on
    others = {number: steps for number, steps in search_log.trials(lines).items() if number != 1}
    assert len(others) == 4 and sum(not steps[0]["pruned"] for steps in others.values()) == 2
    _, rows = search_rows(lines)
    assert rows[1][-1] == "diverged" and rows[1][6] == "-"


def test_a_search_killed_between_a_rungs_line_and_the_study_tells_the_line_on_resume(tmp_path, monkeypatch):
    from charlm.autosize import search, trials
    from charlm.autosize.auto import auto_config
    from charlm.events import SilentReporter

    class Killed(BaseException):
        pass

    real_append, real_train_trial = search_log.append, trials.train_trial
    trained = []

    def append_then_die(folder, line):  # the kill comes right after trial 2's rung-0 line is written
        real_append(folder, line)
        if (line.get("trial"), line.get("rung"), line.get("event")) == (2, 0, None):
            study = optuna.load_study(study_name="auto-corpus", storage=f"sqlite:///{folder / 'study.db'}")
            assert not study.trials[2].intermediate_values  # the line comes first: a kill here loses nothing
            raise Killed

    def train_trial(path, state, frozen, seconds, stops):
        trained.append(frozen.number)
        return real_train_trial(path, state, frozen, seconds, stops)

    monkeypatch.setattr(search_log, "append", append_then_die)
    monkeypatch.setattr(trials, "train_trial", train_trial)
    sets = ["train.device=cpu", "search.enabled=true", *[item for item in FAST if item != "--set"]]
    config, plan = auto_config(str(corpus_file(tmp_path)), 20, sets)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        search.start(config, plan, plan.budget_s, run, reporter=SilentReporter(), say=lambda line: None)
    assert trained == [0, 1, 2]
    monkeypatch.setattr(search_log, "append", real_append)
    trained.clear()
    search.resume(run, reporter=SilentReporter(), say=lambda line: None)
    assert 2 not in trained and trained[:2] == [3, 4]  # trial 2's rung was told from its line, not trained again
    lines = search_log.read_lines(run)
    rung_lines = [(line["trial"], line["rung"]) for line in lines if "event" not in line]
    assert len(rung_lines) == len(set(rung_lines)) and (2, 0) in rung_lines
    study = optuna.load_study(study_name="auto-corpus", storage=f"sqlite:///{run / 'study.db'}")
    logged = next(line for line in lines if (line["trial"], line["rung"]) == (2, 0))
    assert study.trials[2].intermediate_values[1] == logged["val_loss"]


@pytest.mark.slow
def test_a_budget_that_reads_the_text_too_few_times_trains_the_rules_choice_alone(tmp_path):
    corpus = corpus_file(tmp_path)
    args = ["train", "--corpus", str(corpus), "--budget", "3s", "--device", "cpu", "--set", "train.epochs=1"]
    declined = charlm(*args, "--search", "--set", "search.min_passes=1e9", "-r", "searched", cwd=tmp_path)
    assert declined.returncode == 0, declined.stderr
    assert "search: skipped: the budget reads the train split" in declined.stdout
    assert "search: trial" not in declined.stdout
    searched = tmp_path / "searched"
    assert not (searched / "search.json").exists() and not (searched / "trials").exists()
    assert (searched / "best.pt").exists() and (searched / "status.json").exists()
    rule = charlm(*args, "--set", "search.min_passes=1e9", "-r", "rule", cwd=tmp_path)
    assert rule.returncode == 0, rule.stderr
    # the same run as the rule's: the same config, search off
    assert (searched / "config.yaml").read_text() == (tmp_path / "rule" / "config.yaml").read_text()
    assert "enabled: false" in (searched / "config.yaml").read_text()


def test_without_optuna_the_search_says_how_to_install_it(tmp_path):
    blocked = tmp_path / "blocked" / "optuna"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed')\n")
    corpus = corpus_file(tmp_path)
    done = charlm(
        "train", "--corpus", str(corpus), "--budget", "5s", "--search", "--device", "cpu", "-r", "run",
        cwd=tmp_path, env_extra={"PYTHONPATH": f"{tmp_path / 'blocked'}{os.pathsep}{REPO}"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --search needs Optuna, which is not installed: pip install 'charlm[search]'"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--search"], "--search (search.enabled) searches around auto-sizing's choice"),
        (["--budget", "5s", "--study-storage", "x.log"], "--study-storage shares the study of a search"),
    ],
)
def test_bad_search_requests_are_one_line_errors(args, message, tmp_path):
    corpus = corpus_file(tmp_path)
    done = charlm("train", "--corpus", str(corpus), "--device", "cpu", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- an interrupted search, seen and resumed through the CLI (the trainer faked: search_helpers) ---------------


@pytest.fixture
def stopped(tmp_path, monkeypatch):
    from search_helpers import FakeTraining, start

    from charlm.files.interrupts import Interrupted

    fake = FakeTraining(monkeypatch)
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 3 else None
    with pytest.raises(Interrupted):
        start(tmp_path / "runs" / "run")
    fake.during, fake.calls[:] = None, []
    return tmp_path / "runs" / "run", fake


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "train.lr=0.1"], "--set"),
        (["--device", "cpu"], "--device"),
        (["--budget", "1h"], "--budget"),
        (["--corpus", "tinyshakespeare"], "--corpus"),
        (["--config", "configs/tiny.yaml"], "--config"),
        (["--search"], "--search"),
        (["--resume-from", "best"], "--resume-from"),
        (["--nproc", "2"], "--nproc"),
        (["--device", "cpu", "--set", "search.trials=50"], "--device, --set"),
    ],
)
def test_a_searchs_resume_refuses_flags_that_would_change_it(stopped, capsys, extra, named):
    from charlm.cli.main import main

    run, fake = stopped
    before = (run / "search.json").read_bytes()
    assert main(["train", "--resume", "-r", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.endswith(f"drop {named}") and "as search.json has it" in err, err
    assert (run / "search.json").read_bytes() == before and not fake.calls


def test_runs_and_info_show_an_interrupted_search_and_how_to_continue_it(stopped, capsys):
    from charlm.cli.main import main
    from charlm.store.run_dir import RunDir

    run, _ = stopped
    assert main(["runs", "--root", str(run.parent)]) == 0
    out = capsys.readouterr().out
    assert run.name in out and "interrupted" in out and "search: lstm" in out
    assert main(["info", "-r", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"continue it with charlm train --resume --run-dir {run}" in out and "val rung 0" in out
    assert main(["info", "-r", str(run), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "interrupted" and len(shown["search"]) == 2  # stopped in the third
    with RunDir(run).ownership.lock() as lock:  # a search working in it now
        lock.record_pid()
        assert main(["runs", "--root", str(run.parent), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["status"] == "running"
        assert main(["info", "-r", str(run)]) == 0
        assert f"searching now (charlm process {os.getpid()})" in capsys.readouterr().out


@pytest.mark.slow
def test_info_of_a_finished_search_warns_of_lines_that_are_not_its(searched, tmp_path):
    import shutil

    folder, _ = searched
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run)
    with open(run / "search.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"trial": 99, "rung": 0, "params": {}, "val_loss": 1.0, "seconds": -5}) + "\n")
    shown = charlm("info", "-r", str(run), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "skipped 1 line(s) that are not the search's" in shown.stderr and "-5.0 s" not in shown.stdout


@pytest.mark.slow
def test_the_cli_never_prints_a_storage_password_and_refuses_a_users_file_untouched(tmp_path):
    corpus = corpus_file(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = ["train", "--corpus", str(corpus), "--budget", "20s", "--search", "--device", "cpu", "-r", "run"]
    refused = charlm(*args, "--study-storage", str(notes), cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "line 1 of" in refused.stderr and notes.read_text() == "my notes\n" and not (tmp_path / "run").exists()
    url = "postgresql://me:S3cr3t-pw@127.0.0.1:9/nodb"
    failed = charlm(*args, "--study-storage", url, "--set", "search.min_passes=0", *FAST, cwd=tmp_path)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert "S3cr3t-pw" not in failed.stdout + failed.stderr and "me:***@127.0.0.1:9" in failed.stderr
    assert not (tmp_path / "run").exists()  # opened before the run folder is made
    assert all(b"S3cr3t-pw" not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
