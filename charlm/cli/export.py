"""`charlm export`: a run's model as a portable folder (safetensors) or a one-file browser page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.common import RunDir, Which
from charlm.errors import UsageError


@cli.app.command(epilog="Example: charlm export --run-dir runs/shakespeare-cpu --out models/shakespeare")
def export(
    run_dir: RunDir = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Write a portable model folder here (must not exist, or be empty)."),
    ] = None,
    html: Annotated[
        Optional[Path],
        typer.Option("--html", help="Write a one-file browser demo of the model here (no server, no network)."),
    ] = None,
    onnx: Annotated[
        Optional[Path],
        typer.Option("--onnx", help="Write the one-character step as ONNX here (a new folder), for any runtime."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="--html: weights in the page as float16 (half the size) or float32 (the exact weights).")
    ] = "float16",
    checkpoint: Which = "best",
    force: Annotated[
        bool, typer.Option("--force", help="--html: replace an existing file that charlm did not write.")
    ] = False,
) -> None:
    """Export a trained run: --out writes a model folder (model.safetensors, config.json, vocab.json, a README.md
    model card) that generate, perplexity and train --init-from take; --html a page that samples in a browser;
    --onnx the step as an ONNX graph with its vocabulary, for onnxruntime in any language.
    """
    from charlm.export.demo import export_html
    from charlm.export.model_folder import export_model
    from charlm.store.run_dir import RunDir

    _check_targets(out_dir, onnx, html, precision=precision, force=force)
    if out_dir is not None:
        folder = export_model(run_dir, out_dir, checkpoint)
        cli.out.print(f"wrote {folder}/ (model.safetensors, config.json, vocab.json, README.md)", markup=False)
        # the mix's index is the training text's (as large as it, and the text itself): it stays with the run
        cli.err.print(
            "note: the mix with counts (--mix) is left out of the folder: its index holds the training text; "
            "--mix on the folder builds it again (in the user cache) where that corpus can be read",
            markup=False,
        )
    if onnx is not None:
        from charlm.export.onnx import export_onnx

        folder = export_onnx(run_dir, onnx, checkpoint)
        cli.out.print(f"wrote {folder}/ (model.onnx, vocab.json, onnx.json)", markup=False)
    if html is not None:
        page = export_html(RunDir.resolve(run_dir), checkpoint, html, precision=precision, force=force)
        cli.out.print(
            f"wrote {html}: {page.size / 1e6:.2f} MB, {page.weights:,} weights as {precision} "
            f"({page.weight_bytes / 1e6:.2f} MB before base64)",
            markup=False,
        )


def _check_targets(out_dir: Path | None, onnx: Path | None, html: Path | None, *, precision: str, force: bool) -> None:
    """Every target checked before any is written: new folders, a page file, none inside another."""
    from charlm.export.demo import check_precision
    from charlm.store.targets import check_apart, check_output_file, check_output_folder

    if out_dir is None and html is None and onnx is None:
        raise UsageError(
            "say what to export: --out MODEL_DIR (a portable model folder), --html FILE (a browser demo) or "
            "--onnx FOLDER (the step as ONNX)"
        )
    folders = [(option, folder) for option, folder in (("--out", out_dir), ("--onnx", onnx)) if folder is not None]
    for option, folder in folders:
        check_output_folder(folder, option=option)
    if out_dir is not None and onnx is not None:  # neither folder inside the other
        check_apart(onnx, out_dir, option="--onnx", folder_option="--out")
        check_apart(out_dir, onnx, option="--out", folder_option="--onnx")
    if html is not None:
        for option, folder in folders:
            check_apart(html, folder, option="--html", folder_option=option)
        check_output_file(html, option="--html", force=force)
        check_precision(precision)
