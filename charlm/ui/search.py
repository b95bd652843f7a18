"""`--search`'s table (the end of `charlm train --search`, and `charlm info`): one row per trial, its values, its
val loss at each rung, how it ended; and the line printed as each step of a search ends. Read from search.jsonl
(store/search_log.py), without Optuna or torch."""

from __future__ import annotations

from rich.table import Table

from charlm.store import search_log

COLUMNS = ("trial", "model", "dropout", "lr", "batch", "weight drop")


def describe(params: dict) -> str:
    return f"LSTM {params.get('layers', '?')}x{params.get('hidden', '?')}"


def progress_line(line: dict) -> str:
    """What `charlm train --search` prints as the search goes: a trial's rung, a cut, a diverged candidate,
    the winner, or the search declined."""
    event = line.get("event")
    if event == "winner":
        how = "trains again from the start" if line.get("again") else "continues"
        return f"search: trial {line['trial']} wins, {how} to {line['budget']:.0f} s"
    if event == "declined":
        return (
            f"search: skipped: the budget reads the train split {line['passes']:.1f} times, fewer than "
            f"search.min_passes ({line['min_passes']:g}): training time counts more than the choice, so the "
            "rule's choice trains the whole budget"
        )
    if event == "pruned":
        return f"search: trial {line['trial']} pruned at rung {line['rung']}"
    if line.get("diverged"):
        return f"search: trial {line['trial']} dropped at rung {line['rung']}: {line['error']}"
    return (
        f"search: trial {line['trial']} {describe(line['params'])} rung {line['rung']}: "
        f"val loss {line['val_loss']:.4f} after {line['seconds']:.2f} s"
    )


def search_rows(lines: list[dict]) -> tuple[int, list[list[str]]]:
    """(rungs shown, one row per trial in trial order): values, the val loss at each rung reached, the outcome."""
    by_trial = search_log.trials(lines)
    won = search_log.winner(lines)
    rungs = 1 + max((line["rung"] for line in lines if isinstance(line.get("rung"), int)), default=0)
    rows = []
    for number in sorted(by_trial):
        steps = by_trial[number]
        p = steps[-1]["params"]
        losses = {line.get("rung"): line["val_loss"] for line in steps}
        if won is not None and won["trial"] == number:
            outcome = "winner"
        elif steps[-1].get("diverged"):
            outcome = "diverged"
        else:
            outcome = "pruned" if steps[-1].get("pruned") else f"rung {steps[-1].get('rung', 0)}"
        rows.append(
            [
                f"{number}{' (rule)' if steps[-1].get('rule') else ''}",
                describe(p),
                _number(p.get("dropout"), ".2f"),
                _number(p.get("lr"), ".2g"),
                str(p.get("batch", "?")),
                _number(p.get("weight_drop"), ".2f"),
                *[_number(losses.get(k), ".4f") for k in range(rungs)],
                f"{steps[-1]['seconds']:.1f} s",
                outcome,
            ]
        )
    return rungs, rows


def search_table(lines: list[dict]) -> Table:
    rungs, rows = search_rows(lines)
    won = search_log.winner(lines)
    title = "search"
    if won is not None:
        title += f": trial {won['trial']} won ({won['val_loss']:.4f}), continued to {won['budget']:.0f} s"
    table = Table(title=title)
    for column in (*COLUMNS, *[f"val rung {k}" for k in range(rungs)], "trained", "outcome"):
        numeric = column not in ("trial", "model", "outcome")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _number(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"
