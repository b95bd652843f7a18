"""TrainState: where a run stands. The one definition of it; checkpoints save and restore it whole.

Besides this, a checkpoint holds the weights, the optimizer and the random generators (see
checkpoint.Checkpoint): together they let a run stopped at any batch continue as the same computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch

from charlm.model import Hidden

# the checkpoint format names the carried hidden state "state" (format version 1)
SAVED_NAMES = {"hidden": "state"}


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches done in the current epoch (0: at an epoch boundary)
    step: int = 0  # optimizer steps so far (skipped batches count)
    best_loss: float = math.inf  # the best monitored loss (val, or train without a val split)
    best_epoch: int = 0
    evals_since_best: int = 0  # early stopping counts these
    plateau_count: int = 0  # schedule=plateau: evaluations since the last new best or decay
    lr_scale: float = 1.0  # step / plateau decays applied so far
    skipped: int = 0  # batches of this epoch skipped for a non-finite loss (on_nonfinite=skip)
    epoch_weight: float = 0.0  # batches of this epoch in num_steps units (variable BPTT windows weigh less or more)
    train_seconds: float = 0.0  # training time, evals excluded
    epoch_started_at: float = 0.0  # train_seconds when this epoch began
    stopped: str | None = None  # why a run stopped before its last epoch: time_budget | early_stopping
    epoch_data_rng: torch.Tensor | None = None  # the data generator at the start of this epoch: replays it
    hidden: Hidden | None = None  # the carried hidden state (consecutive sampling)
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # this epoch's summed train loss
    norm_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # and gradient norm, on device
    last_record: dict = field(default_factory=dict)  # the latest metrics.jsonl line (saved as "metrics")
    lr: float | None = field(default=None, metadata={"saved": False})  # the latest batch's lr: for its record

    def state_dict(self) -> dict:
        """Plain data and tensors, under the checkpoint format's names."""
        saved = {}
        for f in fields(self):
            if f.metadata.get("saved", True):
                saved[_saved_name(f.name)] = getattr(self, f.name)
        saved["metrics"] = saved.pop("last_record")
        return saved

    @classmethod
    def from_state_dict(cls, saved: dict, device: torch.device | str = "cpu") -> TrainState:
        """The state a checkpoint holds. Keys that a checkpoint from an older charlm lacks start fresh."""
        values = {"last_record": saved.get("metrics", {})}
        for f in fields(cls):
            name = _saved_name(f.name)
            if f.metadata.get("saved", True) and name in saved:
                values[f.name] = saved[name]
        state = cls(**values)
        state.loss_sum, state.norm_sum = state.loss_sum.to(device), state.norm_sum.to(device)
        state.hidden = to_device(state.hidden, device)
        return state

    def start_epoch(self) -> None:
        """Zero the running sums of an epoch that starts (not one that resumes mid-way)."""
        self.loss_sum.zero_()
        self.norm_sum.zero_()
        self.skipped, self.epoch_weight, self.epoch_started_at = 0, 0.0, self.train_seconds


def _saved_name(name: str) -> str:
    return SAVED_NAMES.get(name, name)


def to_device(hidden: Hidden | None, device: torch.device | str) -> Hidden | None:
    if hidden is None:
        return None
    if isinstance(hidden, (tuple, list)):
        return tuple(h.to(device) for h in hidden)
    return hidden.to(device)
