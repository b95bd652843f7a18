"""Loss in the units people read: nats per character, bits per character, perplexity. No torch here, so
the commands that only read run folders (runs, info, plot) start fast. Also durations as people write them (10m)."""

from __future__ import annotations

import math

from charlm.errors import ConfigError, RunError, shown


def perplexity(nats: float) -> float:
    return math.exp(nats) if nats < 700 else math.inf  # exp overflows a float past ~709 (and NaN is not < 700)


def check_finite_loss(nats: float, what: str) -> None:
    """A loss people are shown: a number with a finite perplexity. A model that scores NaN on a text (or a loss
    past exp's range) has numbers that overflowed, and every figure of it would be noise: one line instead."""
    if not (math.isfinite(nats) and math.isfinite(perplexity(nats))):
        raise RunError(
            f"the model's loss on {what} is {nats:.4g} nats/char, which has no finite perplexity: its numbers "
            "overflow (weights too large); use another checkpoint, or retrain with a lower train.lr"
        )


def bits(nats: float) -> float:
    return nats / math.log(2)


def figures(nats_per_char: float, chars: int) -> dict:
    """A score as `charlm perplexity --json` gives it."""
    return {
        "nats_per_char": nats_per_char,
        "bits_per_char": bits(nats_per_char),
        "perplexity": perplexity(nats_per_char),
        "chars": chars,
    }


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str | float, key: str = "duration") -> float:
    """'106s', '10m', '1.5h' or a plain number of seconds -> seconds."""
    value = str(text).strip().lower()
    unit = DURATION_UNITS.get(value[-1:], None)
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ConfigError(f"{key} = {shown(text)} is not a duration: write it like 106s, 10m or 1h") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{key} must be a positive duration, got {shown(text)}")
    return seconds
