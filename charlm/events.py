"""What the trainer tells the outside world: typed events and the Reporter protocol.

The trainer calls a Reporter; the terminal UI (report.RichReporter) is one, tests and benchmarks pass
their own. Neither side imports the other: both import this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # only for annotations: reading events needs no torch
    import torch


@dataclass
class RunStart:
    run_dir: str
    device: str
    corpus: str
    vocab_size: int
    train_chars: int
    val_chars: int
    test_chars: int
    parameters: int
    batches_per_epoch: int
    epochs: int
    chars_per_batch: int
    resumed_at: tuple[int, int] | None = None  # (epochs done, batches done) when resuming
    time_budget: float | None = None  # seconds
    init_from: str | None = None  # the parent of a fine-tuned run
    new_chars: int = 0  # characters the fine-tuning corpus adds to the parent's vocabulary
    precision: str = "fp32"  # what the run computes in (train.precision, auto resolved)
    precision_reason: str = ""  # why: asked for, or what auto found on the device


@dataclass
class EvalRecord:
    """One line of metrics.jsonl: the epoch so far (train loss, gradient norm, speed) and the val loss."""

    epoch: int
    batch: int  # batches of the epoch done (all of them at the end of an epoch)
    epochs_done: float  # epochs as a fraction: an eval inside an epoch falls between two
    step: int
    lr: float
    train_loss: float  # the epoch's mean so far, label smoothing included
    train_ppl: float
    grad_norm: float  # the mean gradient norm before clipping
    chars_per_s: float
    train_seconds: float
    skipped_batches: int | None = None  # on_nonfinite=skip: batches skipped this epoch (omitted when none)
    val_loss: float | None = None  # the val fields are omitted without a val split
    val_ppl: float | None = None
    val_bpc: float | None = None
    val_chars: int | None = None
    val_protocol: str | None = None  # "full", or which part of the split a subsampled eval scored
    stopped: str | None = None  # time_budget | early_stopping when this eval ends the run
    seconds: float = 0.0  # wall time since the previous eval (evals, checkpoints and previews included)

    OPTIONAL = ("skipped_batches", "val_loss", "val_ppl", "val_bpc", "val_chars", "val_protocol")
    ORDER = (
        "epoch",
        "batch",
        "epochs_done",
        "step",
        "lr",
        "train_loss",
        "train_ppl",
        "grad_norm",
        "skipped_batches",
        "val_loss",
        "val_ppl",
        "val_bpc",
        "val_chars",
        "val_protocol",
        "chars_per_s",
        "train_seconds",
        "stopped",
        "seconds",
    )

    def to_json(self) -> dict:
        """The metrics.jsonl line, keys in a fixed order, absent optional fields left out."""
        values = asdict(self)
        return {key: values[key] for key in self.ORDER if not (key in self.OPTIONAL and values[key] is None)}

    @property
    def monitored_loss(self) -> float:
        """What `best` means: the val loss, or the train loss of a run without a val split."""
        return self.val_loss if self.val_loss is not None else self.train_loss


@dataclass
class RunSummary:
    run_dir: str
    epochs: int  # as configured
    epochs_run: int  # completed
    best_epoch: int
    best_loss: float
    seconds: float  # wall time of this process's training, evals included
    train_seconds: float
    monitored: str  # val_loss | train_loss
    last: dict = field(default_factory=dict)  # the last metrics.jsonl record
    losses: list[float] = field(default_factory=list)  # the monitored loss of every eval in metrics.jsonl
    stopped: str | None = None
    final: dict = field(default_factory=dict)  # the {"event": "final"} line: whole-split scores of best.pt


class Reporter(Protocol):
    def download(self, filename: str, total: int | None):
        """A context manager giving a callback(byte count) (or None) while a corpus downloads."""

    def start(self, event: RunStart) -> None: ...
    def warn(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, num_batches: int, done: int = 0) -> None: ...
    def batch(self, done: int, loss: torch.Tensor) -> None:
        """After each batch; `loss` stays on the device: read it rarely (each read is a host sync)."""

    def epoch_end(self, record: EvalRecord) -> None: ...
    def preview(self, epoch: int, samples: list[str]) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...


class SilentReporter:
    """A Reporter that says nothing: the default for library use; subclass it to hear some events."""

    def download(self, filename: str, total: int | None):
        return contextlib.nullcontext(None)

    def start(self, event: RunStart) -> None: ...
    def warn(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, num_batches: int, done: int = 0) -> None: ...
    def batch(self, done: int, loss: torch.Tensor) -> None: ...
    def epoch_end(self, record: EvalRecord) -> None: ...
    def preview(self, epoch: int, samples: list[str]) -> None: ...
    def finish(self, summary: RunSummary) -> None: ...


def advancing(progress: Callable[[int, int], object] | None, total: int) -> Callable[[int], object] | None:
    """A `progress(chars)` for evaluate/char_losses that calls `progress(done, total)`, a bar's (None: None)."""
    if progress is None:
        return None
    done = 0

    def advance(chars: int) -> None:
        nonlocal done
        done += chars
        progress(done, total)

    return advance
