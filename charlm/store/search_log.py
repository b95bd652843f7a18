"""A searched run's files (`--search`, autosize/search.py): search.json (the plan, written once) and search.jsonl
(one line per trial and rung, a diverged trial's with its error, then the winner's), read back without Optuna
or torch for `info`, `plot` and a resumed search.

A line is kept only when it is one charlm writes and agrees with search.json: its trial one the search has (in
its own study, numbered below search.trials), its rung one of the plan's, its values inside the plan's space,
its seconds and losses finite and not negative, a cut's line after the rung it cuts, and a winner that (in the
run's own study) is a logged trial with its values and loss. Any other line is skipped and counted (`info`
says how many), so a hand-edited or damaged log is neither shown nor trained from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from charlm.errors import UsageError
from charlm.files import fsio, readback
from charlm.store.layout import SEARCH_LOG, SEARCH_STATE

MAX_SEARCH_LOG = 64 * 2**20  # a line per trial and rung: thousands of trials fit
MAX_SEARCH_STATE = 2**20
PARAMS = ("hidden", "layers", "dropout", "lr", "batch", "weight_drop")
CHOICES = {"hidden": "widths", "layers": "layers", "batch": "batches"}  # params drawn from a list of the space
RANGES = ("dropout", "lr", "weight_drop")  # params drawn from a range of the space


def is_searched(folder: Path) -> bool:
    return (Path(folder) / SEARCH_STATE).is_file()


def write_state(folder: Path, state: dict) -> None:
    fsio.atomic_write_text(Path(folder) / SEARCH_STATE, json.dumps(state, ensure_ascii=False))


def read_state(folder: Path) -> dict:
    path = Path(folder) / SEARCH_STATE
    try:
        state = readback.read_json(path, MAX_SEARCH_STATE)
    except (OSError, readback.BadFile) as e:
        raise UsageError(f"{path} cannot be read ({e}): the search cannot resume; start a new run") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not a search plan: the search cannot resume; start a new run")
    return state


def append(folder: Path, record: dict) -> None:
    fsio.append_line(Path(folder) / SEARCH_LOG, record)


@dataclass
class Bounds:
    """What search.json says that a line must agree with (None: search.json unreadable, lines checked alone)."""

    trials: int | None = None  # own study: trials are numbered below this
    rungs: list[float] = field(default_factory=list)  # each rung's seconds
    space: dict | None = None
    budget_s: float = math.inf


def plan_of(state: dict) -> Bounds:
    """search.json's facts for checking lines; a plan it does not hold checks nothing more than a line's form."""
    rungs, space = state.get("rung_seconds"), state.get("space")
    ok_rungs = isinstance(rungs, list) and rungs and all(_number(r) and r > 0 for r in rungs)
    ok_space = isinstance(space, dict) and set(space) == {*CHOICES.values(), *RANGES}
    trials = state.get("trials")
    own = state.get("shared") is False and _whole(trials)
    budget = state.get("budget_s")
    return Bounds(
        trials=trials if own else None,
        rungs=list(rungs) if ok_rungs else [],
        space=space if ok_space else None,
        budget_s=budget if _number(budget) and budget > 0 else math.inf,
    )


@dataclass
class Log:
    lines: list[dict]
    skipped: int = 0  # lines that are not charlm's or disagree with search.json


def read_log(folder: Path, plan: Bounds | None = None) -> Log:
    """The lines charlm wrote that agree with search.json (`plan`, default: read from the folder), in order."""
    path = Path(folder) / SEARCH_LOG
    try:
        text = readback.read_bytes(path, MAX_SEARCH_LOG).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Log([])
    except (OSError, readback.BadFile) as e:
        raise UsageError(f"{path} cannot be read ({e}): move it aside") from None
    if plan is None:
        try:
            plan = plan_of(read_state(folder))
        except UsageError:
            plan = Bounds()
    log, seen = Log([]), set()
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if _agrees(line, plan, log.lines, seen):
            log.lines.append(line)
            if line.get("event") is None:
                seen.add((line["trial"], line["rung"]))
        elif raw.strip():
            log.skipped += 1
    return log


def read_lines(folder: Path) -> list[dict]:
    return read_log(folder).lines


def _agrees(line: object, plan: Bounds, before: list[dict], seen: set) -> bool:
    if not isinstance(line, dict) or not _trial_number(line.get("trial"), plan):
        return False
    event = line.get("event")
    if event == "winner":
        return _winner(line, plan, before)
    if event not in (None, "pruned") or not _rung_line(line, plan):
        return False
    key = (line["trial"], line["rung"])
    return key not in seen if event is None else key in seen  # one line a rung; a cut after its rung


def _rung_line(line: dict, plan: Bounds) -> bool:
    rung, diverged = line.get("rung"), line.get("diverged", False)
    if not (_whole(rung) and 0 <= rung and (not plan.rungs or rung < len(plan.rungs))):
        return False
    if plan.rungs and not math.isclose(_float(line.get("rung_seconds")), plan.rungs[rung], rel_tol=1e-6):
        return False
    if diverged is True:
        loss_ok = line.get("val_loss") is None and isinstance(line.get("error"), str)
    else:
        loss_ok = diverged is False and _loss(line.get("val_loss"))
    return (
        loss_ok
        and _seconds(line.get("seconds"))
        and _seconds(line.get("rung_seconds"))
        and isinstance(line.get("pruned"), bool)
        and isinstance(line.get("rule", False), bool)
        and within(line.get("params"), plan.space)
    )


def _winner(line: dict, plan: Bounds, before: list[dict]) -> bool:
    """A winner line: its figures sound; in the run's own study, a trial logged with these values and loss."""
    keys = ("seconds", "search_seconds", "budget")
    if not (all(_seconds(line.get(k)) for k in keys) and _loss(line.get("val_loss"))):
        return False
    if line["budget"] > plan.budget_s * (1 + 1e-9) or not within(line.get("params"), plan.space):
        return False
    if not (isinstance(line.get("copied"), bool) and isinstance(line.get("again"), bool)):
        return False
    try:
        if "chosen_at" in line:  # written since shared studies came
            datetime.fromisoformat(line["chosen_at"])
    except (TypeError, ValueError):
        return False
    if plan.trials is None:  # a shared study's winner may be another process's trial, logged elsewhere
        return True
    own = [b for b in before if b.get("event") is None and b["trial"] == line["trial"]]
    return any(b["params"] == line["params"] and b["val_loss"] == line["val_loss"] for b in own)


def within(params: object, space: dict | None) -> bool:
    """Whether `params` is a candidate of the search: its six values, of their types, inside `space` (as
    search.json keeps it) when there is one."""
    if not isinstance(params, dict) or set(params) != set(PARAMS):
        return False
    if not all(_whole(params[k]) for k in CHOICES) or not all(_number(params[k]) for k in RANGES):
        return False
    if space is None:
        return True
    try:
        choices = all(params[k] in space[name] for k, name in CHOICES.items())
        return choices and all(
            space[k][0] * (1 - 1e-9) <= params[k] <= space[k][1] * (1 + 1e-9) + 1e-12 for k in RANGES
        )
    except (TypeError, IndexError, KeyError):
        return False


def _trial_number(value: object, plan: Bounds) -> bool:
    return _whole(value) and value >= 0 and (plan.trials is None or value < plan.trials)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _float(value: object) -> float:
    return float(value) if _number(value) else math.nan


def _seconds(value: object) -> bool:
    return _number(value) and value >= 0


def _loss(value: object) -> bool:
    return _number(value) and value >= 0  # cross-entropy, label smoothing included


def trials(lines: list[dict]) -> dict[int, list[dict]]:
    """The rung lines of each trial, by trial number (the winner's line left out); a cut's "pruned" line marks
    the trial's line of that rung pruned (the cut comes once the whole rung has trained)."""
    out: dict[int, list[dict]] = {}
    for line in lines:
        if line.get("event") is None:
            out.setdefault(line["trial"], []).append(line)
        elif line.get("event") == "pruned":
            steps = out.get(line["trial"], [])
            at = next((i for i, step in enumerate(steps) if step.get("rung") == line.get("rung")), None)
            if at is not None:
                steps[at] = {**steps[at], "pruned": True}
    return out


def winner(lines: list[dict]) -> dict | None:
    return next((line for line in reversed(lines) if line.get("event") == "winner"), None)
