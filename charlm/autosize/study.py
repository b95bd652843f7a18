"""The Optuna side of `--search` (search.py drives it): the study, where it is kept, how candidates are drawn and
cut. Optuna is the optional extra charlm[search]; nothing else in charlm imports it.

    storage   RUN/study.db (SQLite), or --study-storage: an RDB URL (postgresql://..., sqlite:///...) or a journal
              file on a shared disk: several processes, on several machines, then share one study
    sampler   TPE, seeded (a shared study: each process mixes its own id into the seed, or all draw alike)
    rungs     a rung's val loss is reported at step eta^k; search.py cuts once the rung's candidates have all
              reported (the best 1 in eta of the study's values there go on, the rest are told PRUNED)
"""

from __future__ import annotations

import zlib
from pathlib import Path

from charlm.autosize.space import Space
from charlm.errors import UsageError

MISSING = "--search needs Optuna, which is not installed: pip install 'charlm[search]'"


def import_optuna():
    """Optuna, or the one-line error that says how to install it."""
    try:
        import optuna
    except ImportError:
        raise UsageError(MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would drown charlm's table
    return optuna


def storage_url(storage: str | None, folder: Path) -> str:
    """What search.json keeps: the URL as given, a journal file's absolute path, or the run's own study.db."""
    from charlm.store.layout import STUDY_DB

    if storage is None:
        return f"sqlite:///{(Path(folder) / STUDY_DB).resolve()}"
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"--study-storage {storage} must be a journal file in an existing folder, or an Optuna URL")
    return str(path)


def open_study(optuna, url: str, *, name: str, seed: int):
    """The study (made, or loaded when another process or an earlier run made it)."""
    if "://" in url:
        storage = url
    else:
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(url))
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.NopPruner(),  # the cut is search.py's, once a rung is complete
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as e:
        raise UsageError(f"cannot open the study in {url} ({type(e).__name__}: {e}): check --study-storage") from None
    except Exception as e:  # SQLAlchemy's errors (a bad URL, a server that is down) share no base class with Optuna's
        raise UsageError(f"cannot open the study in {url} ({type(e).__name__}): check --study-storage") from None


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


def own_trials(study, search_id: str) -> list:
    """This process's trials (a shared study holds other processes' too)."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("search") == search_id]


def seconds_spent(trials: list) -> float:
    """The training time the trials took, as the search's share counts it."""
    return sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials)
