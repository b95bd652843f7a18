"""A run folder's file names, written down once (run_dir, ownership, run_log and targets read them here).

runs/NAME-YYYYmmdd-HHMMSS/
    run.json        the marker written first: this folder is a charlm run (its id, the checkpoints it kept)
    .lock           held by the one process that trains in the folder (run_lock: flock / LockFileEx)
    .lock.pid       that process's id, for the message a second trainer gets
    config.yaml     the run's whole config (what --resume reads)
    vocab.json      the characters, in id order
    metrics.jsonl   one JSON line per evaluation, plus {"event": ...} lines (resume, final)
    status.json     running (with the pid) | finished | interrupted
    last.pt         the newest checkpoint; best.pt the one with the lowest monitored loss
    ckpt-eEEEE-bBBBBBB.pt   older checkpoints, with train.keep_last
  and, chosen by --search (autosize/search.py):
    search.json     the search's plan: budget, rungs, the rule's config and the space around it
    search.jsonl    one line per trial and rung (params, val loss, training time, pruned), then the winner's
    study.db        the Optuna study (SQLite), unless --study-storage names a shared one
    trials/tNNNN/   each candidate's own run folder; the winner's is copied here and continues
    novelty-index.safetensors   the training split's suffix array, made by the first novelty report (a cache)
"""

from __future__ import annotations

from charlm.errors import CheckpointError

LAST, BEST = "last.pt", "best.pt"
CHECKPOINTS = ("best", "last")
CONFIG, VOCAB, METRICS, STATUS = "config.yaml", "vocab.json", "metrics.jsonl", "status.json"
MARKER = "run.json"
SEARCH_STATE, SEARCH_LOG, STUDY_DB, TRIALS = "search.json", "search.jsonl", "study.db", "trials"
NOVELTY_INDEX = "novelty-index.safetensors"  # analysis.novelty_index: built again whenever it does not check out
MARKER_FORMAT = "charlm-run"
RUNS_ENV = "CHARLM_RUNS_DIR"  # where new runs go and where `runs` and the latest run are looked for


def check_which(which: object) -> None:
    if not isinstance(which, str) or which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint {which!r} is not valid: use best or last")
