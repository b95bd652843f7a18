"""What the commands share: the options that several take, and where a model comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.errors import UsageError

RunDir = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run folder (default: latest in runs/).")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")]
Which = Annotated[str, typer.Option("--checkpoint", help="best (lowest val loss) or last.")]
ModelDir = Annotated[
    Optional[Path],
    typer.Option("--model", "-m", help="An exported model folder (charlm export), instead of a run folder."),
]


def model_source(run_dir: Path | None, model_dir: Path | None) -> Path | None:
    """--model MODEL_DIR or --run-dir DIR (default: the latest run)."""
    if model_dir is None:
        return run_dir
    if run_dir is not None:
        raise UsageError("pass either --run-dir or --model, not both")
    from charlm.store.model_dir import check_model_dir

    check_model_dir(model_dir)
    return model_dir
