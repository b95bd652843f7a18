"""The Typer app and the consoles every command prints to: a leaf module, imported by each command in
charlm/cli/ (which registers itself on `app`) and by `charlm.cli.main`, which imports every command.

torch is imported inside the commands that need it, so --help and completion stay instant.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from charlm.errors import RunError
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


def print_json(value: object) -> None:
    """One JSON value on stdout: what every --json prints. Strict JSON, since a program reads it: NaN and Infinity
    are not JSON (Python writes them; most parsers refuse them). Such a number has no meaning for a user either
    (a model whose numbers overflowed): one line naming it instead, before anything is printed."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        where, number = _first_nonfinite(value)
        raise RunError(
            f"the result's {where} is {number}, not a finite number: the model's numbers overflowed (its weights "
            "are too large or not finite); use another checkpoint, or retrain with a lower train.lr"
        ) from None
    print(text)


def _first_nonfinite(value: object, where: str = "value") -> tuple[str, float] | tuple[None, None]:
    """The dotted name and value of the first float in `value` that is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{where}.{key}" if where != "value" else str(key))
        if found[0] is not None:
            return found
    return None, None


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
