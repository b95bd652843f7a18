"""Loss in the units people read: nats per character, bits per character, perplexity. No torch here, so
the commands that only read run folders (runs, info, plot) start fast."""

from __future__ import annotations

import math


def perplexity(nats: float) -> float:
    return math.exp(nats) if nats < 700 else math.inf  # exp overflows a float past ~709


def bits(nats: float) -> float:
    return nats / math.log(2)
