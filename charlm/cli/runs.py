"""`charlm runs`: a table of the run folders under the runs root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.table import print_whole, table_of


@cli.app.command(epilog="Example: charlm runs --root runs")
def runs(
    root: Annotated[
        Optional[Path], typer.Option(help="Folder holding run folders (default: $CHARLM_RUNS_DIR or runs).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array, a summary per run.")] = False,
) -> None:
    """List every run: corpus, model, epochs, best val perplexity and bits/char, time, status."""
    from charlm.store.run_dir import check_runs_root, runs_root
    from charlm.store.run_info import damage_notes, list_runs, parent_name

    root = check_runs_root(root, "--root", must_exist=True) if root is not None else runs_root()
    found = list_runs(root)  # none when the default folder does not exist yet
    if as_json:
        print(json.dumps([{k: v for k, v in run.items() if k != "records"} for run in found], ensure_ascii=False))
    elif not found:
        cli.err.print(f"no runs under {root}/ yet: train one with charlm train", markup=False)
    else:
        parents = any(run["parent"] for run in found)  # the column appears when a run was fine-tuned
        table = table_of(
            f"runs in {root}/",
            ("run", "corpus", "model", "epochs", "best ppl", "best bpc", "time", "state")
            + (("parent",) if parents else ()),
        )
        for run in found:
            table.add_row(
                run["name"],
                Path(run["corpus"]).name,
                run["model"],
                f"{run['epochs_done']:g}/{run['epochs']}",
                f"{run['best_ppl']:.3f}",
                f"{run['best_bpc']:.3f}",
                f"{run['seconds']:.0f} s",
                run["status"],
                *((parent_name(run["parent"]),) if parents else ()),
            )
        print_whole(table)
    for note in (note for run in found for note in damage_notes(run)):
        cli.err.print(f"warning: {note}", markup=False)
    for note in leftover_notes([root, *(Path(run["path"]) for run in found)]):
        cli.err.print(f"warning: {note}", markup=False)


def leftover_notes(folders: list[Path]) -> list[str]:
    """What interrupted writes left in `folders` (temps of a killed export, page or checkpoint write)."""
    from charlm.files.fsio import stale_temps

    return [
        f"{path} was left by an interrupted charlm write (process {path.name.split('-')[2]}): delete it, "
        "or let charlm remove it the next time it writes into that folder"
        for folder in folders
        for path in stale_temps(folder)
    ]
