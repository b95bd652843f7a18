"""Rich terminal output for training: a progress bar per epoch, one line per epoch, previews.

RichReporter implements events.Reporter; it knows the events, never the trainer.
"""

from __future__ import annotations

import contextlib
import math
import time

from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from charlm.events import EvalRecord, RunStart, RunSummary
from charlm.store.run_info import sparkline
from charlm.units import perplexity


@contextlib.contextmanager
def download_bar(console: Console, filename: str, total: int | None):
    with Progress(
        TextColumn("downloading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(filename, total=total)
        yield lambda n: progress.advance(task, n)
    console.print(f"downloaded {filename}", highlight=False)


# off a terminal (a log file, a job's output) a long scoring says how far it is on a line of its own this often:
# dynamic evaluation of 50 MB takes about 90 minutes, and nothing else would show it is alive or when it ends
PROGRESS_LINE_SECONDS = 60.0


@contextlib.contextmanager
def scoring_bar(console: Console):
    """A callback(done, total) drawing a progress bar while a long text is scored; off a terminal, a line every
    PROGRESS_LINE_SECONDS instead (progress_lines)."""
    if not console.is_terminal:  # no bar at all: rich before 14.3 prints a blank line when a disabled one stops
        yield progress_lines(console)
        return
    with Progress(
        TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task("score", total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def progress_lines(console: Console):
    """A callback(done, total) that prints "scoring: D of T chars (P%), R chars/s, about X left" once
    PROGRESS_LINE_SECONDS have passed since the start or the last line (a short scoring prints nothing)."""
    started = last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_LINE_SECONDS or done <= 0 or now <= started:
            return
        last, rate = now, done / (now - started)
        left = max(total - done, 0) / rate
        console.print(
            f"scoring: {done:,} of {total:,} chars ({done / max(total, 1):.0%}), {rate:,.0f} chars/s, "
            f"about {_duration(left)} left",
            markup=False,
        )

    return report


def _duration(seconds: float) -> str:
    """1 h 20 min, 4 min 10 s, 12 s."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


class RichReporter:
    REFRESH_SECONDS = 0.5  # how often the bar reads the loss (a host sync) and redraws

    def __init__(self, console: Console | None = None, errors: Console | None = None, quiet: bool = False):
        """`console` for results, `errors` (stderr) for warnings; quiet: only the final summary line."""
        self.console = console or Console(highlight=False)
        self.errors = errors or Console(stderr=True, highlight=False)
        self.quiet = quiet
        self.progress: Progress | None = None
        self.chars_per_batch = 0
        self.epochs = 0
        self.num_batches = 0

    def download(self, filename: str, total: int | None):
        return download_bar(self.console, filename, total)

    def start(self, event: RunStart) -> None:
        self.epochs = event.epochs
        self.chars_per_batch = event.chars_per_batch
        if self.quiet:
            return
        self.console.print(
            f"[bold]charlm[/] {event.corpus}: vocab {event.vocab_size:,} · train {event.train_chars:,} / "
            f"val {event.val_chars:,} / test {event.test_chars:,} chars · {event.parameters:,} parameters · "
            f"{event.batches_per_epoch} batches/epoch · {event.device}\nrun folder {event.run_dir}"
        )
        self.console.print(f"precision {event.precision} ({event.precision_reason})", markup=False)
        if event.init_from:
            self.console.print(f"weights from {event.init_from} ({event.new_chars:,} new characters)", markup=False)
        if event.resumed_at:
            epoch, batch = event.resumed_at
            self.console.print(f"resuming after {epoch} epochs and {batch} batches")

    def warn(self, message: str) -> None:
        self.errors.print(f"[yellow]warning:[/] {message}")

    def epoch_start(self, epoch: int, num_batches: int, done: int = 0) -> None:
        self.num_batches = num_batches
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("train", total=num_batches, completed=done, speed="", loss="…")
        self.first_batch = done
        if self.console.is_terminal and not self.quiet:  # a bar in a log file is noise
            self.progress.start()
        self.epoch_started = self.last_refresh = time.perf_counter()

    def batch(self, done: int, loss) -> None:
        now = time.perf_counter()
        if now - self.last_refresh < self.REFRESH_SECONDS:
            self.progress.update(self.task, completed=done)
            return
        self.last_refresh = now
        speed = (done - self.first_batch) * self.chars_per_batch / max(now - self.epoch_started, 1e-9)
        self.progress.update(self.task, completed=done, loss=f"{loss.item():.3f}", speed=f"{speed:,.0f} chars/s")

    def epoch_end(self, record: EvalRecord) -> None:
        if self.progress is not None and self.progress.live.is_started:
            self.progress.stop()
        where = f"epoch {record.epoch:>4}"
        if record.batch != self.num_batches:  # an eval inside the epoch
            where = f"epoch {record.epochs_done:>7.2f}"
        line = f"{where}  train ppl {record.train_ppl:9.3f}"
        if record.val_ppl is not None:
            line += f"  val ppl {record.val_ppl:9.3f}  val bpc {record.val_bpc:.3f}"
        line += f"  |g| {record.grad_norm:.3g}  {record.seconds:.1f} s  {record.chars_per_s:,.0f} chars/s"
        if not self.quiet:
            self.console.print(line)

    def preview(self, epoch: int, samples: list[str]) -> None:
        for sample in samples if not self.quiet else []:
            self.console.print(f" - {sample}".replace("\n", "↵"), markup=False)  # one line per preview

    def finish(self, summary: RunSummary) -> None:
        loss = summary.best_loss
        what = "val" if summary.monitored == "val_loss" else "train"
        if self.quiet:
            self.console.print(
                f"best {what} perplexity {perplexity(loss):.3f} ({loss / math.log(2):.3f} bits/char) "
                f"at epoch {summary.best_epoch}, {summary.seconds:.1f} s: {summary.run_dir}",
                markup=False,
            )
            return
        last = summary.last
        stopped = {"time_budget": " (time budget reached)", "early_stopping": " (early stopping)"}
        epochs = f"{last.get('epochs_done', summary.epochs):g}"
        lines = [
            f"best {what} perplexity [bold]{perplexity(loss):.3f}[/] ({loss / math.log(2):.3f} bits/char) "
            f"at epoch {summary.best_epoch}",
            f"{epochs} epochs{stopped.get(summary.stopped, '')} in {summary.seconds:.1f} s",
            f"{summary.train_seconds:.1f} s of training · {last.get('chars_per_s', 0):,.0f} chars/s",
            f"{what} loss by epoch {sparkline(summary.losses)}",
            f"run folder {summary.run_dir}",
        ]
        final = summary.final
        for split in ("val", "test"):
            if f"{split}_loss" in final:
                lines.insert(
                    1,
                    f"{split} (whole split, best checkpoint): {final[f'{split}_loss']:.4f} nats/char · "
                    f"{final[f'{split}_bpc']:.4f} bits/char · ppl {final[f'{split}_ppl']:.3f}",
                )
        # a log file gets the default 80 columns: let the panel be as wide as its longest line
        width = max(len(line) for line in lines) + 4
        self.console.print(Panel("\n".join(lines), title="charlm train: done", expand=False), width=max(width, 60))
