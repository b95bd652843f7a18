"""`charlm train --corpus X --budget D --search`: candidates around the rule's choice, tried briefly on this
corpus, the bad ones dropped early, the rest of the budget to the winner.

    rule.plan ─► space.neighbourhood ─► Optuna (study.py): the rule's own choice first, then search.trials - 1 drawn
    rung 0: every candidate trains r0 seconds ─► val losses reported ─► the cut: the best 1 in eta go on
    rung 1: the kept ones continue (from their last.pt) to r0 x eta seconds ─► ... ─► the last rung
    winner: the study's best trial, its run folder copied into RUN, continues there until the budget ends

Each trial is a plain charlm run in RUN/trials/tNNNN (trials.py: training.setup.train with a time budget per rung,
resumed exactly for the next one). Seconds are training time, as a budget counts them (evals and set-up
excluded); search.share of the budget goes to the trials. Rungs are trained rung by rung (all candidates of a rung
before the next), and a rung's cut waits for all of its values (synchronous successive halving). A rung ends with
the lr annealed (its cosine runs to the rung's end); the next rung's longer budget lifts it again (a warm
restart, as SGDR's).

RUN is owned like any run folder, and more: the search holds its lock from its first write (search.json) to its
winner's end, lending it to the winner's trainer (store/run_lock.py), so a second search or run there is refused
and never writes; a folder that holds a search is continued with --resume, never started again. A stop signal
anywhere ends the search with the command that continues it (stops.py); `charlm train --resume -r RUN` goes on
from there: finished trials are kept, the interrupted one continues from its last.pt.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from charlm.autosize import search_state
from charlm.autosize import space as neighbourhood
from charlm.autosize import storage as storages
from charlm.autosize import study as studies
from charlm.autosize.rule import Plan
from charlm.autosize.search_state import SearchState
from charlm.autosize.stops import Stops
from charlm.autosize.trials import Trials, trial_folder
from charlm.config import Config
from charlm.errors import RunError, UsageError
from charlm.events import Reporter, RunSummary
from charlm.files import fsio
from charlm.store import run_lock, search_log
from charlm.store.layout import BEST, CONFIG, LAST, METRICS, SEARCH_STATE, TRIALS, VOCAB
from charlm.store.run_dir import RunDir

COPIED = (CONFIG, VOCAB, METRICS, BEST, LAST)  # the winner's run files, copied into RUN to continue there


def declines(config: Config, chosen: Plan) -> bool:
    """Whether `--search` trains the rule's choice alone: the budget reads the train split fewer than
    search.min_passes times (measured: PTB-char at 4 minutes, read fewer than twice, ended 2.1% worse with the
    trials' share of its time gone)."""
    return chosen.epochs < config.search.min_passes


def start(
    config: Config, chosen: Plan, budget_s: float, run_dir: Path | None, *, reporter: Reporter, say
) -> RunSummary:
    """A new search: check what it needs (Optuna, the storage, the settings' bounds), write RUN's plan under
    RUN's lock, run the trials, then the winner (its summary). A budget that reads the train split fewer than
    search.min_passes times trains the rule's choice alone."""
    optuna = studies.import_optuna()  # before anything is written
    shared = storages.given(config.search.storage) if config.search.storage is not None else None
    if declines(config, chosen):
        from charlm.training.setup import train

        say({"event": "declined", "passes": chosen.epochs, "min_passes": config.search.min_passes})
        return train(search_state.base_config(config), run_dir, reporter)
    state = search_state.new(config, chosen, budget_s, shared)
    folder = RunDir(Path(run_dir) if run_dir is not None else RunDir.new(config.name).path)
    refuse_search_there(folder)
    folder.ownership.check_new()  # before the lock: a refused folder is not touched
    # a shared study is opened before RUN is made: one that cannot be opened leaves nothing behind
    study = open_study(optuna, shared, state, folder) if shared is not None else None
    with folder.ownership.lock() as held:
        refuse_search_there(folder)  # again, holding the lock: a search started meanwhile is not overwritten
        folder.ownership.prepare_new()
        held.record_pid()
        folder.ownership.mark()
        storage = shared or storages.own(folder.path)
        with Stops(resume_command(folder, storage)) as stops:
            study = study or open_study(optuna, storage, state, folder)
            search_log.write_state(folder.path, asdict(state))
            return run(study, folder, state, stops, reporter=reporter, say=say)


def resume(run_dir: Path, *, reporter: Reporter, say, storage: str | None = None) -> RunSummary:
    """`charlm train --resume -r RUN` of a searched run: the search where it stopped, or its winner's run.
    `storage`: --study-storage again, for a shared storage whose password search.json does not keep."""
    folder = RunDir(Path(run_dir))
    with folder.ownership.lock() as held:
        held.record_pid()
        state = search_state.load(folder.path)
        done = search_log.winner(search_log.read_lines(folder.path))
        if done is not None and not neighbourhood.possible(done["params"]):
            done = None  # a shared study's winner no search could draw: chosen again
        if done is not None:  # a chosen winner's run resumes without the study (a shared one may be out of reach)
            with Stops(resume_command(folder, None)):
                return continue_winner(folder, state, done, reporter)
        kept = storages.kept(state.storage, state.shared, folder.path, storage)
        with Stops(resume_command(folder, kept)) as stops:
            study = open_study(studies.import_optuna(), kept, state, folder)
            refuse_copy(study, folder, state)
            return run(study, folder, state, stops, reporter=reporter, say=say)


def run(study: studies.Study, folder: RunDir, state: SearchState, stops: Stops, *, reporter, say) -> RunSummary:
    Trials(study, folder, state, stops, say).run()
    stops.check(" after its last trial")
    done = choose_winner(study, folder, state, say)
    return continue_winner(folder, state, done, reporter)


def open_study(optuna, storage: storages.Storage, state: SearchState, folder: RunDir) -> studies.Study:
    seed = studies.process_seed(state.seed, state.id, state.shared)
    command = resume_command(folder, storage)
    return studies.open_study(optuna, storage, name=state.study, seed=seed, search_id=state.id, resume=command)


def resume_command(folder: RunDir, storage: storages.Storage | None) -> str:
    """The command that continues the search in `folder` (with the storage's URL again when it has a password)."""
    again = f" --study-storage URL (its URL {storage.shown}, password included)" if storage and storage.secret else ""
    return f"charlm train --resume --run-dir {folder}{again}"


def refuse_search_there(folder: RunDir) -> None:
    """A folder that holds a search is continued, never started again (its trials would be orphaned)."""
    if search_log.is_searched(folder.path):
        raise UsageError(
            f"run folder {folder} already holds a search: continue it with charlm train --resume --run-dir "
            f"{folder}, or pass a new --run-dir"
        )


def refuse_copy(study: studies.Study, folder: RunDir, state: SearchState) -> None:
    """A copy of a run folder whose search shares its study would train the original's trials a second time:
    its trials' folders (the study keeps them) are the original's, which still holds this search."""
    if not state.shared:
        return  # the run's own study: a copy has its own study.db and trials
    here = (folder.path / TRIALS).absolute()
    for frozen in study.own():
        there = Path(str(frozen.user_attrs.get("folder", ""))).parent
        if there == here or there.name != TRIALS:
            continue
        try:
            same = search_log.read_state(there.parent).get("id") == state.id
        except UsageError:
            same = False
        if same:
            raise UsageError(
                f"run folder {folder} is a copy of {there.parent}, whose search shares the study in "
                f"{state.storage}: resume {there.parent} instead (a copy would train its trials again)"
            )
        return


def winner_folder(best, folder: RunDir, state: SearchState) -> Path | None:
    """Where the winner's run files are: RUN/trials/tNNNN for this process's trial; for another process's, the
    folder the study names, only when it is a trial folder of that process's search (RUN'/trials/tNNNN beside
    a search.json of the same id), never any other path the study says."""
    if best.user_attrs.get("search") == state.id:
        return trial_folder(folder, best.number)
    source = Path(str(best.user_attrs.get("folder", "")))
    if source.name != f"t{best.number:04d}" or source.parent.name != TRIALS or not source.is_absolute():
        return None
    try:
        owner = search_log.read_state(source.parent.parent).get("id")
    except UsageError:
        return None
    return (
        source if owner == best.user_attrs.get("search") and (source.parent.parent / SEARCH_STATE).is_file() else None
    )


def choose_winner(study: studies.Study, folder: RunDir, state: SearchState, say) -> dict:
    """The study's best trial among those a search could draw (a shared study's may be another process's),
    recorded as search.jsonl's last line; its run folder is copied into RUN when this machine can read it."""
    best = study.best(neighbourhood.possible)
    if best is None:
        raise RunError(f"the search in {folder} finished no trial: resume it with a longer --budget")
    spent = studies.seconds_spent(study.own())
    left = max(state.budget_s - spent, 0.0)
    again = neighbourhood.whole_run_fits(
        seconds=studies.attribute(best, "seconds"),
        epochs_done=studies.attribute(best, "epochs_done"),
        epochs=int(state.base["train"]["epochs"]),
        left=left,
    )
    source = None if again else winner_folder(best, folder, state)
    copied = source is not None and all((source / name).is_file() for name in (CONFIG, VOCAB, LAST))
    if copied:
        for name in COPIED:
            if (source / name).is_file():
                fsio.atomic_write_bytes(folder / name, (source / name).read_bytes())
    before = studies.attribute(best, "seconds") if copied else 0.0
    record = {
        "event": "winner",
        "trial": best.number,
        "params": best.params,
        "val_loss": best.value,
        "seconds": before,
        "search_seconds": spent,
        "budget": min(before + left, state.budget_s),
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
    with run_lock.lend(folder.path):  # the search holds RUN's lock: its winner's trainer works under it
        return train(config, folder.path, reporter, resume=(folder / LAST).exists())
