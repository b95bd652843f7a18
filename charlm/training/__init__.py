"""Training: `train(config)` sets a run up (setup.py) and runs the Trainer (loop.py).

    setup.py     train(): corpus, model, optimizer, a new or resumed TrainState, the run folder
    loop.py      Trainer: run -> train_epoch -> train_step; between_batches; evaluate_and_save; save
    state.py     TrainState: where a run stands (saved whole in every checkpoint)
    schedule.py  the optimizer, the lr of each step, best-loss / plateau / early-stopping bookkeeping
    stop.py      signals (agreed across ranks), non-finite checks, the Interrupted error
    resume.py    which config changes a resume accepts; restoring state, generators, the hidden state
"""

from charlm.training.setup import train

__all__ = ["train"]
