"""`charlm plot`, `runs`, `info` and `data`: look at run folders and the built-in corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from charlm import cli
from charlm.commands.common import RunDir


@cli.app.command(epilog="Example: charlm plot --run-dir runs/a --run-dir runs/b --out compare.png")
def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Option("--run-dir", "-r", help="Run folder (repeat to overlay).")]
    = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: RUN/loss.png).")]
    = None,
) -> None:
    """Draw train/val loss against epoch and wall time, the LR and the best epoch, as a PNG."""
    from charlm.plot import plot_runs
    from charlm.rundir import RunDir

    folders = [RunDir.resolve(d).path for d in run_dirs] if run_dirs else [RunDir.resolve(None).path]
    target = out_file or folders[0] / "loss.png"
    plot_runs(folders, target)
    cli.out.print(f"wrote {target}")


@cli.app.command(epilog="Example: charlm runs --root runs")
def runs(root: Annotated[Optional[Path], typer.Option(
        help="Folder holding run folders (default: $CHARLM_RUNS_DIR or runs).")] = None) -> None:
    """List every run: corpus, model, epochs, best val perplexity and bits/char, time, state."""
    from charlm.rundir import runs_root
    from charlm.runs import damage_notes, list_runs, parent_name

    root = root if root is not None else runs_root()
    table = Table(title=f"runs in {root}/")
    found = list_runs(root)
    parents = any(run["parent"] for run in found)  # the column appears when a run was fine-tuned
    for column in ("run", "corpus", "model", "epochs", "best ppl", "best bpc", "time", "state") + (
            ("parent",) if parents else ()):
        table.add_column(column, justify="right" if column in ("epochs", "best ppl", "best bpc", "time") else "left")
    for run in found:
        table.add_row(run["name"], Path(run["corpus"]).name, run["model"], f"{run['epochs_done']:g}/{run['epochs']}",
                      f"{run['best_ppl']:.3f}", f"{run['best_bpc']:.3f}", f"{run['seconds']:.0f} s", run["status"],
                      *((parent_name(run["parent"]),) if parents else ()))
    cli.out.print(table)
    for note in (note for run in found for note in damage_notes(run)):
        cli.err.print(f"warning: {note}", markup=False)


@cli.app.command(epilog="Example: charlm info --run-dir runs/jaychou-lstm-20261123-195026")
def info(run_dir: RunDir = None) -> None:
    """Show a run: its config, vocabulary, parameter count, device, metrics and checkpoint files."""
    from charlm import checkpoint as ckpt
    from charlm.config import dump_config
    from charlm.rundir import RunDir
    from charlm.runs import damage_notes, describe_parent, sparkline, summarize

    run_folder = RunDir.resolve(run_dir)
    folder = run_folder.path
    model, vocab, saved = ckpt.load_run_model(run_folder, "last")
    config = saved.config
    run = summarize(folder)
    sample = "".join(vocab.chars[:: max(1, len(vocab) // 40)][:40]).replace("\n", "↵")
    cli.out.print(f"[bold]{folder}[/] ({run['status']}, trained on {run['device']})")
    for note in damage_notes(run):
        cli.err.print(f"warning: {note}", markup=False)
    if run["parent"]:
        cli.out.print(describe_parent(run["parent"]), markup=False)
    cli.out.print(f"vocabulary: {len(vocab):,} characters, e.g. {sample}", markup=False)
    without = model.num_parameters(embedding=False)
    cli.out.print(f"parameters: {model.num_parameters():,} ({without:,} without the embedding)")
    what = run["monitored"][:-5]
    cli.out.print(f"epochs {run['epochs_done']:g}/{run['epochs']}, best {what} perplexity {run['best_ppl']:.3f} "
              f"({run['best_bpc']:.3f} bits/char) at epoch {run['best_epoch']}, {run['seconds']:.1f} s in all")
    cli.out.print(f"{what} loss by epoch: {sparkline([r[run['monitored']] for r in run['records']])}")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            cli.out.print(f"  {path.name:<24} {path.stat().st_size:>12,} bytes", markup=False)
    cli.out.print("config:", markup=False)
    cli.out.print(dump_config(config), markup=False)


@cli.data_app.command("list", epilog="Example: charlm data list")
def data_list() -> None:
    """Show the built-in corpora, their size and whether they are in the cache folder."""
    from charlm import data as data_mod
    folder = data_mod.data_dir()
    table = Table(title=f"built-in corpora (cache: {folder})")
    for column in ("name", "description", "files", "MB", "cached"):
        table.add_column(column)
    for b in data_mod.BUILTINS.values():
        cached = all(data_mod.is_cached(r, folder) for r in b.files)
        table.add_row(b.name, b.description, ", ".join(r.filename for r in b.files),
                      f"{sum(r.size for r in b.files) / 1e6:.2f}", "yes" if cached else "no")
    cli.out.print(table)


@cli.data_app.command("fetch", epilog="Example: charlm data fetch tinyshakespeare")
def data_fetch(name: Annotated[str, typer.Argument(help="A built-in corpus name (see charlm data list).")]) -> None:
    """Download a built-in corpus into the cache folder and verify its checksum."""
    from charlm import data as data_mod
    from charlm.report import download_bar

    for path in data_mod.fetch(name, progress=lambda f, total: download_bar(cli.out, f, total)):
        cli.out.print(f"{path} ok")
