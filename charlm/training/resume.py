"""Continuing a run: which config changes a resume accepts, and getting the loop back where it stood.

A checkpoint holds the whole batch's hidden state (every rank's streams, gathered in stream order) and
the ranks' mean loss sum, so a run resumes with any number of processes that divides the batch; each
rank's own generator and loss sum are saved besides, so a resume with as many processes as before is
the same computation to the last bit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charlm.config import LEGACY_KEYS, Config, load_config
from charlm.errors import UsageError
from charlm.model import Hidden, match_layout
from charlm.runtime.distributed import Ranks
from charlm.store.layout import CONFIG
from charlm.store.state import TrainState, to_device

if TYPE_CHECKING:  # checkpoint.py imports the training package: no import cycle at run time
    from charlm.store.checkpoint import Checkpoint

# config keys that may differ when a run is resumed: they do not change the computation so far
RESUMABLE_KEYS = {
    "name",
    "data.corpus",
    "train.epochs",
    "train.device",
    "train.eval_batch_size",
    "train.checkpoint_every_batches",
    "train.keep_last",
    "train.on_nonfinite",
    "train.max_nonfinite",
    "train.time_budget",
    "train.patience",
    "train.eval_every_batches",
    "train.eval_every_epochs",
    "train.eval_chars",
    "train.eval_every_seconds",
    "train.deterministic",
}  # the last one picks kernels, not the function
RESUMABLE_SECTIONS = {"sample", "log", "search"}  # search: how a run was chosen, not how it computes
# allowed only when asked for on the command line (--set train.lr=...): a precision other than the run's may be
# all a resume on another machine can compute in (weights and optimizer are fp32 in every precision)
EXPLICIT_ONLY_KEYS = {"train.lr", "train.precision"}


def load_resume_config(run_dir: Path, config_path: Path | None, overrides: list[str]) -> Config:
    """The config to resume with: the run's own (or --config), plus command-line overrides."""
    return load_config(config_path or Path(run_dir) / CONFIG, overrides)


def config_changes(saved: Config, new: Config, explicit: set[str]) -> dict:
    """The differences between a run's config and the one it is resumed with; refuse the unsafe ones."""
    old_flat, new_flat = _flatten(saved.to_dict()), _flatten(new.to_dict())
    changed = {k: [old_flat[k], new_flat[k]] for k in old_flat if old_flat[k] != new_flat[k]}
    explicit = {LEGACY_KEYS.get(key, key) for key in explicit}
    refused = [
        k
        for k in changed
        if k not in RESUMABLE_KEYS
        and k.split(".")[0] not in RESUMABLE_SECTIONS
        and not (k in EXPLICIT_ONLY_KEYS and k in explicit)
    ]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise UsageError(
            f"cannot resume with a changed {shown}: these change the computation; "
            "resume with the run's own config, or start a new run"
        )
    return changed


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def restore(
    checkpoint: Checkpoint,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler,
    data_generator: torch.Generator,
    device: torch.device,
    ranks: Ranks,
) -> TrainState:
    """Weights, optimizer, fp16's loss scale, generators and this rank's TrainState, as the checkpoint left them."""
    model.load_state_dict(match_layout(checkpoint.model, model.per_layer))  # layer by layer if deterministic now
    optimizer.load_state_dict(checkpoint.optimizer)
    if scaler.is_enabled() and checkpoint.scaler:  # none saved: a run that was not fp16 starts a fresh scale
        scaler.load_state_dict(checkpoint.scaler)
    saved = checkpoint.train_state
    hidden = local_hidden(ranks, saved.hidden, checkpoint.config.train.batch_size)
    state = replace(
        saved,
        hidden=to_device(hidden, device),
        loss_sum=saved.loss_sum.to(device),
        norm_sum=saved.norm_sum.to(device),
        stopped=None,
    )  # a stopped run continues when resumed
    torch.set_rng_state(checkpoint.torch_rng)
    if device.type == "cuda" and checkpoint.cuda_rng:
        torch.cuda.set_rng_state_all(checkpoint.cuda_rng)
    data_generator.set_state(saved.epoch_data_rng)
    own_loss_sum = restore_rank_state(ranks, checkpoint.ranks, checkpoint.config.train.seed, saved.step)
    if own_loss_sum is not None:
        state.loss_sum = own_loss_sum.to(device)
    return state


def checkpoint_state(state: TrainState, ranks: Ranks) -> TrainState:
    """The state to save: the whole batch's hidden state and the ranks' mean loss sum (a collective)."""
    return replace(state, hidden=gather_hidden(ranks, state.hidden), loss_sum=ranks.mean(state.loss_sum))


# --- the hidden state of the whole batch -------------------------------------------------------------


def gather_hidden(ranks: Ranks, hidden: Hidden | None) -> Hidden | None:
    """Every rank's streams of the carried hidden state, in stream order (the batch is dim 1)."""
    if not ranks.active or hidden is None:
        return hidden
    if isinstance(hidden, (tuple, list)):
        return tuple(ranks.gather(h, dim=1) for h in hidden)
    return ranks.gather(hidden, dim=1)


def local_hidden(ranks: Ranks, hidden: Hidden | None, batch_size: int) -> Hidden | None:
    """This rank's streams of a whole-batch hidden state (from a checkpoint)."""
    if not ranks.active or hidden is None:
        return hidden
    share = ranks.share(batch_size)
    if isinstance(hidden, (tuple, list)):
        return tuple(h[:, share].contiguous() for h in hidden)
    return hidden[:, share].contiguous()


# --- each rank's random generator --------------------------------------------------------------------


def seed_rank(ranks: Ranks, seed: int) -> None:
    """Rank 0 keeps the generator of a single process; the others get their own, so that their dropout
    masks differ (data order and offsets come from the data generator, which all ranks share)."""
    if ranks.rank > 0:
        torch.manual_seed(seed + (ranks.rank << 32))


def rank_states(ranks: Ranks, loss_sum: torch.Tensor) -> list | None:
    """Every rank's own generator (torch, and CUDA's) and sum of the epoch's losses; None in one process."""
    if not ranks.active:
        return None
    mine = {
        "torch_rng": torch.get_rng_state(),
        "loss_sum": loss_sum.detach().cpu(),
        "cuda_rng": torch.cuda.get_rng_state(ranks.device) if ranks.device.type == "cuda" else None,
    }
    return ranks.gather_objects(mine)


def restore_rank_state(ranks: Ranks, states: list | None, seed: int, step: int) -> torch.Tensor | None:
    """Take back this rank's generator and return its loss sum, when the run had as many processes.

    Otherwise rank 0 keeps the single-process generator already restored, the others start fresh
    streams (only dropout masks use them), and the mean loss sum stands (None is returned).
    """
    if not ranks.active:
        return None
    if states is None or len(states) != ranks.world_size:
        if ranks.rank > 0:
            torch.manual_seed(seed + (ranks.rank << 32) + step)
        return None
    mine = states[ranks.rank]
    torch.set_rng_state(mine["torch_rng"])
    if ranks.device.type == "cuda" and mine["cuda_rng"] is not None:
        torch.cuda.set_rng_state(mine["cuda_rng"], ranks.device)
    return mine["loss_sum"]
