"""A search's trials, trained rung by rung (search.py runs them): each a plain charlm run in RUN/trials/tNNNN.

A trial's folder is always RUN/trials/tNNNN of the run folder being searched, made from its number: never a path
the study or a file says (those can be edited, or written by whoever shares a journal), so a search writes only
under its own run folder, and a copied run folder trains its own trials. The search deletes nothing: a trial killed
before its first checkpoint is started again in its folder, which the trainer's ownership checks (a folder holding
anything charlm did not write is refused, untouched).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from charlm.autosize import space as neighbourhood
from charlm.autosize import study as studies
from charlm.autosize.search_state import SearchState
from charlm.autosize.stops import Stops
from charlm.errors import Diverged, UsageError
from charlm.events import RunSummary, SilentReporter
from charlm.files.interrupts import Interrupted
from charlm.store import search_log
from charlm.store.layout import BEST, LAST, TRIALS
from charlm.store.run_dir import RunDir


def trial_folder(run: RunDir, number: int) -> Path:
    """Where trial `number` of the search in `run` trains: RUN/trials/tNNNN, a real folder inside RUN (a link
    there would send the trials, and what a resume restarts, elsewhere)."""
    trials = run.path / TRIALS
    for path in (trials, trials / f"t{number:04d}"):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise UsageError(f"{path} is not the search's own folder (a link or a file): move it out of {run}")
    return trials / f"t{number:04d}"


class Trials:
    """This process's trials, trained rung by rung (the rung loop resumes where search.jsonl and the study stand)."""

    def __init__(self, study: studies.Study, folder: RunDir, state: SearchState, stops: Stops, say):
        self.study, self.folder, self.state, self.stops, self.say = study, folder, state, stops, say
        self.last = len(state.rung_seconds) - 1
        self.logged = {}
        for line in search_log.read_lines(folder.path):
            if line.get("event") is None:
                self.logged[(line["trial"], line["rung"])] = line

    def run(self) -> None:
        for rung, seconds in enumerate(self.state.rung_seconds):
            for frozen in self.candidates(rung):
                self.train_rung(frozen, rung, seconds)
                self.stops.check(f" after trial {frozen.number}'s rung {rung}")
            if rung < self.last:
                self.cut(rung)
        for frozen in self.study.own():  # out of search time: each candidate stands at its last rung (none: it failed)
            if self.study.running(frozen) and frozen.intermediate_values:
                self.study.complete(frozen, frozen.intermediate_values[max(frozen.intermediate_values)])
            elif self.study.running(frozen):
                self.study.end(frozen, "FAIL")

    def candidates(self, rung: int) -> Iterator:
        """The rung's candidates left to train, while the search has time: this process's running trials that
        have not reached it, then at rung 0 new ones, drawn one at a time up to search.trials (as they train, not
        all first: each draw writes the study, a fraction of a second, and a stop leaves only those drawn)."""
        for frozen in self.study.own():
            if self.spent() >= self.state.search_seconds:
                return
            if self.study.running(frozen) and len(frozen.intermediate_values) <= rung:
                yield frozen
        while rung == 0 and len(self.study.own()) < self.state.trials and self.spent() < self.state.search_seconds:
            yield self.study.draw(self.state.rule, self.state.the_space(), lambda n: trial_folder(self.folder, n))

    def cut(self, rung: int) -> None:
        """Once every candidate of the rung has reported: the best 1 in `reduction` of the study's values at this
        rung go on, this process's others are pruned. (Optuna's SuccessiveHalvingPruner decides as each trial
        reports, against those that reported before it: trained rung by rung, the first candidates, the rule's
        among them, faced almost no rivals, and on a corpus where the rule's led at the first rung it cut all
        others.) In a shared study the values are every process's so far."""
        step = self.state.reduction**rung
        kept = neighbourhood.kept(
            {t.number: t.intermediate_values[step] for t in self.study.everyone() if step in t.intermediate_values},
            self.state.reduction,
        )
        for frozen in self.study.own():
            if not self.study.running(frozen) or step not in frozen.intermediate_values:
                continue
            if max(frozen.intermediate_values) > step:
                # kept by this cut before a resume, and trained on since: a shared study's values that came
                # in meanwhile do not undo it
                continue
            if frozen.number in kept and frozen.user_attrs.get("finished"):
                self.study.complete(frozen, frozen.intermediate_values[step])
            elif frozen.number not in kept:
                # the line first: a cut interrupted between the two writes it again on resume (folded), never not
                seconds = studies.attribute(frozen, "seconds")
                loss = frozen.intermediate_values[step]
                line = record(frozen, rung, self.state.rung_seconds[rung], loss=loss, seconds=seconds, event="pruned")
                search_log.append(self.folder.path, line)
                self.study.end(frozen, "PRUNED")
                self.say(line)

    def spent(self) -> float:
        return studies.seconds_spent(self.study.own())

    def train_rung(self, frozen, rung: int, seconds: float) -> None:
        """A trial's rung: trained and its line written, then told to the study (a line written before a kill
        that came between the two is told without training the rung again)."""
        line = self.logged.get((frozen.number, rung))
        if line is None or line["params"] != frozen.params:
            line = self.train(frozen, rung, seconds)
            search_log.append(self.folder.path, line)
            self.say(line)
        if line.get("diverged"):
            # a candidate whose loss became NaN/Inf (an lr drawn too high) drops out; the others go on
            self.study.end(frozen, "FAIL")
            return
        self.study.report(frozen, line["val_loss"], step=self.state.reduction**rung)
        if rung == self.last:
            self.study.complete(frozen, line["val_loss"])

    def train(self, frozen, rung: int, seconds: float) -> dict:
        """Train the rung: its line; the trial's time, its reads and whether it would train on as attributes."""
        started = time.monotonic()
        path = trial_folder(self.folder, frozen.number)
        try:
            summary = train_trial(path, self.state, frozen, seconds, self.stops)
        except Diverged as e:
            before = studies.attribute(frozen, "seconds")
            self.study.note(frozen, seconds=before + time.monotonic() - started)
            return {**record(frozen, rung, seconds, loss=None, seconds=before), "diverged": True, "error": str(e)}
        if summary.monitored != "val_loss":
            raise UsageError("--search chooses on the val split, and this corpus has none: set data.val_fraction")
        loss = summary.final.get("val_loss", summary.best_loss)  # best.pt on the whole split when evals subsample
        epochs = float(summary.last.get("epochs_done", summary.epochs_run))
        self.study.note(frozen, seconds=summary.train_seconds, epochs_done=epochs)
        if rung < self.last and summary.stopped != "time_budget":
            # its epochs ended before the rung's time (a small corpus), or it stopped early: it would train no
            # further, so if the cut keeps it, it stands at this rung
            self.study.note(frozen, finished=True)
        return record(frozen, rung, seconds, loss=loss, seconds=summary.train_seconds)


def record(
    frozen, rung: int, rung_seconds: float, *, loss: float | None, seconds: float, event: str | None = None
) -> dict:
    """search.jsonl's line of a trial at a rung: its values, val loss (None: it diverged) and training time; the
    cut's line of a trial pruned at the rung has the event "pruned" (search_log.trials folds it into the rung's
    line)."""
    line = {
        "trial": frozen.number,
        "rung": rung,
        "params": frozen.params,
        "val_loss": loss,
        "seconds": seconds,
        "rung_seconds": rung_seconds,
        "pruned": event == "pruned",
        "rule": bool(frozen.user_attrs.get("rule", False)),
    }
    return line if event is None else {"event": event, **line}


def train_trial(path: Path, state: SearchState, frozen, seconds: float, stops: Stops) -> RunSummary:
    """One rung of a trial: a new run, or its run resumed (from last.pt, or from best.pt when it was killed
    between the two) with the longer budget."""
    from charlm.training.setup import train

    config = state.config(frozen.params, name=f"{state.base['name'][:90]}-t{frozen.number:04d}", budget=seconds)
    resume_from = "last" if (path / LAST).exists() else "best" if (path / BEST).exists() else None
    try:
        return train(config, path, SilentReporter(), resume=resume_from is not None, resume_from=resume_from or "last")
    except Interrupted as e:
        raise stops.error(e.exit_code - 128, f" in trial {frozen.number}") from None
