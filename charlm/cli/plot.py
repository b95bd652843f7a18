"""`charlm plot`: the loss curves of one or more runs as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli


@cli.app.command(epilog="Example: charlm plot --run-dir runs/a --run-dir runs/b --out compare.png")
def plot(
    run_dirs: Annotated[
        Optional[list[Path]], typer.Option("--run-dir", "-r", help="Run folder (repeat to overlay).")
    ] = None,
    out_file: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: RUN/loss.png).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file that charlm did not write.")] = False,
) -> None:
    """Draw train/val loss against epoch and wall time, the LR and the best epoch, as a PNG."""
    from charlm.store.run_dir import RunDir
    from charlm.ui.plot import plot_runs

    folders = [RunDir.resolve(d).path for d in run_dirs] if run_dirs else [RunDir.resolve(None).path]
    target = out_file or folders[0] / "loss.png"
    plot_runs(folders, target, force=force)
    cli.out.print(f"wrote {target}")
