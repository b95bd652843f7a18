"""`charlm perplexity`: score a run or model folder on a split, a file or a text; --show, --html and --breakdown
look at each character."""

from __future__ import annotations

from dataclasses import dataclass
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
ShowChars = Annotated[
    int, typer.Option(help="Characters shown by --show and --html, searched by --novelty (the figures cover all).")
]
Novelty = Annotated[
    bool,
    typer.Option(
        "--novelty",
        help="--show and --html also mark the spans found in the training split (at least --novelty-min-span "
        "characters long), --json lists them (of the first --show-chars characters). Needs charlm[novelty].",
    ),
]
MIN_SPAN = 16  # analysis.novelty.MIN_SPAN, written here since importing it loads numpy (--help stays light)
NoveltyMinSpan = Annotated[int, typer.Option(help="With --novelty: the shortest span marked, in characters.")]
Force = Annotated[bool, typer.Option("--force", help="--html: replace an existing file that charlm did not write.")]
Dynamic = Annotated[
    bool,
    typer.Option(
        "--dynamic",
        help="Dynamic evaluation: one update after each scored segment, the text read in one stream; "
        "reports the static figure beside it (with --show/--html: the dynamic bits).",
    ),
]
DynamicMethod = Annotated[str, typer.Option("--dynamic-method", help="sgd | rms (steps scaled by --dynamic-stats).")]
DynamicLr = Annotated[Optional[float], typer.Option("--dynamic-lr", help="Step size (default: tuned, else measured).")]
DynamicDecay = Annotated[
    Optional[float], typer.Option("--dynamic-decay", help="Pull back toward the trained weights per step, 0-1.")
]
DynamicTune = Annotated[
    bool, typer.Option("--dynamic-tune", help="Choose lr and decay on the val split's start; kept in the run folder.")
]
Mix = Annotated[
    Optional[bool],
    typer.Option(
        "--mix/--no-mix",
        help="Also score with the model mixed with counts of its training text (and, with --dynamic, of the text "
        "read so far), fitted on the val split on first use and kept. Default: the mix where the run can have one "
        "(else a note), without --dynamic; --no-mix: the network alone.",
    ),
]
DynamicStats = Annotated[
    bool,
    typer.Option("--dynamic-stats", help="Measure the train split's gradient statistics (rms) again and keep them."),
]


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
    dynamic: Dynamic = False,
    dynamic_method: DynamicMethod = "sgd",
    dynamic_lr: DynamicLr = None,
    dynamic_decay: DynamicDecay = None,
    dynamic_tune: DynamicTune = False,
    dynamic_stats: DynamicStats = False,
    novelty: Novelty = False,
    novelty_min_span: NoveltyMinSpan = MIN_SPAN,
    mix: Mix = None,
) -> None:
    """Score a run (or an exported model) on a split of its corpus, a file or a string: nats/char, bits/char, ppl.

    --show, --html and --breakdown also say where the loss comes from, character by character.
    """
    from charlm.evaluate import TextSource
    from charlm.runtime.device import pick_device
    from charlm.store.model_dir import resolve

    _check_novelty(novelty, novelty_min_span, shown=show or html is not None or as_json)
    _check_html(html, force=force, file=file)
    folder = resolve(model_source(run_dir, model_dir))
    source = TextSource(split=split, file=file, text=text)
    adapting = _dynamic_options(dynamic, dynamic_method, dynamic_lr, dynamic_decay, dynamic_tune, dynamic_stats)
    where = pick_device(device)
    if dynamic_stats and _measure_stats(folder, checkpoint, device=where, alone=not dynamic):
        return
    views = Views(show, html, breakdown, novelty, show_chars, force, novelty_min_span)
    what = (folder, checkpoint, source, adapting, views)
    if mix is None and adapting is None and not views.asked:
        return _print_mixed_if_it_can(*what, device=where, as_json=as_json)
    _score(*what, device=where, as_json=as_json, mix=bool(mix))


@dataclass(frozen=True)
class Views:
    """The views asked for: --show, --html, --breakdown, --novelty and what shapes them."""

    show: bool
    html: Optional[Path]
    breakdown: bool
    novelty: bool
    show_chars: int
    force: bool
    novelty_min_span: int

    @property
    def asked(self) -> bool:
        return self.show or self.html is not None or self.breakdown or self.novelty


def _score(folder: Path, checkpoint: str, source, adapting, views: Views, *, device, as_json: bool, mix: bool):
    """Score and print: the views, the mix's figures, dynamic evaluation's, or the network's."""
    if views.asked:
        losses_of = _losses_of(folder, checkpoint, adapting, device=device, mix=mix)
        return _surprisal(folder, checkpoint, source, views, device=device, as_json=as_json, losses_of=losses_of)
    if mix:
        return _print_mixed(folder, checkpoint, source, adapting, device=device, as_json=as_json)
    if adapting is not None:
        return _print_dynamic(folder, checkpoint, source, adapting, device=device, as_json=as_json)
    _print_static(folder, checkpoint, source, device=device, as_json=as_json)


def _surprisal(
    folder: Path, checkpoint: str, source: TextSource, asked: Views, *, device, as_json: bool, losses_of=None
) -> None:
    from charlm.analysis import surprisal
    from charlm.ui import pages, views

    show, html, show_chars, force = asked.show, asked.html, asked.show_chars, asked.force
    copied_min = asked.novelty_min_span if asked.novelty else None

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
        keep=show_chars if show or html is not None or copied_min is not None else 0,
        losses_of=losses_of,
        copied_min=copied_min,
        say=lambda line: cli.err.print(line, markup=False),
    )  # what is shown, no more
    parts = report.breakdown()
    if html is not None:
        pages.write(html, pages.render("surprisal", surprisal.page_data(report, parts, show_chars)), force=force)
    if as_json:
        copied = {} if copied_min is None else {"novelty": {"min_span": copied_min, "spans": report.copied}}
        cli.print_json({**report.figures(), "breakdown": parts.to_dict(), **copied})
        return
    views.print_surprisal(cli.out, report, parts, show=show, limit=show_chars)
    if html is not None:
        cli.out.print(f"wrote {html}", markup=False)


def _check_novelty(novelty: bool, min_span: int, *, shown: bool) -> None:
    if novelty and not shown:
        raise UsageError("--novelty marks copied spans in --show or --html, or lists them in --json: add one of them")
    if min_span < 1:
        raise UsageError(f"--novelty-min-span must be >= 1, got {min_span}")


def _print_static(folder: Path, checkpoint: str, source: TextSource, *, device, as_json: bool) -> None:
    from charlm.evaluate import score_run
    from charlm.ui.report import scoring_bar

    with scoring_bar(cli.err) as progress:  # on stderr: stdout keeps only the result
        result, saved = score_run(folder, checkpoint, source, device=device, progress=progress)
    if as_json:
        keys = ("nats_per_char", "bits_per_char", "perplexity", "chars", "unknown_share")
        cli.print_json({k: result[k] for k in keys if k in result})
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


def _dynamic_options(dynamic: bool, method: str, lr, decay, tune: bool, stats: bool):
    """The DynamicOptions asked for (None without --dynamic); a --dynamic-* flag without --dynamic is refused."""
    from charlm.dynamic.adapter import DynamicOptions

    if not dynamic:
        given = [f for f, v in (("--dynamic-lr", lr), ("--dynamic-decay", decay)) if v is not None]
        given += ["--dynamic-tune"] * tune + ["--dynamic-method"] * (method != "sgd")
        if given:
            raise UsageError(f"{given[0]} sets up dynamic evaluation: add --dynamic")
        return None
    return DynamicOptions(method, lr, decay, tune=tune)


def _losses_of(folder: Path, checkpoint: str, options, *, device, mix: bool):
    """What scores the text for the views: the mix's, dynamic evaluation's, or None (evaluate's protocol)."""
    if mix:
        from charlm.counts.scoring import MixedLosses

        say = lambda line: cli.err.print(line, markup=False)  # noqa: E731
        return MixedLosses(folder, checkpoint, device=device, dynamic=options, say=say)
    if options is None:
        return None
    from charlm.dynamic.run import DynamicLosses

    return DynamicLosses(folder, checkpoint, options, device=device)


def _measure_stats(folder: Path, checkpoint: str, *, device, alone: bool) -> bool:
    """--dynamic-stats: measure and keep them; True when that is all there is to do (`alone`: no --dynamic)."""
    from charlm.dynamic.run import keep_stats

    cli.err.print(keep_stats(folder, checkpoint, device=device), markup=False)
    return alone


def _check_html(html: Optional[Path], *, force: bool, file: Optional[Path]) -> None:
    """Before the model is read: a refused page costs nothing."""
    from charlm.store.targets import check_output_file

    if html is not None:
        check_output_file(html, option="--html", force=force, reads=(file,))


def _print_dynamic(folder: Path, checkpoint: str, source: TextSource, options, *, device, as_json: bool):
    from charlm.dynamic.run import score_dynamic
    from charlm.ui.report import scoring_bar

    with scoring_bar(cli.err) as progress:
        result = score_dynamic(folder, checkpoint, source, options, device=device, progress=progress)
    for note in result.notes:
        cli.err.print(note, markup=False)
    if as_json:
        cli.print_json(result.to_dict())
        return
    from charlm.ui.views import print_dynamic

    print_dynamic(cli.out, folder, checkpoint, result)


def _print_mixed(folder: Path, checkpoint: str, source: TextSource, options, *, device, as_json: bool) -> None:
    from charlm.counts.scoring import score_mixed
    from charlm.ui.report import scoring_bar

    say = lambda line: cli.err.print(line, markup=False)  # noqa: E731
    with scoring_bar(cli.err) as progress:  # on stderr: stdout keeps only the result
        result = score_mixed(folder, checkpoint, source, device=device, dynamic=options, say=say, progress=progress)
    figures = result.to_dict()
    if as_json:
        cli.print_json(figures)
        return
    mixed = figures["mix"]
    cli.out.print(
        f"{folder} ({checkpoint}) on {result.source}: {figures['chars']:,} chars, {mixed['reading']} reading",
        markup=False,
    )
    cli.out.print(f"{'':11}{'network':>10}{'mix':>10}")
    for key, name in (("nats_per_char", "nats/char"), ("bits_per_char", "bits/char"), ("perplexity", "perplexity")):
        cli.out.print(f"{name:11}{figures[key]:>10.4f}{mixed[key]:>10.4f}")
    cli.out.print(f"the mix is {mixed['gain']:.1%} below the network alone", markup=False)
    if "unknown_share" in figures:
        from charlm.ui.views import unknown_line

        cli.out.print(unknown_line(figures["unknown_share"]), markup=False)


def _print_mixed_if_it_can(folder: Path, checkpoint: str, source, adapting, views: Views, *, device, as_json: bool):
    """The default: the figures of the mix beside the network's where this run can have a mix; where it
    cannot, the network's alone and a note saying why."""
    from charlm.counts.kept import NoMix

    try:
        _print_mixed(folder, checkpoint, source, adapting, device=device, as_json=as_json)
    except NoMix as e:
        cli.err.print(f"note: scored by the network alone: {e.reason} (--no-mix skips the mix)", markup=False)
        _score(folder, checkpoint, source, adapting, views, device=device, as_json=as_json, mix=False)
