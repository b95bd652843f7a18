"""The training clock: how long the run has trained (evals excluded), its time budget, the evals on the clock.

Between batches the host clock alone is read (no sync: the host runs ahead of a GPU by the batches queued
on it); at a measurement point (an eval, a checkpoint, the budget's end, an epoch's end) the device first
finishes its queue, so the time and chars/s recorded are the device's, not the host's queueing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from charlm.runtime.device import synchronize
from charlm.runtime.distributed import Ranks
from charlm.store.state import TrainState


@dataclass(kw_only=True)
class Clock:
    """Keeps state.train_seconds: the training time before this stretch plus the stretch's so far."""

    state: TrainState
    ranks: Ranks
    budget: float | None  # train.time_budget in seconds (None: no limit)
    every: float  # train.eval_every_seconds (0: no evals on the clock)
    started: float = 0.0  # when this stretch of training began (an epoch, or the end of an eval)
    before: float = 0.0  # the training time before it
    last_eval_at: float = 0.0  # when the last eval ended (or the run began): an eval record's `seconds`

    def begin(self) -> float:
        """The run begins (now, returned): the first eval's seconds count from here."""
        self.last_eval_at = time.perf_counter()
        return self.last_eval_at

    def restart(self) -> None:
        """A stretch of training begins: an epoch, or training again after an eval (evals are not training)."""
        self.started, self.before = time.perf_counter(), self.state.train_seconds

    def read(self, synchronized: bool = False) -> None:
        """Training time so far, into state.train_seconds; `synchronized`: at a measurement point."""
        if synchronized:
            synchronize(self.ranks.device)
        self.state.train_seconds = self.before + time.perf_counter() - self.started
        if self.budget is not None or self.every:
            # every process must use the same lr, evaluate and stop together: the slowest decides
            self.state.train_seconds = self.ranks.slowest(self.state.train_seconds)

    def out_of_time(self) -> bool:
        return self.budget is not None and self.state.train_seconds >= self.budget

    def fraction(self) -> float:
        """How much of the time budget is used (0.0 without one): the lr schedule follows the further of it
        and the step count."""
        return self.state.train_seconds / self.budget if self.budget else 0.0

    def eval_due(self, seconds_before: float) -> bool:
        """The last batch took the training time (from `seconds_before`) past a multiple of `every`."""
        every = self.every
        return bool(every) and self.state.train_seconds // every > seconds_before // every

    def since_last_eval(self) -> float:
        """Seconds since the last eval ended (evals and their saves included), and this eval's end is now."""
        now = time.perf_counter()
        seconds, self.last_eval_at = now - self.last_eval_at, now
        return seconds
