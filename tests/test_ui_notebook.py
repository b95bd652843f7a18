"""NotebookReporter: a run as one output updated in place, through a display handle; in_notebook."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("IPython", reason="needs IPython (the dev extra's ipykernel brings it)")

from charlm.ui.notebook import NotebookReporter, in_notebook  # noqa: E402


class Handle:
    def __init__(self, shown):
        self.shown = shown

    def update(self, page):
        self.shown.append(page.data)


def test_one_display_then_updates_in_place(monkeypatch):
    shown, calls = [], []

    def display(page, display_id=False):
        calls.append(display_id)
        shown.append(page.data)
        return Handle(shown)

    reporter = NotebookReporter(display=display)
    reporter.epoch_start(1, 10)
    reporter.last_refresh = -1e9  # the next batch refreshes
    reporter.batch(3, torch.tensor(2.5))
    reporter.preview(1, ["hello <world>"])
    assert calls == [True]  # one output, made once
    assert '<progress value="3" max="10">' in shown[-1] and "loss 2.500" in shown[-1]
    assert "hello &lt;world&gt;" in shown[-1]  # the model's text is escaped


def test_the_loss_is_read_only_when_the_bar_refreshes():
    reporter = NotebookReporter(display=lambda page, display_id=False: Handle([]))
    reporter.epoch_start(1, 10)
    reporter.last_refresh = float("inf")  # refreshed just now

    class Unread:
        def item(self):
            raise AssertionError("read the loss between refreshes (a host sync per batch)")

    reporter.batch(4, Unread())


def test_not_in_a_notebook_here():
    assert in_notebook() is False
