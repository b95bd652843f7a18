"""What setup.py builds for a run, in one object that the Trainer and its helpers (evals, output) share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from charlm.config import Config
from charlm.data import Corpus
from charlm.events import Reporter
from charlm.model import CharRNN
from charlm.runtime.distributed import Ranks
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState


@dataclass(kw_only=True)
class RunParts:
    """One run's config and data, its model, optimizer and data generator, where it stands, how it reports."""

    config: Config
    run_dir: RunDir
    corpus: Corpus
    raw_model: CharRNN  # the Trainer wraps it (DistributedDataParallel under torchrun); evals and saves use it
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's loss scaling; disabled (a pass-through) in every other precision
    data_generator: torch.Generator  # the only source of data randomness (offsets, window lengths, order)
    state: TrainState  # what a checkpoint saves of the run's position
    ranks: Ranks
    reporter: Reporter
    # set once the folder is ready (setup.announce)
    prefixes: list[str] = field(default_factory=list)  # preview prefixes the vocabulary can encode
    board: object = None  # a TensorBoard SummaryWriter (log.tensorboard)
