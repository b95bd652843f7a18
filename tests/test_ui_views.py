"""views: the terminal rendering of surprisal (shades, legend, tables) and of the neurons ranking."""

from __future__ import annotations

import math

from helpers import surprisal_of
from rich.console import Console

from charlm.analysis.surprisal import Surprisal
from charlm.ui.views import breakdown_tables, legend, shaded_text, visible


def report() -> Surprisal:
    chars = list("\nabc")
    return surprisal_of(
        chars, [1, 2, 0, 3, 1], [0.0, 1.0, 2.0, 9.0], math.log(2), [3, 0, 9, 1], source="--text", epoch=1
    )


def test_each_character_is_shaded_by_its_bits():
    # the text "ab\nca": b costs 0 bits, \n 1, c 2 (the top of the scale: log2 of 4 characters), the last a 9
    text = shaded_text(report(), 10)
    assert text.plain == "ab↵\nca"
    spans = [(text.plain[span.start : span.end], span.style) for span in text.spans]
    assert [shown for shown, _ in spans] == ["a", "b", "↵", "c", "a"]  # the line break itself is not shaded
    first, zero, one, two, nine = (style for _, style in spans)
    assert first.underline and first.bgcolor is None  # the first character is not scored
    assert zero.bgcolor.triplet.hex == "#ffffff"
    assert one.bgcolor.triplet.blue > two.bgcolor.triplet.blue  # costlier is darker
    assert two.bgcolor == nine.bgcolor  # the scale stops at a uniform guess
    assert zero.color.triplet.hex == "#000000" and two.color.triplet.hex == "#ffffff"  # ink stays readable


def test_legend_and_tables_render():
    r = report()
    console = Console(width=100, record=True, color_system=None)
    console.print(legend(r, 3))
    for table in breakdown_tables(r.breakdown()):
        console.print(table)
    printed = console.export_text()
    assert " 2.0+ " in printed and "2.00 bits or more" in printed  # log2(4) = 2 bits: a uniform guess
    assert "the first 3 of 5 characters" in printed
    assert "unseen (0 in training)" in printed and "'\\n'" in printed


def test_visible():
    assert visible("\n") == "↵\n" and visible("\t") == "␉" and visible("x") == "x"


def test_copied_characters_are_marked_over_their_shade_and_named_in_the_legend():
    from dataclasses import replace

    from charlm.ui.views import COPIED

    r = replace(report(), copied=[(1, 3)], copied_min=2)
    text = shaded_text(r, 10)
    styles = [span.style for span in text.spans]  # a, b, ↵, c, a
    assert [bool(s.bold and s.underline) for s in styles] == [False, True, True, False, False]
    assert styles[1].bgcolor == shaded_text(report(), 10).spans[1].style.bgcolor  # the shade stays under the mark
    console = Console(width=200, record=True, color_system=None)
    console.print(legend(r, 10))
    assert "spans of 2+ characters found in the training split (1 spans, 40.0% of the text shown)" in (
        console.export_text()
    )
    assert COPIED.bold and COPIED.underline
    console = Console(width=200, record=True, color_system=None)
    console.print(legend(report(), 10))
    assert "training split" not in console.export_text()  # not asked: not mentioned


def test_the_novelty_report_of_a_sample():
    from charlm.analysis.novelty import Novelty
    from charlm.ui.views import SPAN_SHOWN, novelty_text

    report = Novelty(300, 200, "ab\n" * 66 + "ab", 4, 100, 12, {8: 1.0, 16: 0.5, 32: None}, True)
    shown = novelty_text(report).plain
    assert "longest span found in training 200 characters (line 12 of the training split): ab↵ab↵" in shown
    assert shown.count("↵") == SPAN_SHOWN // 3 and "…" in shown and "\nab" not in shown  # one line, cut
    assert "8 chars 100.0%, 16 chars 50.0%, 32 chars –" in shown and "a whole training item: yes" in shown
    nothing = novelty_text(Novelty(5, 0, "", None, None, None, {8: None, 16: None, 32: None})).plain
    assert "no character of the sample occurs in the training split" in nothing and "item" not in nothing


def test_a_reserved_symbol_is_shown_by_its_name():
    assert visible("<eod>") == "<eod>\n"  # a document's end ends the line
    assert visible("<unk>") == "<unk>"
