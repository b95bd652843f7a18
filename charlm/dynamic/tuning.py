"""--dynamic-tune: a small grid of (lr, decay) for a method, scored on the first TUNE_CHARS characters of the
val split, never on what is reported as a test figure; the best pair is kept in the run folder (dynamic.json)
and used by later --dynamic runs of the same weights."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from charlm.dynamic.adapter import Adapter, DynamicOptions
from charlm.dynamic.scoring import diverged, dynamic_losses
from charlm.files import fsio, readback

TUNED = "dynamic.json"
FORMAT = "charlm-dynamic"
TUNE_CHARS = 50_000
GRID = {
    "sgd": ((0.1, 0.2, 0.4), (0.0, 0.001, 0.01)),
    "rms": ((5e-5, 1e-4, 2e-4), (0.0, 0.001, 0.01)),
}


def tune(model, val_ids, method: str, *, rms, num_steps: int, device, precision: str, reset=None) -> list[dict]:
    """Every (lr, decay) of the method's grid with its nats/char on the val ids, best first."""
    ids = val_ids[: TUNE_CHARS + 1]
    results = []
    for lr in GRID[method][0]:
        for decay in GRID[method][1]:
            trial = copy.deepcopy(model)  # each pair from the trained weights
            adapter = Adapter(trial, DynamicOptions(method, lr, decay), rms)
            losses = dynamic_losses(
                trial, ids, adapter, num_steps=num_steps, device=device, precision=precision, reset=reset
            )
            nats = None if diverged(losses.nats_per_char, model.vocab_size) else losses.nats_per_char  # no NaN in JSON
            results.append({"lr": lr, "decay": decay, "nats_per_char": nats, "chars": losses.chars})
    return sorted(results, key=lambda r: math.inf if r["nats_per_char"] is None else r["nats_per_char"])


def read_tuned(folder: Path, weights: str) -> dict:
    """{method: (lr, decay)} tuned for these weights, {} when there is none (or the file is not charlm's)."""
    try:
        saved = readback.read_json(folder / TUNED, 1024 * 1024)
    except (FileNotFoundError, readback.BadFile, OSError):
        return {}
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("weights") != weights:
        return {}
    chosen = {}
    for method in GRID:
        pair = saved.get(method, {}).get("chosen") if isinstance(saved.get(method), dict) else None
        # a pair of the grid only: --dynamic-tune writes no other, so another is an edit (lr 1e9 would diverge)
        if isinstance(pair, list) and len(pair) == 2 and pair[0] in GRID[method][0] and pair[1] in GRID[method][1]:
            chosen[method] = (float(pair[0]), float(pair[1]))
    return chosen


def write_tuned(folder: Path, weights: str, method: str, results: list[dict]) -> None:
    """Keeps the best pair of `method` beside the other method's, for these weights."""
    try:
        saved = readback.read_json(folder / TUNED, 1024 * 1024)
    except (FileNotFoundError, readback.BadFile, OSError):
        saved = None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("weights") != weights:
        saved = {"format": FORMAT, "weights": weights}
    best = results[0]
    saved[method] = {
        "chosen": [best["lr"], best["decay"]],
        "tuned_on": f"first {best['chars']:,} chars of val",
        "grid": results,
    }
    fsio.atomic_write_text(folder / TUNED, json.dumps(saved, indent=1) + "\n")
