"""search.json as a search holds it (`SearchState`): made when a search starts, and on `--resume` read back and
checked whole before any candidate is drawn or trained: each value against what a search can run (the rungs as
space.check_rungs bounds them, the space as neighbourhood() makes one, the rule's config as config.py checks it),
the rungs computed again rather than believed. A secret never reaches it: the storage is kept as shown."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from charlm.autosize import space as neighbourhood
from charlm.autosize.rule import Plan
from charlm.autosize.storage import Storage
from charlm.coerce import build
from charlm.config import Config, apply_overrides, from_dict
from charlm.errors import CharlmError, UsageError
from charlm.store import search_log
from charlm.store.layout import SEARCH_STATE

INT64 = 2**63
MAX_NAME = 200  # a study's name (Optuna keeps up to 512 characters)


@dataclass
class SearchState:
    """search.json: what a resumed search needs (the budget, the rungs, the rule's config and the space)."""

    id: str  # this process's search; its trials carry it (a shared study holds other processes' trials too)
    budget_s: float
    search_seconds: float
    rung_seconds: list[float]
    reduction: int
    trials: int
    storage: str | None  # a shared storage as shown (a password as ***); None: the run's own study.db
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


def base_config(config: Config) -> Config:
    """The rule's config that the trials and the winner start from: search off, and no storage (its password
    would be written into every trial's config.yaml and the winner's)."""
    return replace(config, search=replace(config.search, enabled=False, storage=None))


def new(config: Config, chosen: Plan, budget_s: float, storage: Storage | None) -> SearchState:
    """A new search's plan (`storage`: a shared one, None for the run's own), its settings bounded
    (space.check_rungs) before anything is drawn or written."""
    s = config.search
    search_seconds = s.share * budget_s
    rungs = neighbourhood.check_rungs(search_seconds, trials=s.trials, rungs=s.rungs, reduction=s.reduction)
    return SearchState(
        id=uuid.uuid4().hex,
        budget_s=budget_s,
        search_seconds=search_seconds,
        rung_seconds=rungs,
        reduction=s.reduction,
        trials=s.trials,
        storage=storage.shown if storage is not None else None,
        shared=storage is not None,
        study=s.study or config.name,
        seed=s.seed,
        tied=chosen.shape.embed is None,
        space=asdict(neighbourhood.neighbourhood(chosen)),
        rule=neighbourhood.rule_params(chosen),
        base=base_config(config).to_dict(),
    )


def load(folder: Path) -> SearchState:
    """RUN/search.json, checked whole; a value a search cannot run is named, and the search does not resume."""
    path = Path(folder) / SEARCH_STATE
    raw = search_log.read_state(folder)
    try:
        state = build(SearchState, raw, prefix="")
        problem = _problem(state)
    except (CharlmError, TypeError, ValueError) as e:
        problem = str(e)
    if problem is not None:
        raise UsageError(f"{path} is damaged ({problem}): the search cannot resume; start a new run")
    return state


def _problem(state: SearchState) -> str | None:
    """What in `state` a search cannot run, or None."""
    if not re.fullmatch(r"[0-9a-f]{32}", state.id):
        return "its id is not charlm's"
    if not (math.isfinite(state.budget_s) and 0 < state.search_seconds < state.budget_s):
        return f"budget_s {state.budget_s} and search_seconds {state.search_seconds} do not make a search"
    args = {"trials": state.trials, "rungs": len(state.rung_seconds), "reduction": state.reduction}
    rungs_problem = neighbourhood.rungs_problem(state.search_seconds, **args)
    if rungs_problem is not None:
        return rungs_problem[0]
    expected = neighbourhood.rung_seconds(state.search_seconds, **args)
    if not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(state.rung_seconds, expected, strict=True)):
        return f"rung_seconds {state.rung_seconds} are not the rungs of its budget and settings"
    if not (0 < len(state.study) <= MAX_NAME and 0 <= state.seed < INT64):
        return "its study name or seed is out of range"
    if state.shared and not state.storage:
        return "it shares a study but names no storage"
    state.the_space().check()
    if not search_log.within(state.rule, state.space):
        return "the rule's choice is not in its space"
    from_dict(state.base)  # config.py's checks (a ConfigError names the key)
    return None
