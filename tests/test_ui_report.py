"""ui.report: off a terminal, a long scoring (perplexity, dynamic evaluation) says how far it is on a line of its
own every PROGRESS_LINE_SECONDS; on a terminal it draws its bar; a short one prints nothing."""

from __future__ import annotations

import io
import json

import pytest
from helpers import save_untrained_run
from rich.console import Console

from charlm.cli.main import main
from charlm.ui import report


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(report.time, "monotonic", fake)
    return fake


def lines_of(console_file: io.StringIO) -> list[str]:
    return console_file.getvalue().splitlines()


def test_a_line_every_interval_with_the_rate_and_the_time_left(clock):
    out = io.StringIO()
    progress = report.progress_lines(Console(file=out, force_terminal=False, width=200))
    total = 50_000_000
    for step in range(1, 11):
        clock.now += 30  # half an interval
        progress(step * 10_000, total)
    assert len(lines_of(out)) == 5  # one each PROGRESS_LINE_SECONDS, not per call
    first = lines_of(out)[0]
    assert (
        first == "scoring: 20,000 of 50,000,000 chars (0%), 333 chars/s, about 41 h 39 min left"
    )  # 49,980,000 chars at 333.3/s
    assert lines_of(out)[-1].startswith("scoring: 100,000 of 50,000,000 chars")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(12.4, "12 s"), (250, "4 min 10 s"), (4800, "1 h 20 min"), (0, "0 s"), (59.6, "1 min 0 s")]
)
def test_durations_read_as_people_say_them(seconds, shown):
    assert report._duration(seconds) == shown


def test_a_short_scoring_prints_nothing(clock):
    out = io.StringIO()
    progress = report.progress_lines(Console(file=out, force_terminal=False))
    for done in range(0, 1000, 100):
        clock.now += 1
        progress(done, 1000)
    assert out.getvalue() == ""


def test_on_a_terminal_the_bar_is_drawn_and_no_lines(clock):
    out = io.StringIO()
    with report.scoring_bar(Console(file=out, force_terminal=True, width=100)) as progress:
        for done in (10, 20):
            clock.now += 600
            progress(done, 100)
    assert "scoring:" not in out.getvalue()


@pytest.mark.parametrize("flags", [["--dynamic"], ["--dynamic", "--dynamic-method", "rms"], []])
def test_perplexity_off_a_terminal_writes_progress_lines_on_stderr_only(tmp_path, capsys, monkeypatch, flags):
    """Dynamic evaluation of 50 MB took 90 minutes with no sign outside a terminal: now a line on stderr every
    interval (set to 0 here), stdout keeping the one JSON object."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 60, encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", corpus)
    monkeypatch.setattr(report, "PROGRESS_LINE_SECONDS", 0.0)
    assert main(["perplexity", "--run-dir", str(run), "--file", str(corpus), "--json", *flags]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["source" if flags else "chars"]
    said = [line for line in err.splitlines() if line.startswith("scoring: ")]
    assert said and all(" chars (" in line and " left" in line for line in said)
    assert said[-1].split(" chars (")[0].endswith(f"of {len(corpus.read_text()) - 1:,}")  # the text's predictions
