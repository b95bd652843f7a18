"""`charlm perplexity`: score a run or model folder on a split, a file or a text; --show, --html and --breakdown
look at each character."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.common import Device, ModelDir, RunDir, Which, model_source
from charlm.errors import UsageError

if TYPE_CHECKING:
    from charlm.evaluate import TextSource


# the options of `charlm perplexity` (their help is the CLI's)
Split = Annotated[Optional[str], typer.Option(help="train | val | test (default: val)")]
ScoreFile = Annotated[Optional[Path], typer.Option("--file", "-f", help="Score this text file, not a split.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Text = Annotated[
    Optional[str], typer.Option("--text", "-t", help="Score this string (read as one stream), not a split.")
]
Show = Annotated[bool, typer.Option("--show", help="Print the text shaded by each character's bits.")]
Html = Annotated[
    Optional[Path],
    typer.Option("--html", help="Write a page: the shaded text, bits and top-5 predictions on hover."),
]
Breakdown = Annotated[
    bool,
    typer.Option(
        "--breakdown",
        help="The loss by characters unseen / rare / common in training, the costliest ones "
        '(implied by --show and --html; in --json as "breakdown").',
    ),
]
ShowChars = Annotated[int, typer.Option(help="Characters shown by --show and --html (the figures cover all).")]
Force = Annotated[bool, typer.Option("--force", help="--html: replace an existing file that charlm did not write.")]


@cli.app.command(epilog="Example: charlm perplexity --split val --show")
def perplexity(
    run_dir: RunDir = None,
    split: Split = None,
    file: ScoreFile = None,
    as_json: AsJson = False,
    checkpoint: Which = "best",
    device: Device = "auto",
    text: Text = None,
    show: Show = False,
    html: Html = None,
    breakdown: Breakdown = False,
    show_chars: ShowChars = 5000,
    model_dir: ModelDir = None,
    force: Force = False,
) -> None:
    """Score a run (or an exported model) on a split of its corpus, a file or a string: nats/char, bits/char, ppl.

    --show, --html and --breakdown also say where the loss comes from, character by character.
    """
    from charlm.evaluate import TextSource, score_run
    from charlm.runtime.device import pick_device
    from charlm.store.model_dir import resolve
    from charlm.store.targets import check_output_file

    if html is not None:  # before the model is read: a refused page costs nothing
        check_output_file(html, option="--html", force=force, reads=(file,))
    folder = resolve(model_source(run_dir, model_dir))
    source = TextSource(split=split, file=file, text=text)
    if show or html or breakdown:
        return _surprisal(
            folder,
            checkpoint,
            source,
            device=pick_device(device),
            as_json=as_json,
            show=show,
            html=html,
            show_chars=show_chars,
            force=force,
        )
    from charlm.ui.report import scoring_bar

    with scoring_bar(cli.err) as progress:  # on stderr: stdout keeps only the result
        result, saved = score_run(folder, checkpoint, source, device=pick_device(device), progress=progress)
    if as_json:
        keys = ("nats_per_char", "bits_per_char", "perplexity", "chars", "unknown_share")
        print(json.dumps({k: result[k] for k in keys if k in result}))
        return
    epoch = saved.train_state.epoch
    cli.out.print(f"{folder} ({checkpoint}, epoch {epoch}) on {result['source']}: {result['chars']:,} chars")
    cli.out.print(
        f"nats/char  {result['nats_per_char']:.4f}\nbits/char  {result['bits_per_char']:.4f}\n"
        f"perplexity {result['perplexity']:.4f}"
    )
    if "unknown_share" in result:  # a model with <unk>: its figure covers rare characters as one easy symbol
        from charlm.ui.views import unknown_line

        cli.out.print(unknown_line(result["unknown_share"]), markup=False)


def _surprisal(
    folder: Path,
    checkpoint: str,
    source: TextSource,
    *,
    device,
    as_json: bool,
    show: bool,
    html: Optional[Path],
    show_chars: int,
    force: bool,
) -> None:
    from charlm.analysis import surprisal
    from charlm.ui import pages, views

    if show and as_json:
        raise UsageError("--show and --json both print to stdout: pass one of them")
    if show_chars < 1:
        raise UsageError(f"--show-chars must be >= 1, got {show_chars}")
    report = surprisal.analyse(
        folder,
        checkpoint,
        source,
        device=device,
        predictions=html is not None,
        keep=show_chars if show or html is not None else 0,
    )  # what is shown, no more
    parts = report.breakdown()
    if html is not None:
        pages.write(html, pages.render("surprisal", surprisal.page_data(report, parts, show_chars)), force=force)
    if as_json:
        print(json.dumps({**report.figures(), "breakdown": parts.to_dict()}, ensure_ascii=False))
        return
    views.print_surprisal(cli.out, report, parts, show=show, limit=show_chars)
    if html is not None:
        cli.out.print(f"wrote {html}", markup=False)
