"""The neighbourhood `--search` samples (search.py), around the rule's plan (rule.py), and the rungs of its
successive halving: pure arithmetic, no Optuna, no torch.

    Plan ─► Space (widths, layers, dropout, lr, batches, weight drop)   the rule's own choice is a point in it
    budget x search.share ─► rung_seconds: r0, r0*eta, r0*eta^2, ...    the trials' training time per rung
    a rung's val losses ─► kept: the best 1 in eta go on to the next rung
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charlm.autosize.rule import EMBED, WIDTHS, Plan, window
from charlm.errors import UsageError
from charlm.store.search_log import within

DROPOUT_STEP = 0.2  # the dropout tried: the rule's +- this, within [0, MAX_DROPOUT]
MAX_DROPOUT = 0.6
LR_BELOW, LR_ABOVE = 3.0, 2.0  # the lr tried: from the rule's / 3 to x 2, on a log scale
MAX_WEIGHT_DROP = 0.3  # DropConnect on W_hh, AWD-LSTM's 0.5 is for word models 10x wider
LAYERS = (1, 2)  # the sweep measured one layer; the search may find two better on a corpus of its own
MAX_BATCH = 64  # the rule's largest batch (32), doubled
MAX_LR = 1.0  # Adam's lr, far above the rule's 6e-3 x LR_ABOVE
# Optuna's TPE weighs every earlier trial at each draw, and each trial is rows of the study: beyond a thousand
# candidates asking alone takes minutes and study.db grows for rungs no candidate could train in
MAX_TRIALS = 1000
MIN_RUNG_SECONDS = 0.1  # a first rung shorter than this trains a handful of batches of even a tiny model
# every candidate any plan's neighbourhood holds (search_log.within's form of a space)
ENVELOPE = {
    "widths": list(WIDTHS),
    "layers": list(LAYERS),
    "batches": list(range(1, MAX_BATCH + 1)),
    "dropout": [0.0, MAX_DROPOUT],
    "lr": [0.0, MAX_LR],
    "weight_drop": [0.0, MAX_WEIGHT_DROP],
}


@dataclass(frozen=True)
class Space:
    """Where the candidates are drawn: each a value around the rule's."""

    widths: tuple[int, ...]
    layers: tuple[int, ...]
    dropout: tuple[float, float]
    lr: tuple[float, float]
    batches: tuple[int, ...]
    weight_drop: tuple[float, float]

    def check(self) -> None:
        """A space as neighbourhood() makes one (search.json keeps it): ValueError naming what is not."""
        if not (self.widths and set(self.widths) <= set(WIDTHS) and set(self.layers) <= set(LAYERS) and self.layers):
            raise ValueError(f"widths {self.widths} and layers {self.layers} must be among {WIDTHS} and {LAYERS}")
        if not (self.batches and all(_whole(b) and 1 <= b <= MAX_BATCH for b in self.batches)):
            raise ValueError(f"batches {self.batches} must be whole numbers from 1 to {MAX_BATCH}")
        for name, (low, high), top in (
            ("dropout", self.dropout, MAX_DROPOUT),
            ("lr", self.lr, MAX_LR),
            ("weight_drop", self.weight_drop, MAX_WEIGHT_DROP),
        ):
            if not (_number(low) and _number(high) and 0 <= low <= high <= top and (name != "lr" or low > 0)):
                raise ValueError(f"{name} range {low}..{high} must lie within 0..{top}")


def neighbourhood(chosen: Plan) -> Space:
    """The rule's width and its neighbours in rule.WIDTHS, its dropout and lr widened, its batch halved and
    doubled (as far as the corpus allows 4 batches an epoch)."""
    at = WIDTHS.index(chosen.shape.hidden)
    widths = WIDTHS[max(0, at - 1) : at + 2]
    batches = sorted({window(chosen.stats, b)[0] for b in (max(1, chosen.batch // 2), chosen.batch, chosen.batch * 2)})
    return Space(
        widths=tuple(widths),
        layers=LAYERS,
        dropout=(max(0.0, chosen.dropout - DROPOUT_STEP), min(MAX_DROPOUT, chosen.dropout + DROPOUT_STEP)),
        lr=(chosen.lr / LR_BELOW, chosen.lr * LR_ABOVE),
        batches=tuple(batches),
        weight_drop=(0.0, MAX_WEIGHT_DROP),
    )


def possible(params: object) -> bool:
    """Whether `params` is a candidate some search could draw: a shared study's trials (and its winner) are
    written by other processes, or by whoever else can write to it, and one outside every space is not trained."""
    return within(params, ENVELOPE) and params["lr"] > 0


def rule_params(chosen: Plan) -> dict:
    """The rule's own choice as a point of the space: the first trial, so the search sees it."""
    return {
        "hidden": chosen.shape.hidden,
        "layers": chosen.shape.layers,
        "dropout": chosen.dropout,
        "lr": chosen.lr,
        "batch": chosen.batch,
        "weight_drop": 0.0,
    }


def overrides(params: dict, tied: bool) -> list[str]:
    """A candidate as --set items on the rule's config (`tied`: the embedding is the head's, a large vocabulary)."""
    hidden = int(params["hidden"])
    return [
        f"model.hidden_size={hidden}",
        f"model.embed_size={hidden if tied else EMBED}",
        f"model.num_layers={int(params['layers'])}",
        f"model.dropout={float(params['dropout']):.4g}",
        f"model.weight_drop={float(params['weight_drop']):.4g}",
        f"train.lr={float(params['lr']):.4g}",
        f"train.min_lr={min(1e-4, float(params['lr'])):.4g}",
        f"train.batch_size={int(params['batch'])}",
    ]


def rung_seconds(search_seconds: float, *, trials: int, rungs: int, reduction: int) -> list[float]:
    """Each rung's training time per candidate (cumulative: a candidate kept trains on to the next), so that
    `trials` candidates at the first rung and about 1 in `reduction` kept at each next one fit `search_seconds`:
    trials x r0 x (1 + (rungs - 1) x (1 - 1/reduction))."""
    first = search_seconds / (trials * (1 + (rungs - 1) * (1 - 1 / reduction)))
    return [first * reduction**k for k in range(rungs)]


def check_rungs(search_seconds: float, *, trials: int, rungs: int, reduction: int) -> list[float]:
    """The rungs (rung_seconds) once the settings are known to make a search that can run, checked before
    any candidate is drawn; UsageError names the setting and the fix (see rungs_problem)."""
    problem = rungs_problem(search_seconds, trials=trials, rungs=rungs, reduction=reduction)
    if problem is not None:
        raise UsageError(": ".join(problem))
    return rung_seconds(search_seconds, trials=trials, rungs=rungs, reduction=reduction)


def rungs_problem(search_seconds: float, *, trials: int, rungs: int, reduction: int) -> tuple[str, str] | None:
    """(what is wrong, the fix), or None for settings that make a search that can run: at most MAX_TRIALS
    candidates; no rung after the one that leaves a single candidate (reduction^(rungs-1) <= trials, which
    also bounds the last rung by the search's time); a first rung of at least MIN_RUNG_SECONDS."""
    if not (_whole(trials) and 2 <= trials <= MAX_TRIALS):
        return f"search.trials={trials} is not 2 to {MAX_TRIALS} candidates", "set one in that range"
    if not (_whole(rungs) and rungs >= 1 and _whole(reduction) and reduction >= 2):
        return f"search.rungs={rungs} and search.reduction={reduction} are not whole numbers >= 1 and >= 2", "fix them"
    reach = 1
    for rung in range(1, rungs):  # at most log2(MAX_TRIALS) + 1 steps: no power is ever computed whole
        reach *= reduction
        if reach > trials:
            return (
                f"search.rungs={rungs} with search.reduction={reduction}: each cut keeps 1 in {reduction}, so "
                f"{trials} candidates leave none to compare by rung {rung}",
                "lower search.rungs or search.reduction, or raise search.trials",
            )
    if not (_number(search_seconds) and search_seconds > 0):
        return f"the search's time {search_seconds} s is not a positive number", "set --budget"
    first = rung_seconds(search_seconds, trials=trials, rungs=rungs, reduction=reduction)[0]
    if first < MIN_RUNG_SECONDS:
        fit = int(trials * first / MIN_RUNG_SECONDS)  # rung 0 grows as 1/trials
        return (
            f"search.trials={trials} leaves each candidate {first:.2g} s at rung 0 of the search's "
            f"{search_seconds:.3g} s (--budget x search.share), under the {MIN_RUNG_SECONDS} s a rung needs",
            f"set search.trials to {fit} or fewer, or raise --budget" if fit >= 2 else "raise --budget",
        )
    return None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def kept(values: dict[int, float], reduction: int) -> set[int]:
    """The trials that go on from a rung: the best len(values) // reduction (at least one) by val loss, as
    Optuna's SuccessiveHalvingPruner counts them, but decided once the rung's values are all in. A loss that is
    not a number (a diverged trial) ranks last."""
    ranked = sorted(values, key=lambda n: (math.isnan(values[n]), values[n], n))
    return set(ranked[: max(1, len(values) // reduction)])


def whole_run_fits(*, seconds: float, epochs_done: float, epochs: int, left: float) -> bool:
    """Whether the winner should train again from the start, in one schedule, rather than go on from its
    rungs: its run ends by its epochs (a small corpus) before the budget, it has not yet run them all, and
    the time left holds all of them at the speed its trial measured (with a tenth to spare). On such a corpus
    the search costs the winner no time, and its rungs' warm restarts cost it loss: the rule's candidate
    continued to its 40 epochs on The Time Machine ended 0.9% above the rule's own run of them."""
    if epochs_done <= 0 or epochs_done >= epochs:
        return False
    return 1.1 * seconds / epochs_done * epochs <= left
