"""Stop signals during a search (autosize/stops.py): wherever one lands (a trial's final eval, where the trainer
only records it; between trials; in a cut; in a trial's set-up) the search stops with 128 + the signal and the
command that continues it, and the resume trains each rung once. Signals are sent from the test side, inside a
trainer faked by search_helpers (one real trainer at the end)."""

from __future__ import annotations

import os
import signal

import pytest
from search_helpers import FakeTraining, resume, start

from charlm.files.interrupts import Interrupted
from charlm.store import search_log

optuna = pytest.importorskip("optuna")


def in_final_eval(signum: int) -> None:
    """What a trainer does with a signal in its final eval: its StopSignals records it, and the run ends."""
    from charlm.training.stop import StopSignals

    with StopSignals() as signals:
        os.kill(os.getpid(), signum)
        assert signals.signum == signum  # the trainer took it (and would drop it)


def rung_lines(run) -> list[tuple[int, int]]:
    return [(line["trial"], line["rung"]) for line in search_log.read_lines(run) if "event" not in line]


def stopped(run, err: Interrupted, signum: int) -> None:
    assert err.exit_code == 128 + signum
    assert str(err).startswith(signal.Signals(signum).name) and str(err).count("\n") == 0
    assert str(err).endswith(f"continue it with: charlm train --resume --run-dir {run}")


def finishes_on_resume(run, fake: FakeTraining) -> None:
    before = rung_lines(run)
    fake.during, fake.calls[:] = None, []
    resume(run)
    after = rung_lines(run)
    assert after[: len(before)] == before and len(after) == len(set(after)) == 7  # 5 at rung 0, 2 at rung 1
    assert search_log.winner(search_log.read_lines(run)) is not None


# the rule's trial, mid rung 0, the last of rung 0, the last of all (each signal at least once)
@pytest.mark.parametrize("name, trial", [("SIGINT", 0), ("SIGTERM", 2), ("SIGHUP", 4), ("SIGTERM", 6)])
def test_a_signal_in_a_trials_final_eval_stops_the_search_after_that_rung(tmp_path, monkeypatch, name, trial):
    signum = getattr(signal, name, None) or pytest.skip(f"no {name} here")
    fake, run = FakeTraining(monkeypatch), tmp_path / "run"
    fake.during = lambda path, config: in_final_eval(signum) if len(fake.calls) == trial + 1 else None
    with pytest.raises(Interrupted) as stop:
        start(run)
    stopped(run, stop.value, signum)
    assert len(rung_lines(run)) == trial + 1  # the rung it finished is written down, and nothing after it
    assert search_log.winner(search_log.read_lines(run)) is None
    finishes_on_resume(run, fake)


@pytest.mark.parametrize(
    "name, where",
    [("SIGINT", "set-up"), ("SIGTERM", "set-up"), ("SIGINT", "between"), ("SIGTERM", "between")]
    + [("SIGHUP", "cut"), ("SIGINT", "winner-line")],
)
def test_a_signal_outside_a_trainer_stops_the_search_at_once(tmp_path, monkeypatch, name, where):
    """A trial's set-up (before its trainer's handler), between two trials (the line written, the study not
    told yet), in the cut, and as the winner is recorded."""
    signum = getattr(signal, name, None) or pytest.skip(f"no {name} here")
    fake, run = FakeTraining(monkeypatch), tmp_path / "run"
    real_append = search_log.append
    event = {"set-up": "-", "between": None, "cut": "pruned", "winner-line": "winner"}[where]

    def append(folder, line):
        real_append(folder, line)
        if line.get("event") == event and (event is not None or line["trial"] == 2):
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(search_log, "append", append)
    if where == "set-up":
        fake.during = lambda path, config: os.kill(os.getpid(), signum) if len(fake.calls) == 3 else None
    with pytest.raises(Interrupted) as stop:
        start(run)
    stopped(run, stop.value, signum)
    monkeypatch.setattr(search_log, "append", real_append)
    finishes_on_resume(run, fake)


def test_through_the_cli_a_stopped_search_exits_with_the_signal_and_the_command(tmp_path, monkeypatch, capsys):
    from charlm.cli.main import main

    fake, run = FakeTraining(monkeypatch), tmp_path / "run"
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 2 else None
    with pytest.raises(Interrupted):
        start(run)
    fake.during = lambda path, config: in_final_eval(signal.SIGTERM) if len(fake.calls) == 1 else None
    fake.calls.clear()
    assert main(["train", "--resume", "-r", str(run)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"interrupted: SIGTERM: the search stopped after trial 1's rung 0; continue it with: "
        f"charlm train --resume --run-dir {run}"
    ]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
    assert signal.set_wakeup_fd(-1) == -1


def test_a_real_trials_final_eval_stopped_by_sigterm_stops_the_search(tmp_path, monkeypatch):
    from search_helpers import SMALL, plan_and_config

    from charlm.autosize import search
    from charlm.events import SilentReporter
    from charlm.training.evals import Evals

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat and the dog ran far away. " * 300)
    real_final, finals = Evals.final, []

    def final(self, *args, **kwargs):
        finals.append(1)
        if len(finals) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # lands in trial 1's final eval
        return real_final(self, *args, **kwargs)

    monkeypatch.setattr(Evals, "final", final)
    config, chosen = plan_and_config(
        [*SMALL, f"data.corpus={corpus}", "train.epochs=1", "search.min_passes=0"], budget=20
    )
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as stop:
        search.start(config, chosen, chosen.budget_s, run, reporter=SilentReporter(), say=lambda line: None)
    stopped(run, stop.value, signal.SIGTERM)
    # trial 1 stopped in its final eval (its trainer acts on the signal there), or it finished its rung and the
    # search stopped right after it (a trainer that only records a signal there): never trial 2
    assert rung_lines(run) in ([(0, 0)], [(0, 0), (1, 0)])
