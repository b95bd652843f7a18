"""A `--search` in a test process without training: the rule's plan for a made-up corpus, and the trainer replaced
from the test side by one that answers at once (a val loss made from the candidate's values), so that the
search's own work (the study, its files, the lock, its signals) runs as it does, in milliseconds."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from charlm.autosize import auto, rule
from charlm.config import load_config, parse_duration
from charlm.events import SilentReporter

# 5 candidates, 2 rungs, 1 in 2 kept: 4 rung-0 trainings, 2 rung-1 ones, a winner
SMALL = ["search.trials=5", "search.rungs=2", "search.reduction=2"]


def plan_and_config(sets=(), budget: float = 600.0):
    """(config, plan) of `charlm train --budget 600s --search` for a made-up 200 KB corpus, `sets` on top."""
    stats = rule.CorpusStats("x", 200_000, 20_000, 65)
    chosen = rule.plan(stats, budget, lambda shape, batch, steps: 3e6 / shape.hidden)
    items = [*auto.plan_overrides(chosen, budget), "train.device=cpu", "search.enabled=true", *sets]
    return load_config(None, items), chosen


class FakeTraining:
    """training.setup.train replaced: each call recorded (folder, config, resume), a summary returned at once.
    `during(path, config)` runs inside each call (a test's fault: a signal, an edit, a second process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import charlm.training.setup as setup

        self.calls: list[tuple[Path, object, bool]] = []
        self.during = None
        monkeypatch.setattr(setup, "train", self.train)

    def train(self, config, run_dir, reporter=None, resume=False, **kwargs):
        path = Path(run_dir)
        self.calls.append((path, config, resume))
        if self.during is not None:
            self.during(path, config)
        loss = 1.5 + config.model.dropout + abs(config.train.lr - 0.004) * 50 + config.model.num_layers / 100
        seconds = parse_duration(config.train.time_budget)
        return types.SimpleNamespace(
            monitored="val_loss",
            final={"val_loss": loss},
            best_loss=loss,
            train_seconds=seconds,
            last={"epochs_done": 1.0},
            epochs_run=1,
            stopped="time_budget",
            run_dir=str(path),
        )

    def trial_folders(self) -> list[Path]:
        return [path for path, _, _ in self.calls if path.parent.name == "trials"]


def start(run: Path, sets=(), said=None):
    """search.start of plan_and_config(sets) in `run` (the trainer faked by the caller)."""
    from charlm.autosize import search

    config, chosen = plan_and_config([*SMALL, *sets])
    return search.start(
        config,
        chosen,
        chosen.budget_s,
        run,
        reporter=SilentReporter(),
        say=(said.append if said is not None else print),
    )


def resume(run: Path, storage: str | None = None):
    from charlm.autosize import search

    return search.resume(run, reporter=SilentReporter(), say=lambda line: None, storage=storage)
