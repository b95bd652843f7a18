"""Training in a Jupyter notebook: `NotebookReporter` shows a run as ONE output that updates in place (the run,
a progress bar, the latest epoch, the best so far, the latest previews), not a line per epoch.

`charlm.train(config)` uses it by itself when it runs in a Jupyter kernel; anywhere else the API stays silent
unless given a reporter. It updates through IPython's display handles (no widgets needed), at most every
REFRESH_SECONDS, and reads the loss (a host sync) only then.
"""

from __future__ import annotations

import contextlib
import html
import math
import sys
import time

from charlm.events import EvalRecord, RunStart, RunSummary
from charlm.units import perplexity


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (not in a terminal IPython, not in plain Python)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class NotebookReporter:
    """An events.Reporter drawing one HTML block, updated in place."""

    REFRESH_SECONDS = 0.5

    def __init__(self, display=None):
        from IPython.display import display as ipython_display

        self.display = display or ipython_display
        self.handle = None
        self.parts = {"run": "", "bar": "", "epoch": "", "best": "", "previews": "", "warnings": ""}
        self.epochs = self.epoch = self.num_batches = 0
        self.best: float | None = None
        self.last_refresh = 0.0

    def download(self, filename: str, total: int | None):
        self._set("bar", f"downloading {html.escape(filename)}")
        return contextlib.nullcontext(None)

    def start(self, event: RunStart) -> None:
        self.epochs = event.epochs
        self._set(
            "run",
            f"<b>charlm</b> {html.escape(event.corpus)}: vocab {event.vocab_size:,} · {event.parameters:,} parameters"
            f" · {event.batches_per_epoch} batches/epoch · {html.escape(event.device)} · precision "
            f"{html.escape(event.precision)} · run folder <code>{html.escape(str(event.run_dir))}</code>",
        )

    def warn(self, message: str) -> None:
        self._set("warnings", self.parts["warnings"] + f"<div>warning: {html.escape(message)}</div>")

    def epoch_start(self, epoch: int, num_batches: int, done: int = 0) -> None:
        self.epoch, self.num_batches = epoch, num_batches
        self._bar(done, None)

    def batch(self, done: int, loss) -> None:
        now = time.perf_counter()
        if now - self.last_refresh >= self.REFRESH_SECONDS:
            self.last_refresh = now
            self._bar(done, loss.item())

    def epoch_end(self, record: EvalRecord) -> None:
        loss = record.val_loss if record.val_loss is not None else record.train_loss
        self.best = loss if self.best is None or loss < self.best else self.best
        line = f"epoch {record.epochs_done:g}: train ppl {record.train_ppl:.3f}"
        if record.val_ppl is not None:
            line += f", val ppl {record.val_ppl:.3f} ({record.val_bpc:.3f} bits/char)"
        line += f" · {record.chars_per_s:,.0f} chars/s"
        self.parts["epoch"] = f"<div>{html.escape(line)}</div>"
        self._set("best", f"<div>best perplexity so far {perplexity(self.best):.3f}</div>")

    def preview(self, epoch: int, samples: list[str]) -> None:
        shown = "".join(f"<div><code>{html.escape(s)}</code></div>" for s in samples)
        self._set("previews", f"<div>previews after epoch {epoch}:</div>{shown}")

    def finish(self, summary: RunSummary) -> None:
        what = "val" if summary.monitored == "val_loss" else "train"
        loss = summary.best_loss
        self._set(
            "bar",
            f"<b>done</b>: best {what} perplexity {perplexity(loss):.3f} ({loss / math.log(2):.3f} bits/char) at "
            f"epoch {summary.best_epoch}, {summary.seconds:.1f} s",
        )

    def _bar(self, done: int, loss: float | None) -> None:
        shown = "…" if loss is None else f"{loss:.3f}"
        self._set(
            "bar",
            f'<progress value="{done}" max="{max(self.num_batches, 1)}"></progress> epoch {self.epoch}/{self.epochs}'
            f" · batch {done}/{self.num_batches} · loss {shown}",
        )

    def _set(self, part: str, value: str) -> None:
        from IPython.display import HTML

        self.parts[part] = value
        page = HTML(
            '<div class="charlm-train">' + "".join(f"<div>{v}</div>" for v in self.parts.values() if v) + "</div>"
        )
        if self.handle is None:
            self.handle = self.display(page, display_id=True)
        else:
            self.handle.update(page)
