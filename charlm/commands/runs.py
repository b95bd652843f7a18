"""`charlm plot`, `runs`, `info` and `data`: look at run folders and the built-in corpora."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from charlm import cli
from charlm.commands.common import RunDir
from charlm.config import load_config
from charlm.errors import UsageError


@cli.app.command(epilog="Example: charlm plot --run-dir runs/a --run-dir runs/b --out compare.png")
def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Option("--run-dir", "-r", help="Run folder (repeat to overlay).")]
    = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: RUN/loss.png).")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file that charlm did not write.")]
    = False,
) -> None:
    """Draw train/val loss against epoch and wall time, the LR and the best epoch, as a PNG."""
    from charlm.plot import plot_runs
    from charlm.rundir import RunDir

    folders = [RunDir.resolve(d).path for d in run_dirs] if run_dirs else [RunDir.resolve(None).path]
    target = out_file or folders[0] / "loss.png"
    plot_runs(folders, target, force=force)
    cli.out.print(f"wrote {target}")


@cli.app.command(epilog="Example: charlm runs --root runs")
def runs(
    root: Annotated[Optional[Path], typer.Option(
        help="Folder holding run folders (default: $CHARLM_RUNS_DIR or runs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array, a summary per run.")] = False,
) -> None:
    """List every run: corpus, model, epochs, best val perplexity and bits/char, time, status."""
    from charlm.rundir import check_runs_root, runs_root
    from charlm.runs import damage_notes, list_runs, parent_name

    root = check_runs_root(root, "--root", must_exist=True) if root is not None else runs_root()
    found = list_runs(root)  # none when the default folder does not exist yet
    if as_json:
        print(json.dumps([{k: v for k, v in run.items() if k != "records"} for run in found], ensure_ascii=False))
    elif not found:
        cli.err.print(f"no runs under {root}/ yet: train one with charlm train", markup=False)
    else:
        parents = any(run["parent"] for run in found)  # the column appears when a run was fine-tuned
        table = table_of(f"runs in {root}/", ("run", "corpus", "model", "epochs", "best ppl", "best bpc", "time",
                                                "state") + (("parent",) if parents else ()))
        for run in found:
            table.add_row(run["name"], Path(run["corpus"]).name, run["model"],
                          f"{run['epochs_done']:g}/{run['epochs']}", f"{run['best_ppl']:.3f}",
                          f"{run['best_bpc']:.3f}", f"{run['seconds']:.0f} s", run["status"],
                          *((parent_name(run["parent"]),) if parents else ()))
        print_whole(table)
    for note in (note for run in found for note in damage_notes(run)):
        cli.err.print(f"warning: {note}", markup=False)
    for note in leftover_notes([root, *(Path(run["path"]) for run in found)]):
        cli.err.print(f"warning: {note}", markup=False)


def leftover_notes(folders: list[Path]) -> list[str]:
    """What interrupted writes left in `folders` (temps of a killed export, page or checkpoint write)."""
    from charlm.fsio import stale_temps

    return [f"{path} was left by an interrupted charlm write (process {path.name.split('-')[2]}): delete it, "
            "or let charlm remove it the next time it writes into that folder"
            for folder in folders for path in stale_temps(folder)]


NUMBERS = {"epochs", "best ppl", "best bpc", "time", "MB"}


def table_of(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose cells wrap inside their column instead of being cut with an ellipsis."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in NUMBERS else "left", overflow="fold")
    return table


def print_whole(table: Table) -> None:
    """Print a table whole: at the terminal's width on a terminal, at its own width in a pipe or a log."""
    from rich.console import Console
    from rich.measure import Measurement

    if cli.out.is_terminal:
        cli.out.print(table)
        return
    natural = Measurement.get(cli.out, cli.out.options.update_width(100_000), table).maximum
    Console(file=cli.out.file, width=max(natural, cli.out.width), highlight=False).print(table)


@cli.app.command(epilog="Example: charlm info --run-dir runs/jaychou-lstm-20261123-195026")
def info(run_dir: RunDir = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Show a run: its config, vocabulary, parameter count, device, metrics and checkpoint files."""
    from charlm.config import dump_config
    from charlm.rundir import RunDir
    from charlm.runs import damage_notes, damaged_checkpoints, describe_parent, sparkline, summarize

    run_folder = RunDir.resolve(run_dir)
    folder = run_folder.path
    chars, config, parameters, notes = _run_facts(run_folder)
    run = summarize(folder)
    broken = damaged_checkpoints(run_folder)
    if as_json:
        print(json.dumps({**{k: v for k, v in run.items() if k != "records"}, "vocab_size": len(chars),
                          "parameters": parameters[0], "damaged_checkpoints": broken, "config": config.to_dict()},
                         ensure_ascii=False))
        return
    sample = "".join(chars[:: max(1, len(chars) // 40)][:40]).replace("\n", "↵")
    cli.out.print(f"[bold]{folder}[/] ({run['status']}, trained on {run['device']})")
    for note in notes + damage_notes(run) + [f"{folder / name} is damaged: {why}" for name, why in broken.items()]:
        cli.err.print(f"warning: {note}", markup=False)
    if run["parent"]:
        cli.out.print(describe_parent(run["parent"]), markup=False)
    cli.out.print(f"vocabulary: {len(chars):,} characters, e.g. {sample}", markup=False)
    cli.out.print(f"parameters: {parameters[0]:,} ({parameters[1]:,} without the embedding)")
    what = run["monitored"][:-5]
    cli.out.print(f"epochs {run['epochs_done']:g}/{run['epochs']}, best {what} perplexity {run['best_ppl']:.3f} "
                  f"({run['best_bpc']:.3f} bits/char) at epoch {run['best_epoch']}, {run['seconds']:.1f} s in all")
    cli.out.print(f"{what} loss by epoch: {sparkline([r.get(run['monitored'], math.nan) for r in run['records']])}")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            cli.out.print(f"  {path.name:<24} {path.stat().st_size:>12,} bytes", markup=False)
    cli.out.print("config:", markup=False)
    cli.out.print(dump_config(config), markup=False)


def _run_facts(run):
    """The vocabulary, config, (parameters, without the embedding) and notes on damaged files of a run, read
    from vocab.json, config.yaml and status.json with no torch; a run from before status.json held the
    parameter count (or with a damaged file) is read from its last checkpoint instead."""
    from charlm import readback
    from charlm.rundir import CONFIG, VOCAB, DamagedFile

    try:
        status = run.read_status()
        parameters = (int(status["parameters"]), int(status["non_embedding_parameters"]))
        config = load_config(run / CONFIG)
        chars = readback.vocab_chars(readback.read_bytes(run / VOCAB, readback.MAX_VOCAB_JSON))
        return chars, config, parameters, []
    except readback.BadFile as e:
        notes = [f"{run / VOCAB} is damaged ({e.reason}): the vocabulary shown is last.pt's"]
    except (DamagedFile, KeyError, TypeError, ValueError, OSError, UsageError):
        notes = []
    from charlm import checkpoint as ckpt

    model, vocab, saved = ckpt.load_run_model(run, "last")
    return vocab.chars, saved.config, (model.num_parameters(), model.num_parameters(embedding=False)), notes


@cli.data_app.command("list", epilog="Example: charlm data list")
def data_list(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array.")] = False) -> None:
    """Show the built-in corpora, their size, and whether each ships with charlm or downloads (and if so,
    whether it is in the cache folder)."""
    from charlm import data as data_mod

    folder = data_mod.data_dir()
    rows = [{"name": b.name, "description": b.description, "files": [r.filename for r in b.files],
             "bytes": sum(r.size for r in b.files), "source": "package" if b.shipped else "download",
             "cached": None if b.shipped else all(data_mod.is_cached(r, folder) for r in b.files)}
            for b in data_mod.BUILTINS.values()]
    if as_json:
        print(json.dumps({"cache": str(folder), "corpora": rows}, ensure_ascii=False))
        return
    table = table_of(f"built-in corpora (download cache: {folder})", ("name", "description", "files", "MB", "source"))
    for row in rows:
        where = ("built in (ships with charlm)" if row["source"] == "package"
                 else f"download, {'cached' if row['cached'] else 'not cached'}")
        table.add_row(row["name"], row["description"], ", ".join(row["files"]), f"{row['bytes'] / 1e6:.2f}", where)
    print_whole(table)


@cli.data_app.command("fetch", epilog="Example: charlm data fetch ptb-char")
def data_fetch(name: Annotated[str, typer.Argument(help="A built-in corpus name (see charlm data list).")]) -> None:
    """Download a built-in corpus into the cache folder and verify its checksum (one that ships with charlm
    is only verified: there is nothing to download)."""
    from charlm import data as data_mod
    from charlm.report import download_bar

    builtin = data_mod.BUILTINS.get(name)
    if builtin is not None and builtin.shipped:
        for remote in builtin.files:
            data_mod.read_packaged(remote)
            cli.out.print(f"{data_mod.packaged_file(remote)} ok (ships with charlm: nothing to download)")
        return
    for path in data_mod.fetch(name, progress=lambda f, total: download_bar(cli.out, f, total)):
        cli.out.print(f"{path} ok")
