"""The terminal side of `charlm perplexity --show / --breakdown` and `charlm neurons`: what they print.

Each character's background is its cost in bits on the scale of `surprisal.heat` (white: certain, dark
red: a uniform guess over the vocabulary or worse), the same colours as the HTML page; rich wraps the
text to the terminal and falls back to 256 or 16 colours where the terminal has fewer.
"""

from __future__ import annotations

from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from charlm.analysis.neurons import NeuronReport
from charlm.analysis.novelty import Novelty
from charlm.analysis.surprisal import Breakdown, Surprisal, heat
from charlm.dynamic.run import DynamicScore, figures

UNSCORED = Style(color="grey50", underline=True)
COPIED = Style(bold=True, underline=True)  # over its shade: a character in a span found in training
SPAN_SHOWN = 80  # characters of the longest copied span the novelty report quotes
DARK = 0.75  # from this fraction of the scale on, the shade is dark enough for light ink (as on the page)


def visible(char: str) -> str:
    """A character as it is shown: a newline as ↵ then the line break, other control characters as their symbol."""
    if char == "\n":
        return "↵\n"
    if len(char) > 1:  # a reserved symbol, shown by its name; a document's end also ends the line
        return char + ("\n" if char == "<eod>" else "")
    if ord(char) < 32:
        return chr(0x2400 + ord(char))
    return char


def shade(bits: float, scale: float) -> Style:
    ink = "#ffffff" if bits / scale > DARK else "#000000"
    return Style(color=ink, bgcolor="#{:02x}{:02x}{:02x}".format(*heat(bits / scale)))


def shaded_text(report: Surprisal, limit: int) -> Text:
    """The first `limit` characters, each on the background of its bits (bold underlined: copied)."""
    text = Text()
    scale = report.uniform_bits
    copied = set()
    for start, end in report.copied or ():
        copied.update(range(start, min(end, limit)))
    for i, (char, bits) in enumerate(report.display(limit)):
        shown = visible(char)
        style = UNSCORED if bits is None else shade(bits, scale)
        if i in copied:
            style = style + COPIED
        if shown.endswith("\n"):  # shade the mark, not the rest of the line
            text.append(shown[:-1], style)
            text.append("\n")
        else:
            text.append(shown, style)
    return text


def legend(report: Surprisal, limit: int) -> Text:
    scale = report.uniform_bits
    line = Text("bits: ")
    for k in range(9):
        bits = scale * k / 8
        line.append(f" {bits:.1f}{'+' if k == 8 else ''} ", shade(bits, scale))
    line.append(
        f"  (dark red: {scale:.2f} bits or more, a uniform guess over {len(report.chars_of_vocab):,} characters; "
    )
    line.append("underlined", UNSCORED)
    line.append(": not scored)")
    if report.copied is not None:
        shown = min(limit, report.text_chars)
        covered = sum(min(end, shown) - start for start, end in report.copied if start < shown)
        line.append("\n")
        line.append("bold underlined", COPIED)
        line.append(
            f": spans of {report.copied_min}+ characters found in the training split "
            f"({len(report.copied):,} spans, {covered / max(1, shown):.1%} of the text shown)"
        )
    total = report.text_chars
    if limit < total:
        line.append(f"\nshown: the first {limit:,} of {total:,} characters (--show-chars); the figures cover them all")
    return line


def breakdown_tables(breakdown: Breakdown) -> list[Table | Text]:
    """The bands (share of the text, mean bits, share of the loss) and the costliest characters."""
    shown: list[Table | Text] = []
    if breakdown.bands is None:
        shown.append(Text(f"note: {breakdown.note}"))
    else:
        bands = Table(title="where the loss comes from")
        for column in ("characters", "count", "share of text", "mean bits", "share of loss"):
            bands.add_column(column, justify="left" if column == "characters" else "right")
        for band in breakdown.bands:
            mean = "–" if band.mean_bits is None else f"{band.mean_bits:.2f}"
            bands.add_row(
                band.description, f"{band.chars:,}", f"{band.share_of_text:.1%}", mean, f"{band.share_of_loss:.1%}"
            )
        shown.append(bands)
    costly = Table(title=f"the {len(breakdown.costly)} costliest characters")
    for column in ("character", "count", "in training", "mean bits", "share of loss"):
        costly.add_column(column, justify="left" if column == "character" else "right")
    for c in breakdown.costly:
        train = "?" if c.train_count is None else f"{c.train_count:,}"
        costly.add_row(repr(c.char), f"{c.count:,}", train, f"{c.mean_bits:.2f}", f"{c.share_of_loss:.1%}")
    shown.append(costly)
    return shown


def print_scores(out: Console, what: str, result: dict) -> None:
    """The lines of `charlm perplexity`: what was scored, then nats/char, bits/char, perplexity."""
    out.print(f"{what}: {result['chars']:,} chars", markup=False)
    out.print(
        f"nats/char  {result['nats_per_char']:.4f}\nbits/char  {result['bits_per_char']:.4f}\n"
        f"perplexity {result['perplexity']:.4f}"
    )
    if result.get("unknown_share") is not None:
        out.print(unknown_line(result["unknown_share"]), markup=False)


def unknown_line(share: float) -> str:
    """The line beside the figures of a model with <unk>: its figure covers rare characters as one easy symbol."""
    return f"unknown    {share:.2%} of the text is <unk> (scored as one symbol: the perplexity looks better than it is)"


def print_surprisal(out: Console, report: Surprisal, breakdown: Breakdown, *, show: bool, limit: int) -> None:
    """The scores, with --show the shaded text and its legend, then the breakdown tables."""
    print_scores(
        out, f"{report.run_dir} ({report.checkpoint}, epoch {report.epoch}) on {report.source}", report.figures()
    )
    if show:
        out.print(shaded_text(report, limit), soft_wrap=False, markup=False)
        out.print(legend(report, limit), soft_wrap=False)
    for table in breakdown_tables(breakdown):
        out.print(table)


def novelty_text(report: Novelty) -> Text:
    """generate --novelty's lines after a sample: the longest span found in training, the shares found."""
    line = Text("novelty: ", style="bold")
    if report.longest == 0:
        line.append("no character of the sample occurs in the training split\n")
    else:
        quoted = "".join(visible(c).rstrip("\n") for c in report.longest_text[:SPAN_SHOWN])
        more = "…" if report.longest > SPAN_SHOWN else ""
        line.append(f"longest span found in training {report.longest:,} characters", style="bold")
        line.append(f" (line {report.train_line:,} of the training split): ")
        line.append(f"{quoted}{more}\n", style="italic")
    shares = ", ".join(f"{k} chars {'–' if share is None else f'{share:.1%}'}" for k, share in report.shares.items())
    line.append(f"         substrings found in training: {shares}")
    if report.training_item is not None:
        line.append(f"\n         a whole training item: {'yes' if report.training_item else 'no'}")
    return line


def neurons_table(report: NeuronReport) -> Table:
    """For each feature its top units and their correlation, strongest first."""
    table = Table(title=f"units that track each feature ({report.chars:,} chars, {len(report.units):,} units)")
    for column in ("feature", "rank", "unit", "r"):
        table.add_column(column, justify="right" if column in ("rank", "r") else "left")
    for ranked in report.ranked:
        if not ranked.top:
            table.add_row(ranked.feature.name, "", "constant on this text: nothing to rank", "")
        for rank, (unit, r) in enumerate(ranked.top, 1):
            table.add_row(ranked.feature.name if rank == 1 else "", str(rank), unit.label, f"{r:+.3f}")
        table.add_section()
    return table


def print_dynamic(out: Console, folder, checkpoint: str, result: DynamicScore) -> None:
    """`charlm perplexity --dynamic`: the static and dynamic figures side by side, and what dynamic evaluation used."""
    o = result.options
    out.print(
        f"{folder} ({checkpoint}) on {result.source}: {result.dynamic.chars:,} chars in one stream\n"
        f"dynamic evaluation: {o.method}, lr {o.lr:g}, decay {o.decay:g} ({result.chosen_by}), {result.precision}",
        markup=False,
    )
    rows = [figures(result.static), figures(result.dynamic)]
    out.print(f"{'':11}{'static':>10}{'dynamic':>10}")
    for key, name in (("nats_per_char", "nats/char"), ("bits_per_char", "bits/char"), ("perplexity", "perplexity")):
        out.print(f"{name:11}{rows[0][key]:10.4f}{rows[1][key]:10.4f}")
    out.print(f"{'seconds':11}{result.static_seconds:10.1f}{result.dynamic_seconds:10.1f}")
    gain = rows[0]["bits_per_char"] - rows[1]["bits_per_char"]
    out.print(f"dynamic evaluation {'saves' if gain >= 0 else 'costs'} {abs(gain):.4f} bits/char")
