"""Training: `train(config)` sets a run up (setup.py) and runs the Trainer (loop.py).

setup.py      train(): corpus, model, optimizer, a new or resumed TrainState, the run folder; RunParts
compute.py    train.precision resolved for the device (and its warnings); train.deterministic's algorithms
run_files.py  the folder to resume and its checkpoint; a new run's files, a resumed run's metrics trimmed
parts.py      RunParts: what setup builds, shared by the Trainer and its helpers
loop.py       Trainer: run -> train_epoch -> train_step; between_batches
clock.py      Clock: training time (evals excluded), the time budget, evals on the clock
evals.py      Evals: the eval record, evaluate_and_save, previews, the final eval of best.pt
output.py     RunOutput: checkpoints, metrics lines (and TensorBoard), status.json, the summary
schedule.py   the optimizer, the lr of each step, best-loss / plateau / early-stopping bookkeeping
stop.py       signals (agreed across ranks), non-finite checks (NonFinite), the Interrupted error
resume.py     which config changes a resume accepts; restoring state, generators, the hidden state
"""

import importlib


def __getattr__(name: str):
    # `from charlm.training import train` (as docs/export.md shows) loads setup.py when asked, not when any module
    # of the package is imported: a lazy re-export (PEP 562), so that importing one module never runs the trainer
    if name != "train":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module("charlm.training.setup").train


__all__ = ["train"]
