"""The Optuna side of `--search` (search.py and trials.py drive it): the study, how candidates are drawn, reported
and told. Optuna is the optional extra charlm[search]; nothing else in charlm imports it.

    storage   RUN/study.db (SQLite), or --study-storage: an RDB URL or a journal file on a shared disk (storage.py
              checks each before it is opened); several processes, on several machines, then share one study
    sampler   TPE, seeded (a shared study: each process mixes its own id into the seed, or all draw alike)
    rungs     a rung's val loss is reported at step eta^k; trials.py cuts once the rung's candidates have all
              reported (the best 1 in eta of the study's values there go on, the rest are told PRUNED)
    failures  every call to the study goes through `failures`: a storage that breaks (a server gone, a file
              damaged meanwhile, a disk full) ends the search with one line that says so, its secrets hidden
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator

from charlm.autosize.space import Space
from charlm.autosize.storage import Storage
from charlm.errors import CharlmError, RunError, UsageError

MISSING = "--search needs Optuna, which is not installed: pip install 'charlm[search]'"


def import_optuna():
    """Optuna, or the one-line error that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise UsageError(MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would drown charlm's table
    return optuna


@contextlib.contextmanager
def failures(storage: Storage, error: type[CharlmError], fix: str) -> Iterator[None]:
    """Turn whatever the storage raises into one line naming it (without its password) and `fix`. Only
    Optuna's calls run inside, so anything but charlm's own errors (a stop signal's Interrupted) is the
    storage's: SQLAlchemy's, Optuna's, the OS's and a journal's JSON errors share no base class."""
    try:
        yield
    except CharlmError:
        raise
    except Exception as e:
        raise error(f"{storage.named} failed ({type(e).__name__}: {storage.scrub(str(e))}): {fix}") from None


def open_study(optuna, storage: Storage, *, name: str, seed: int, search_id: str, resume: str) -> Study:
    """The study (made, or loaded when another process or an earlier run made it)."""
    fix = (
        "check --study-storage"
        if storage.shared
        else "it is damaged or unreadable: the search cannot go on; restore it, or start a new run"
    )
    with failures(storage, UsageError, fix):
        if storage.journal:
            from optuna.storages.journal import JournalFileBackend

            kept = optuna.storages.JournalStorage(JournalFileBackend(storage.url))
        else:
            kept = storage.url
        study = optuna.create_study(
            storage=kept,
            study_name=name,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.NopPruner(),  # the cut is trials.py's, once a rung is complete
            load_if_exists=True,
        )
    return Study(optuna, study, storage, search_id, resume)


class Study:
    """This process's trials in the study (a shared study holds other processes' too), each call through
    `failures`: a storage that fails mid-search stops it with the command that continues it."""

    def __init__(self, optuna, study, storage: Storage, search_id: str, resume: str):
        self.optuna, self.study, self.storage, self.id = optuna, study, storage, search_id
        self.fix = f"the search stopped there; once the storage works again, continue it with: {resume}"

    def calls(self):
        return failures(self.storage, RunError, self.fix)

    def everyone(self) -> list:
        with self.calls():
            return self.study.get_trials(deepcopy=False)

    def own(self) -> list:
        """This process's trials, by number."""
        return sorted((t for t in self.everyone() if t.user_attrs.get("search") == self.id), key=lambda t: t.number)

    def draw(self, rule: dict, space: Space, folder_of):
        """One more candidate for this process (a new search's first is the rule's choice), with the folder it
        trains in (`folder_of(number)`: other processes copy a winner from there): its frozen trial."""
        with self.calls():
            if not self.own():
                self.study.enqueue_trial(rule, user_attrs={"rule": True}, skip_if_exists=True)
            trial = self.study.ask()
            trial.set_user_attr("search", self.id)
            trial.set_user_attr("folder", str(folder_of(trial.number)))
            suggest(trial, space)
            return next(t for t in self.own() if t.number == trial.number)

    def running(self, frozen) -> bool:
        return frozen.state == self.optuna.trial.TrialState.RUNNING

    def note(self, frozen, **attrs) -> None:
        with self.calls():
            trial = self.optuna.trial.Trial(self.study, frozen._trial_id)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

    def report(self, frozen, value: float, step: int) -> None:
        with self.calls():
            self.optuna.trial.Trial(self.study, frozen._trial_id).report(value, step=step)

    def complete(self, frozen, value: float) -> None:
        with self.calls():
            self.study.tell(frozen.number, value)

    def end(self, frozen, how: str) -> None:
        """Tell the trial FAIL or PRUNED."""
        with self.calls():
            self.study.tell(frozen.number, state=getattr(self.optuna.trial.TrialState, how))

    def best(self, accept):
        """The study's best finished trial whose values `accept` takes (a shared study's may be another
        process's); None before any finished."""
        complete = self.optuna.trial.TrialState.COMPLETE
        done = [
            t
            for t in self.everyone()
            if t.state == complete and math.isfinite(t.value or math.nan) and accept(t.params)
        ]
        return min(done, key=lambda t: t.value, default=None)


def process_seed(seed: int, search_id: str, shared: bool) -> int:
    """The sampler's seed: as configured for the run's own study; mixed with this process's id in a shared one."""
    return (seed ^ zlib.crc32(search_id.encode())) if shared else seed


def suggest(trial, space: Space) -> dict:
    """A candidate drawn in the space (an enqueued trial, the rule's, gets its own values back)."""
    return {
        "hidden": trial.suggest_categorical("hidden", list(space.widths)),
        "layers": trial.suggest_categorical("layers", list(space.layers)),
        "dropout": trial.suggest_float("dropout", *space.dropout),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "batch": trial.suggest_categorical("batch", list(space.batches)),
        "weight_drop": trial.suggest_float("weight_drop", *space.weight_drop),
    }


def seconds_spent(trials: list) -> float:
    """The training time the trials took, as the search's share counts it."""
    return sum(attribute(t, "seconds") for t in trials)


def attribute(trial, key: str) -> float:
    """A trial's number attribute (its seconds, its epochs done): a finite number >= 0, else 0 (a shared study's
    trials are written by other processes, or by whoever else can write to it)."""
    value = trial.user_attrs.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        return 0.0
    return float(value)
