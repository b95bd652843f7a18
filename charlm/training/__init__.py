"""Training: `train(config)` sets a run up (setup.py) and runs the Trainer (loop.py).

setup.py     train(): corpus, model, optimizer, a new or resumed TrainState, the run folder
loop.py      Trainer: run -> train_epoch -> train_step; between_batches; evaluate_and_save; save
schedule.py  the optimizer, the lr of each step, best-loss / plateau / early-stopping bookkeeping
stop.py      signals (agreed across ranks), non-finite checks, the Interrupted error
resume.py    which config changes a resume accepts; restoring state, generators, the hidden state
"""

import importlib


def __getattr__(name: str):
    # `from charlm.training import train` (as the README shows) loads setup.py when asked, not when any module
    # of the package is imported: a lazy re-export (PEP 562), so that importing one module never runs the trainer
    if name != "train":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module("charlm.training.setup").train


__all__ = ["train"]
