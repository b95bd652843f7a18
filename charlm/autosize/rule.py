"""The rule that sizes a model for a corpus and a time budget: pure arithmetic on the corpus's size and
vocabulary and on measured training speeds (calibrate.py). The constants come from the sweep in
benchmarks/autosize_sweep.py (its table is in docs/results.md, "Auto-sizing"); "weights" below are the
recurrent layers' (the head and the embedding are left out: on a large vocabulary they would decide alone):

  size      the widest single-layer LSTM that the budget can train: at least CHARS_PER_WEIGHT characters seen
            per weight (the speed measured on this machine x the budget), and at most MAX_WEIGHTS_PER_CHAR
            weights per character of the train split (past that a model learns the text by heart)
  epochs    at most MAX_EPOCHS: a small corpus stops there, before the budget (more epochs overfit)
  dropout   from the epochs the budget makes over the text: none up to NO_DROPOUT_EPOCHS, then rising with
            log(epochs) to MAX_DROPOUT
  batch     16 x 64 (more updates), or 32 x 64 once the budget allows over MANY_UPDATES updates of 16 x 64;
            halved while an epoch would hold fewer than 4 batches (tiny corpora)
  lr        Adam 6e-3 up to 512 units, falling as 1/sqrt(width) above; cosine on the clock to the budget
  vocab     above LARGE_VOCAB characters the embedding is tied to the head and label smoothing is 0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# from the sweep (benchmarks/autosize_sweep.py; docs/results.md "Auto-sizing")
CHARS_PER_WEIGHT = 3.5  # the 2-minute sweep's winners saw 5.4-7.8 chars per weight, the wider losers 0.5-2.8
MAX_WEIGHTS_PER_CHAR = 10.0  # jaychou's winner had 9.2 weights per train char, the wider loser 37
SPEED_SHARE = 0.8  # a real run's mean chars/s over the calibration's: 0.59-0.95, median 0.82, in the sweep
MAX_EPOCHS = 40  # a small corpus seen more often overfits: the lyrics' 10-minute run at 132 epochs ended 1.4%
# above its 2-minute one at 37, whose best was at the end (the sweep's best runs made 20-50 epochs)
NO_DROPOUT_EPOCHS = 7.0
DROPOUT_PER_LOG_EPOCH = 0.29  # 0.3 at 20 epochs (the time machine's best), 0.5 at 40 (the lyrics need it: 0.4 overfits)
MAX_DROPOUT = 0.5
MANY_UPDATES = 8000
STEPS = 64
LARGE_VOCAB = 256  # above this, tie the embedding to the head (its rows would outnumber the LSTM's weights)
WIDTHS = (32, 64, 128, 256, 384, 512, 768, 1024)
EMBED = 64


@dataclass(frozen=True)
class CorpusStats:
    """What the rule needs to know of a corpus."""

    name: str
    train_chars: int
    val_chars: int
    vocab_size: int


@dataclass(frozen=True)
class Shape:
    """An LSTM shape; embed None ties the embedding to the output head (embed = hidden)."""

    hidden: int
    layers: int = 1
    embed: int | None = EMBED

    def weights(self) -> int:
        """The recurrent layers' weights and biases: what the rule sizes."""
        inputs = self.hidden if self.embed is None else self.embed
        return sum(
            4 * self.hidden * (width + self.hidden) + 8 * self.hidden
            for width in [inputs] + [self.hidden] * (self.layers - 1)
        )

    def parameters(self, vocab: int) -> int:
        """Weights a training step multiplies: the LSTM layers and the head (the embedding is a lookup)."""
        return self.weights() + self.hidden * vocab + vocab

    def label(self) -> str:
        return f"LSTM {self.layers}x{self.hidden}"


@dataclass(frozen=True)
class Plan:
    """The choice for one corpus and budget, and why."""

    shape: Shape
    batch: int
    steps: int
    dropout: float
    lr: float
    label_smoothing: float
    chars_per_s: float
    budget_s: float
    stats: CorpusStats
    epoch_limit: int | None = None  # the run ends after this many epochs, before the budget (a small corpus)

    @property
    def parameters(self) -> int:
        return self.shape.parameters(self.stats.vocab_size)

    @property
    def chars_seen(self) -> float:
        budget = self.chars_per_s * self.budget_s
        return budget if self.epoch_limit is None else min(budget, self.epoch_limit * self.stats.train_chars)

    @property
    def chars_per_weight(self) -> float:
        return self.chars_seen / self.shape.weights()

    @property
    def epochs(self) -> float:
        return self.chars_seen / max(1, self.stats.train_chars)

    @property
    def why(self) -> str:
        seen = f"{self.chars_seen / 1e6:.1f}M chars = {self.chars_per_weight:.1f} per recurrent weight"
        if self.epoch_limit is None:
            length = (
                f"so {format_seconds(self.budget_s)} sees {seen} and {self.epochs:.1f} epochs of "
                f"{self.stats.train_chars:,} train chars"
            )
        else:
            length = (
                f"so it trains on {seen} = {self.epoch_limit} epochs of {self.stats.train_chars:,} train chars "
                f"and stops there, before the {format_seconds(self.budget_s)} budget (more would overfit)"
            )
        return (
            f"{self.shape.label()} ({self.parameters / 1e6:.2f}M parameters): this machine trains it at "
            f"{self.chars_per_s:,.0f} chars/s, {length} -> dropout {self.dropout:g}, "
            f"batch {self.batch}x{self.steps}, Adam {self.lr:.2g}"
        )


def candidates(vocab: int) -> list[Shape]:
    """Single-layer LSTMs from 32 to 1024 units, smallest first (the sweep measured widths only: depth is
    untried by it); embedding 64, or tied to the head for a large vocabulary."""
    embed = None if vocab > LARGE_VOCAB else EMBED
    return [Shape(width, 1, embed) for width in WIDTHS]


def window(stats: CorpusStats, batch: int) -> tuple[int, int]:
    """(batch, steps): halve the batch, then the steps, while an epoch would hold fewer than 4 batches."""
    steps = STEPS
    while batch > 1 and batch * steps * 4 > stats.train_chars:
        batch //= 2
    while steps > 8 and batch * steps * 4 > stats.train_chars:
        steps //= 2
    return batch, steps


def plan(stats: CorpusStats, budget_s: float, speed: Callable[[Shape, int, int], float]) -> Plan:
    """The rule. `speed(shape, batch, steps)` is this machine's training chars/s for a shape (measured)."""
    batch, steps = window(stats, 16)
    chosen, chosen_speed = None, 0.0
    for shape in candidates(stats.vocab_size):  # narrowest first: the first is taken whatever the corpus
        if chosen is not None and shape.weights() > MAX_WEIGHTS_PER_CHAR * stats.train_chars:
            break  # wider models would learn this text by heart
        chars_per_s = SPEED_SHARE * speed(shape, batch, steps)
        if chosen is not None and chars_per_s * budget_s < CHARS_PER_WEIGHT * shape.weights():
            break  # the budget cannot train it (and wider shapes are slower still)
        chosen, chosen_speed = shape, chars_per_s
    train_chars = max(1, stats.train_chars)
    limit = MAX_EPOCHS if chosen_speed * budget_s > MAX_EPOCHS * train_chars else None
    seen = chosen_speed * budget_s if limit is None else limit * train_chars
    if seen / (batch * steps) > MANY_UPDATES and batch == 16:
        batch = window(stats, 32)[0]
    epochs = seen / train_chars
    dropout = (
        0.0
        if epochs <= NO_DROPOUT_EPOCHS
        else min(MAX_DROPOUT, round(DROPOUT_PER_LOG_EPOCH * math.log(epochs / NO_DROPOUT_EPOCHS), 2))
    )
    lr = round(6e-3 * math.sqrt(512 / max(512, chosen.hidden)), 4)
    smoothing = 0.1 if stats.vocab_size > LARGE_VOCAB else 0.0
    return Plan(chosen, batch, steps, dropout, lr, smoothing, chosen_speed, budget_s, stats, limit)


def format_seconds(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
