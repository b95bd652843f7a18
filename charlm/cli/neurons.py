"""`charlm neurons`: which hidden units follow which features of the text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.common import Device, RunDir, Which
from charlm.errors import UsageError


@cli.app.command(epilog="Example: charlm neurons --split val --feature quote --feature '[A-Z]+:' --html neurons.html")
def neurons(
    run_dir: RunDir = None,
    split: Annotated[Optional[str], typer.Option(help="train | val | test (default: val)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read this text file, not a split.")] = None,
    feature: Annotated[
        Optional[list[str]],
        typer.Option(
            "--feature",
            help="quote | bracket | line-position | newline-next | vowel, or a regex (inside a match); "
            "repeat it (default: every built-in).",
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Units to report per feature.")] = 5,
    html: Annotated[
        Optional[Path],
        typer.Option("--html", help="Write a page: the text coloured by each top unit, the feature underlined."),
    ] = None,
    page_chars: Annotated[int, typer.Option(help="Characters of the text on the page.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    checkpoint: Which = "best",
    device: Device = "cpu",
    force: Annotated[
        bool, typer.Option("--force", help="--html: replace an existing file that charlm did not write.")
    ] = False,
) -> None:
    """Find the hidden units (every layer; h, and c for an LSTM) that track quotes, brackets, line length, ..."""
    from charlm.analysis import neurons as neurons_lib
    from charlm.evaluate import TextSource
    from charlm.runtime.device import pick_device
    from charlm.store.run_dir import RunDir
    from charlm.store.targets import check_output_file
    from charlm.ui import pages, views

    if top < 1 or page_chars < 1:
        raise UsageError(f"--top and --page-chars must be >= 1, got {top} and {page_chars}")
    if html is not None:
        check_output_file(html, option="--html", force=force, reads=(file,))
    folder = RunDir.resolve(run_dir).path
    report = neurons_lib.analyse(
        folder,
        checkpoint,
        TextSource(split=split, file=file),
        feature_specs=feature,
        top=top,
        page_chars=page_chars,
        device=pick_device(device),
    )
    if html is not None:
        pages.write(html, pages.render("neurons", neurons_lib.page_data(report)), force=force)
    if as_json:
        cli.print_json(report.to_dict())
        return
    cli.out.print(
        f"{folder} ({checkpoint}, epoch {report.epoch}, {report.model}) on {report.source}: "
        f"{report.chars:,} chars read in {report.seconds:.1f} s",
        markup=False,
    )
    cli.out.print(views.neurons_table(report))
    if html is not None:
        cli.out.print(f"wrote {html}", markup=False)
