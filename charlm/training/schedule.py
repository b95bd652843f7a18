"""The optimizer and the learning rate of every step: warm-up, then constant, cosine, step or plateau."""

from __future__ import annotations

import math

import torch

from charlm.config import TrainConfig
from charlm.store.state import TrainState


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    # decay weight matrices and embeddings only: decaying biases just pulls them to zero for no gain
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr)
    return torch.optim.AdamW(groups, lr=t.lr)


def lr_at(step: int, total_steps: int, t: TrainConfig, *, time_fraction: float = 0.0, scale: float = 1.0) -> float:
    """The learning rate of an optimizer step: linear warm-up over warmup_steps, then

    constant: lr; cosine: from lr to min_lr as the run progresses (by steps, or by the clock when a
    time budget ends it sooner: `time_fraction` of the budget used); step and plateau: lr x `scale`,
    the decays the loop has applied, never below min_lr.
    """
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "cosine":
        progress = min(1.0, max((step - t.warmup_steps) / max(1, total_steps - t.warmup_steps), time_fraction))
        return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))
    return max(t.lr * scale, t.min_lr)


def start_epoch_decay(state: TrainState, epoch: int, t: TrainConfig) -> None:
    """schedule=step: the lr scale of an epoch is decay_factor per decay_every epochs before it."""
    if t.schedule == "step":
        state.lr_scale = t.decay_factor ** ((epoch - 1) // t.decay_every)


def after_eval(state: TrainState, loss: float, epoch: int, t: TrainConfig) -> bool:
    """Keep track of the best monitored loss after an evaluation; return whether this one is the best.

    Without a new best, schedule=plateau decays the lr after plateau_patience such evals, and early
    stopping (train.patience) ends the run after `patience` of them.
    """
    if loss < state.best_loss:
        state.best_loss, state.best_epoch = loss, epoch
        state.evals_since_best = state.plateau_count = 0
        return True
    state.evals_since_best += 1
    state.plateau_count += 1
    if t.schedule == "plateau" and state.plateau_count > t.plateau_patience:
        state.lr_scale *= t.decay_factor
        state.plateau_count = 0
    if t.patience and state.evals_since_best >= t.patience:
        state.stopped = "early_stopping"
    return False
