"""`charlm info`: one run folder in detail, read without torch where it can be."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from charlm.cli import app as cli
from charlm.cli.common import RunDir
from charlm.config import load_config
from charlm.errors import UsageError


@cli.app.command(epilog="Example: charlm info --run-dir runs/jaychou-lstm-20261123-195026")
def info(
    run_dir: RunDir = None, as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False
) -> None:
    """Show a run: its config, vocabulary, parameter count, device, metrics and checkpoint files."""
    from charlm.config import dump_config
    from charlm.store.layout import CONFIG
    from charlm.store.run_dir import RunDir
    from charlm.store.run_info import (
        damage_notes,
        damaged_checkpoints,
        describe_parent,
        search_note,
        sparkline,
        summarize,
    )
    from charlm.store.search_log import is_searched, read_log

    run_folder = RunDir.resolve(run_dir)
    folder = run_folder.path
    if is_searched(folder) and not (folder / CONFIG).exists():
        return _search_only(run_folder, as_json)  # no winner's run yet: the trials are all there is
    chars, config, parameters, notes = _run_facts(run_folder)
    run = summarize(folder)
    broken = damaged_checkpoints(run_folder)
    log = read_log(folder) if is_searched(folder) else None  # chosen by --search: its trials
    searched = log.lines if log is not None else None
    if log is not None and log.skipped:
        notes.append(search_note(str(folder), log.skipped))
    if as_json:
        extra = {"vocab_size": len(chars), "parameters": parameters[0], "damaged_checkpoints": broken}
        return _print_json(run, {**extra, "config": config.to_dict()}, searched)
    sample = "".join(chars[:: max(1, len(chars) // 40)][:40]).replace("\n", "↵")
    cli.out.print(f"[bold]{folder}[/] ({run['status']}, trained on {run['device']})")
    for note in notes + damage_notes(run) + [f"{folder / name} is damaged: {why}" for name, why in broken.items()]:
        cli.err.print(f"warning: {note}", markup=False)
    if run["parent"]:
        cli.out.print(describe_parent(run["parent"]), markup=False)
    cli.out.print(f"vocabulary: {len(chars):,} characters, e.g. {sample}", markup=False)
    cli.out.print(f"parameters: {parameters[0]:,} ({parameters[1]:,} without the embedding)")
    what = run["monitored"][:-5]
    cli.out.print(
        f"epochs {run['epochs_done']:g}/{run['epochs']}, best {what} perplexity {run['best_ppl']:.3f} "
        f"({run['best_bpc']:.3f} bits/char) at epoch {run['best_epoch']}, {run['seconds']:.1f} s in all"
    )
    cli.out.print(f"{what} loss by epoch: {sparkline([r.get(run['monitored'], math.nan) for r in run['records']])}")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            cli.out.print(f"  {path.name:<24} {path.stat().st_size:>12,} bytes", markup=False)
    cli.out.print("config:", markup=False)
    cli.out.print(dump_config(config), markup=False)
    if searched is not None:
        from charlm.cli.table import print_whole
        from charlm.ui.search import search_table

        print_whole(search_table(searched))


def _print_json(run: dict, facts: dict, searched: list[dict] | None) -> None:
    shown = {**{k: v for k, v in run.items() if k != "records"}, **facts}
    print(json.dumps({**shown, **({"search": searched} if searched is not None else {})}, ensure_ascii=False))


def _search_only(run, as_json: bool) -> None:
    """A search whose winner has not trained: where it stands, how to continue it, its trials so far."""
    from charlm.cli.table import print_whole
    from charlm.store import run_lock
    from charlm.store.run_info import damage_notes, summarize
    from charlm.store.search_log import read_lines
    from charlm.ui.search import search_table

    run = summarize(run.path)
    lines = read_lines(run["path"])
    if as_json:
        return _print_json(run, {}, lines)
    if run["status"] == "running":
        now = f"searching now (charlm process {run_lock.holder(Path(run['path']))})"
    else:
        now = f"stopped before its winner trained: continue it with charlm train --resume --run-dir {run['path']}"
    cli.out.print(f"{run['path']}: a search ({run['corpus']}, {run['model']}), {now}", markup=False)
    for note in damage_notes(run):
        cli.err.print(f"warning: {note}", markup=False)
    print_whole(search_table(lines))


def _run_facts(run):
    """The vocabulary, config, (parameters, without the embedding) and notes on damaged files of a run, read
    from vocab.json, config.yaml and status.json with no torch; a run from before status.json held the
    parameter count (or with a damaged file) is read from its last checkpoint instead."""
    from charlm.files import readback
    from charlm.store.layout import CONFIG, VOCAB
    from charlm.store.run_log import DamagedFile

    try:
        status = run.status.read()
        parameters = (int(status["parameters"]), int(status["non_embedding_parameters"]))
        config = load_config(run / CONFIG)
        chars = readback.vocab_chars(readback.read_bytes(run / VOCAB, readback.MAX_VOCAB_JSON))
        return chars, config, parameters, []
    except readback.BadFile as e:
        notes = [f"{run / VOCAB} is damaged ({e.reason}): the vocabulary shown is last.pt's"]
    except (DamagedFile, KeyError, TypeError, ValueError, OSError, UsageError):
        notes = []
    from charlm.store import checkpoint as ckpt

    model, vocab, saved = ckpt.load_run_model(run, "last")
    return vocab.chars, saved.config, (model.num_parameters(), model.num_parameters(embedding=False)), notes
