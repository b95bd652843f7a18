"""`charlm train --corpus X --budget D --search`: candidates around the rule's choice, tried briefly on this
corpus, the bad ones dropped early, the rest of the budget to the winner.

    rule.plan ─► space.neighbourhood ─► Optuna (study.py): the rule's own choice first, then search.trials - 1 drawn
    rung 0: every candidate trains r0 seconds ─► val losses reported ─► the cut: the best 1 in eta go on
    rung 1: the kept ones continue (from their last.pt) to r0 x eta seconds ─► ... ─► the last rung
    winner: the study's best trial, its run folder copied into RUN, continues there until the budget ends

Each trial is a plain charlm run in RUN/trials/tNNNN (training.setup.train with a time budget per rung, resumed
exactly for the next one). Seconds are training time, as a budget counts them (evals and set-up excluded);
search.share of the budget goes to the trials. Rungs are trained rung by rung (all candidates of a rung before
the next), and a rung's cut waits for all of its values (synchronous successive halving). A rung ends with the
lr annealed (its cosine runs to the rung's end); the next rung's longer budget lifts it again (a warm restart, as
SGDR's).

Ctrl-C saves the running trial's checkpoint; `charlm train --resume -r RUN` goes on from there: finished trials
are kept, the interrupted one continues from its last.pt (one killed before its first checkpoint starts again).
"""

from __future__ import annotations

import signal
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from charlm.autosize import space as neighbourhood
from charlm.autosize import study as studies
from charlm.autosize.rule import Plan
from charlm.coerce import build
from charlm.config import Config, apply_overrides, from_dict
from charlm.errors import ConfigError, Diverged, RunError, UsageError
from charlm.events import Reporter, RunSummary, SilentReporter
from charlm.files import fsio
from charlm.files.interrupts import Interrupted
from charlm.store import search_log
from charlm.store.layout import BEST, CONFIG, LAST, METRICS, TRIALS, VOCAB
from charlm.store.run_dir import RunDir

COPIED = (CONFIG, VOCAB, METRICS, BEST, LAST)  # the winner's run files, copied into RUN to continue there


@dataclass
class SearchState:
    """search.json: what a resumed search needs (the budget, the rungs, the rule's config and the space)."""

    id: str  # this process's search; its trials carry it (a shared study holds other processes' trials too)
    budget_s: float
    search_seconds: float
    rung_seconds: list[float]
    reduction: int
    trials: int
    storage: str
    shared: bool  # --study-storage: other processes may share the study
    study: str
    seed: int
    tied: bool
    space: dict
    rule: dict
    base: dict  # the rule's config (search off): each trial's is it with the candidate's values on top

    def the_space(self) -> neighbourhood.Space:
        return neighbourhood.Space(**{k: tuple(v) for k, v in self.space.items()})

    def config(self, params: dict, *, name: str, budget: float, patience: int = 0) -> Config:
        """A candidate's config: the rule's with its values, a time budget of `budget` training seconds, the
        pruner in place of early stopping (patience 0) while it is a trial."""
        items = [*neighbourhood.overrides(params, self.tied), f"name={name}", f"train.time_budget={budget:.3f}s"]
        raw = from_dict(self.base).to_dict()
        apply_overrides(raw, [*items, f"train.patience={patience}"])
        return from_dict(raw)


def declines(config: Config, chosen: Plan) -> bool:
    """Whether `--search` trains the rule's choice alone: the budget reads the train split fewer than
    search.min_passes times (measured: PTB-char at 4 minutes, read fewer than twice, ended 2.1% worse with the
    trials' share of its time gone)."""
    return chosen.epochs < config.search.min_passes


def start(
    config: Config, chosen: Plan, budget_s: float, run_dir: Path | None, *, reporter: Reporter, say
) -> RunSummary:
    """A new search: check what it needs, write RUN's plan, run the trials, then the winner (its summary). A
    budget that reads the train split fewer than search.min_passes times trains the rule's choice alone."""
    optuna = studies.import_optuna()  # before anything is written
    s = config.search
    base = replace(config, search=replace(s, enabled=False))
    if declines(config, chosen):
        from charlm.training.setup import train

        say({"event": "declined", "passes": chosen.epochs, "min_passes": s.min_passes})
        return train(base, run_dir, reporter)
    folder = RunDir(Path(run_dir) if run_dir is not None else RunDir.new(config.name).path)
    folder.ownership.check_new()
    search_seconds = s.share * budget_s
    state = SearchState(
        id=uuid.uuid4().hex,
        budget_s=budget_s,
        search_seconds=search_seconds,
        rung_seconds=neighbourhood.rung_seconds(search_seconds, trials=s.trials, rungs=s.rungs, reduction=s.reduction),
        reduction=s.reduction,
        trials=s.trials,
        storage=studies.storage_url(s.storage, folder.path),
        shared=s.storage is not None,
        study=s.study or config.name,
        seed=s.seed,
        tied=chosen.shape.embed is None,
        space=asdict(neighbourhood.neighbourhood(chosen)),
        rule=neighbourhood.rule_params(chosen),
        base=base.to_dict(),
    )
    with folder.ownership.lock():
        folder.ownership.prepare_new()
        folder.ownership.mark()
        search_log.write_state(folder.path, asdict(state))
    return run(optuna, folder, state, reporter=reporter, say=say)


def resume(run_dir: Path, *, reporter: Reporter, say) -> RunSummary:
    """`charlm train --resume -r RUN` of a searched run: the search where it stopped, or its winner's run."""
    folder = RunDir(Path(run_dir))
    raw = search_log.read_state(folder.path)
    try:
        state = build(SearchState, raw, prefix=f"{folder / 'search.json'}: ")
        state.the_space()
    except (ConfigError, TypeError) as e:
        raise UsageError(f"{folder / 'search.json'} is damaged ({e}): the search cannot resume") from None
    return run(studies.import_optuna(), folder, state, reporter=reporter, say=say)


def run(optuna, folder: RunDir, state: SearchState, *, reporter: Reporter, say) -> RunSummary:
    done = search_log.winner(search_log.read_lines(folder.path))
    if done is None:  # a chosen winner's run resumes without the study (a shared one may be out of reach)
        seed = studies.process_seed(state.seed, state.id, state.shared)
        study = studies.open_study(optuna, state.storage, name=state.study, seed=seed)
        with folder.ownership.lock():  # one search per run folder; the winner's run takes the lock itself
            Trials(optuna, study, folder, state, say).run()
            done = choose_winner(study, folder, state, say)
    return continue_winner(folder, state, done, reporter)


class Trials:
    """This process's trials, trained rung by rung (the rung loop resumes where search.jsonl and the study stand)."""

    def __init__(self, optuna, study, folder: RunDir, state: SearchState, say):
        self.optuna, self.study, self.folder, self.state, self.say = optuna, study, folder, state, say
        self.last = len(state.rung_seconds) - 1
        lines = search_log.read_lines(folder.path)
        self.logged = {(line["trial"], line["rung"]): line for line in lines if line.get("event") is None}

    def own(self) -> list:
        return studies.own_trials(self.study, self.state.id)

    def run(self) -> None:
        if not self.own():  # a new search: the rule's choice is its first candidate
            self.study.enqueue_trial(self.state.rule, user_attrs={"rule": True}, skip_if_exists=True)
        for _ in range(self.state.trials - len(self.own())):
            trial = self.study.ask()
            trial.set_user_attr("search", self.state.id)
            trial.set_user_attr("folder", str((self.folder.path / TRIALS / f"t{trial.number:04d}").resolve()))
            studies.suggest(trial, self.state.the_space())
        running = self.optuna.trial.TrialState.RUNNING
        for rung, seconds in enumerate(self.state.rung_seconds):
            for frozen in sorted(self.own(), key=lambda t: t.number):
                if frozen.state != running or len(frozen.intermediate_values) > rung:
                    continue
                if self.spent() >= self.state.search_seconds:
                    break
                self.train_rung(self.optuna.trial.Trial(self.study, frozen._trial_id), frozen, rung, seconds)
            if rung < self.last:
                self.cut(rung)
        for frozen in self.own():  # out of search time: each candidate stands at its last rung (none: it failed)
            if frozen.state == running and frozen.intermediate_values:
                self.study.tell(frozen.number, frozen.intermediate_values[max(frozen.intermediate_values)])
            elif frozen.state == running:
                self.study.tell(frozen.number, state=self.optuna.trial.TrialState.FAIL)

    def cut(self, rung: int) -> None:
        """Once every candidate of the rung has reported: the best 1 in `reduction` of the study's values at this
        rung go on, this process's others are pruned. (Optuna's SuccessiveHalvingPruner decides as each trial
        reports, against those that reported before it: trained rung by rung, the first candidates, the rule's
        among them, faced almost no rivals, and on a corpus where the rule's led at the first rung it cut all
        others.) In a shared study the values are every process's so far."""
        step = self.state.reduction**rung
        trials = self.study.get_trials(deepcopy=False)
        kept = neighbourhood.kept(
            {t.number: t.intermediate_values[step] for t in trials if step in t.intermediate_values},
            self.state.reduction,
        )
        for frozen in sorted(self.own(), key=lambda t: t.number):
            if frozen.state != self.optuna.trial.TrialState.RUNNING or step not in frozen.intermediate_values:
                continue
            if max(frozen.intermediate_values) > step:
                # kept by this cut before a resume, and trained on since: a shared study's values that came
                # in meanwhile do not undo it
                continue
            if frozen.number in kept and frozen.user_attrs.get("finished"):
                self.study.tell(frozen.number, frozen.intermediate_values[step])
            elif frozen.number not in kept:
                # the line first: a cut interrupted between the two writes it again on resume (folded), never not
                line = record(
                    frozen,
                    rung,
                    self.state.rung_seconds[rung],
                    loss=frozen.intermediate_values[step],
                    seconds=float(frozen.user_attrs.get("seconds", 0.0)),
                    event="pruned",
                )
                search_log.append(self.folder.path, line)
                self.study.tell(frozen.number, state=self.optuna.trial.TrialState.PRUNED)
                self.say(line)

    def spent(self) -> float:
        return studies.seconds_spent(self.own())

    def train_rung(self, trial, frozen, rung: int, seconds: float) -> None:
        """A trial's rung: trained and its line written, then told to the study (a line written before a kill
        that came between the two is told without training the rung again)."""
        line = self.logged.get((frozen.number, rung))
        if line is None:
            line = self.train(trial, frozen, rung, seconds)
            search_log.append(self.folder.path, line)
            self.say(line)
        if line.get("diverged"):
            # a candidate whose loss became NaN/Inf (an lr drawn too high) drops out; the others go on
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        trial.report(line["val_loss"], step=self.state.reduction**rung)
        if rung == self.last:
            self.study.tell(trial, line["val_loss"])

    def train(self, trial, frozen, rung: int, seconds: float) -> dict:
        """Train the rung: its line; the trial's time, its reads and whether it would train on as attributes."""
        started = time.monotonic()
        try:
            summary = train_trial(Path(frozen.user_attrs["folder"]), self.state, frozen, seconds, self.folder.path)
        except Diverged as e:
            before = float(frozen.user_attrs.get("seconds", 0.0))
            trial.set_user_attr("seconds", before + time.monotonic() - started)
            return {**record(frozen, rung, seconds, loss=None, seconds=before), "diverged": True, "error": str(e)}
        if summary.monitored != "val_loss":
            raise UsageError("--search chooses on the val split, and this corpus has none: set data.val_fraction")
        loss = summary.final.get("val_loss", summary.best_loss)  # best.pt on the whole split when evals subsample
        trial.set_user_attr("seconds", summary.train_seconds)
        trial.set_user_attr("epochs_done", float(summary.last.get("epochs_done", summary.epochs_run)))
        if rung < self.last and summary.stopped != "time_budget":
            # its epochs ended before the rung's time (a small corpus), or it stopped early: it would train no
            # further, so if the cut keeps it, it stands at this rung
            trial.set_user_attr("finished", True)
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


def train_trial(path: Path, state: SearchState, frozen, seconds: float, run_folder: Path) -> RunSummary:
    """One rung of a trial: a new run, or its run resumed from last.pt with the longer budget."""
    from charlm.training.setup import train

    config = state.config(frozen.params, name=f"{state.base['name'][:90]}-t{frozen.number:04d}", budget=seconds)
    resumed = (path / LAST).exists()
    if not resumed and path.exists():
        import shutil

        shutil.rmtree(path)  # a trial killed before its first checkpoint: it starts again
    try:
        return train(config, path, SilentReporter(), resume=resumed)
    except Interrupted as e:
        name = signal.Signals(e.exit_code - 128).name
        raise Interrupted(
            f"{name}: trial {frozen.number} saved its checkpoint; continue the search with: "
            f"charlm train --resume --run-dir {run_folder}",
            e.exit_code - 128,
        ) from None


def choose_winner(study, folder: RunDir, state: SearchState, say) -> dict:
    """The study's best trial (a shared study's may be another process's), recorded as search.jsonl's last line;
    its run folder is copied into RUN when this machine can read it."""
    try:
        best = study.best_trial
    except ValueError:
        raise RunError(f"the search in {folder} finished no trial: resume it with a longer --budget") from None
    spent = studies.seconds_spent(studies.own_trials(study, state.id))
    left = max(state.budget_s - spent, 0.0)
    again = neighbourhood.whole_run_fits(
        seconds=float(best.user_attrs.get("seconds", 0.0)),
        epochs_done=float(best.user_attrs.get("epochs_done", 0.0)),
        epochs=int(state.base["train"]["epochs"]),
        left=left,
    )
    source = Path(best.user_attrs.get("folder", ""))
    copied = not again and all((source / name).exists() for name in (CONFIG, VOCAB, LAST))
    if copied:
        for name in COPIED:
            if (source / name).exists():
                fsio.atomic_write_bytes(folder / name, (source / name).read_bytes())
    before = float(best.user_attrs.get("seconds", 0.0)) if copied else 0.0
    record = {
        "event": "winner",
        "trial": best.number,
        "params": best.params,
        "val_loss": best.value,
        "seconds": before,
        "search_seconds": spent,
        "budget": before + left,
        "copied": copied,
        "again": again,  # trained again from the start: its whole run fits in the time left
        "chosen_at": datetime.now().isoformat(),  # a shared study's best can change after this process chose
    }
    search_log.append(folder.path, record)
    say(record)
    return record


def continue_winner(folder: RunDir, state: SearchState, winner: dict, reporter: Reporter) -> RunSummary:
    """The winner trains on in RUN (from its copied last.pt; from scratch when its folder was out of reach or
    its whole run fits in the time left) until the budget ends, with the rule's early stopping back."""
    from charlm.training.setup import train

    config = state.config(
        winner["params"],
        name=state.base["name"],
        budget=max(float(winner["budget"]), 1.0),
        patience=int(state.base["train"]["patience"]),
    )
    return train(config, folder.path, reporter, resume=(folder / LAST).exists())
