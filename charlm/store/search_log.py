"""A searched run's files (`--search`, autosize/search.py): search.json (the plan, written once) and search.jsonl
(one line per trial and rung, a diverged trial's with its error, then the winner's), read back without Optuna
or torch for `info` and `plot`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from charlm.errors import UsageError
from charlm.files import fsio, readback
from charlm.store.layout import SEARCH_LOG, SEARCH_STATE

MAX_SEARCH_LOG = 64 * 2**20  # a line per trial and rung: thousands of trials fit
MAX_SEARCH_STATE = 2**20


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


def read_lines(folder: Path) -> list[dict]:
    """The trial lines and the winner's line, in order; a line cut short by a crash or not a search record is
    left out."""
    path = Path(folder) / SEARCH_LOG
    try:
        text = readback.read_bytes(path, MAX_SEARCH_LOG).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except (OSError, readback.BadFile) as e:
        raise UsageError(f"{path} cannot be read ({e}): move it aside") from None
    lines = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if _is_record(record):
            lines.append(record)
    return lines


def _is_record(record: object) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("trial"), int) or isinstance(record["trial"], bool):
        return False
    # a diverged trial's line has no val loss
    keys = (
        ("seconds",) if record.get("diverged") is True and record.get("val_loss") is None else ("val_loss", "seconds")
    )
    numbers = [record.get(key) for key in keys]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers) and (
        isinstance(record.get("params"), dict)
    )


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
            pruned = {k: v for k, v in line.items() if k != "event"} | {"pruned": True}
            if at is None:
                out[line["trial"]] = [*steps, pruned]
            else:
                steps[at] = {**steps[at], "pruned": True}
    return out


def winner(lines: list[dict]) -> dict | None:
    return next((line for line in reversed(lines) if line.get("event") == "winner"), None)
