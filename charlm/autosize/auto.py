"""`auto_config`: the plan of rule.py, for a corpus measured here and speeds calibrated on this machine,
made into a plain Config (`--set` on top)."""

from __future__ import annotations

import math
from pathlib import Path

from charlm.autosize.rule import CorpusStats, Plan, Shape, format_seconds, plan  # noqa: F401
from charlm.config import Config, load_config

DEFAULT_BUDGET = "10m"  # of --config auto without --budget
EVALS_PER_BUDGET = 20  # in-training evals on the clock; early stopping counts them
# stop once val has not improved for half the expected evals: with the lr on a cosine to the budget, val
# often improves again late (a fifth stopped the 2-minute lyrics run at 73 s, 3.7% above the sweep's run of its width)
# (off below one epoch: a model that has not seen its text once cannot overfit it, and a 20-second run on
# 100 MB stopped on the noise of its first subsampled evals)
PATIENCE_SHARE = 0.5
SUBSAMPLED_EVAL_CHARS = 100_000  # in-training evals of larger val splits score this many chars


def auto_config(
    corpus: str, budget_s: float, overrides: list[str] | tuple[str, ...] = (), calibration_path=None
) -> tuple[Config, Plan]:
    """The config that `charlm train --corpus CORPUS --budget B` trains, and the plan behind it.
    `overrides` (KEY=VALUE, as --set) are applied on top of the plan: what the user pins stays pinned."""
    from charlm.autosize.calibrate import Calibration
    from charlm.data import load_corpus
    from charlm.runtime.capability import resolve_precision
    from charlm.runtime.device import pick_device

    # what the plan depends on: the data, the device and its precision (the rest of --set goes on top of the plan)
    asked = load_config(
        None,
        [
            f"data.corpus={corpus}",
            *[
                item
                for item in overrides
                if item.startswith(("data.", "train.device=", "train.precision=", "train.bf16="))
            ],
        ],
    )
    loaded = load_corpus(asked.data)
    stats = CorpusStats(loaded.name, len(loaded.train), len(loaded.val), len(loaded.vocab))
    device = pick_device(asked.train.device)
    precision = resolve_precision(asked.train.precision, device.type).name  # as training will resolve it
    chosen = plan(stats, budget_s, Calibration(device, precision, stats.vocab_size, calibration_path).speed)
    prefix = first_word(loaded.vocab.decode(loaded.train[:200].tolist()))
    config = load_config(
        None, [*plan_overrides(chosen, budget_s, asked.train.precision), f"data.corpus={corpus}", *overrides]
    )
    if prefix and not any(item.split("=", 1)[0].strip() == "sample.prefixes" for item in overrides):
        config.sample.prefixes = [prefix]  # the lyrics' 分开 means nothing to another corpus
    return config, chosen


def plan_overrides(chosen: Plan, budget_s: float, precision: str = "auto") -> list[str]:
    """The plan as --set items on the default config (`precision` as asked: auto resolves when training starts,
    and says why)."""
    shape, stats = chosen.shape, chosen.stats
    tied = shape.embed is None
    # about EVALS_PER_BUDGET evals: every few epochs of a small corpus, on the clock for a large one
    every_epochs = max(1, math.ceil(chosen.epochs / EVALS_PER_BUDGET))
    on_clock = chosen.epochs < EVALS_PER_BUDGET
    evals = chosen.epochs / every_epochs + (EVALS_PER_BUDGET if on_clock else 0)
    eval_chars = SUBSAMPLED_EVAL_CHARS if stats.val_chars > 2 * SUBSAMPLED_EVAL_CHARS else None
    eval_batch = max(1, min(32, stats.val_chars // (chosen.steps + 1)))
    return [
        f"name=auto-{slug(stats.name)}",
        "model.kind=lstm",
        "model.input=embedding",
        f"model.hidden_size={shape.hidden}",
        f"model.num_layers={shape.layers}",
        f"model.embed_size={shape.hidden if tied else shape.embed}",
        f"model.tie_weights={str(tied).lower()}",
        f"model.dropout={chosen.dropout}",
        f"train.epochs={chosen.epoch_limit or 100000}",
        f"train.time_budget={format_seconds(budget_s)}",
        f"train.batch_size={chosen.batch}",
        f"train.num_steps={chosen.steps}",
        "train.random_offset=true",
        "train.optimizer=adam",
        f"train.lr={chosen.lr}",
        "train.schedule=cosine",
        "train.warmup_steps=100",
        "train.min_lr=0.0001",
        "train.clip_norm=1.0",
        f"train.label_smoothing={chosen.label_smoothing}",
        f"train.precision={precision}",
        f"train.eval_every_epochs={every_epochs}",
        f"train.eval_every_seconds={budget_s / EVALS_PER_BUDGET if on_clock else 0:.4g}",
        f"train.eval_chars={eval_chars if eval_chars else 'null'}",
        f"train.eval_batch_size={eval_batch}",
        f"train.patience={max(3, math.ceil(PATIENCE_SHARE * evals)) if chosen.epochs >= 1 else 0}",
        "sample.preview_every=0",
        "sample.length=200",
    ]


def first_word(text: str) -> str:
    """A sample prefix from the corpus itself: its first word (or first two characters, for text without
    spaces such as Chinese)."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not line:
        return text[:1]
    return line.split()[0][:12] if " " in line else line[:2]


def slug(name: str) -> str:
    """A run name from a corpus name: a built-in's name, or a file's or folder's name without its suffix."""
    kept = "".join(c if c.isalnum() or c in "._-" else "-" for c in (Path(name).stem or name))
    return kept.strip("-.")[:40] or "corpus"
