"""The Typer app and the consoles every command prints to: a leaf module, imported by each command in
charlm/cli/ (which registers itself on `app`) and by `charlm.cli.main`, which imports every command.

torch is imported inside the commands that need it, so --help and completion stay instant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from charlm.store.layout import RUNS_ENV

app = typer.Typer(
    help="Character-level RNN/LSTM/GRU language models: train, generate, perplexity.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    epilog="Example: charlm train --corpus tinyshakespeare && charlm generate --prefix ROMEO: -n 200",
)
data_app = typer.Typer(
    help="Built-in corpora: list them, download one.",
    no_args_is_help=True,
    epilog="Example: charlm data list; charlm data fetch tinyshakespeare",
)
app.add_typer(data_app, name="data")

out = Console(highlight=False, soft_wrap=True)  # one record per line, even in a log file
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from charlm import __version__

        out.print(f"charlm {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    runs_root: Annotated[
        Optional[Path],
        typer.Option("--runs-root", help="Where runs go and are looked for (default: $CHARLM_RUNS_DIR, else runs)."),
    ] = None,
) -> None:
    """Character-level RNN/LSTM/GRU language models: train, generate, perplexity."""
    if runs_root is not None:  # the one place that names the runs root for this command: see store.run_dir.runs_root
        os.environ[RUNS_ENV] = str(runs_root)
