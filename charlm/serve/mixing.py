"""`charlm serve --mix`: every route of the server uses the model mixed with the counts of its training text
(counts/), as `generate --mix` samples and `perplexity --mix` scores (static: the counts of the training text
only, so a figure does not depend on what other clients sent before).

- sampling (POST /generate, /v1/completions, /v1/chat/completions): each request's stream gets its own
  `MixedNext`, and its rows are sampled by the stream (batch.py), not with other requests' rows;
- POST /perplexity: the network's figures at the top, as `perplexity --mix --json` prints them, the mix's
  under "mix" (and its per-character bits there);
- OpenAI's `logprobs`: the mix's, the chosen character's and the top ones from one whole distribution per
  position, so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from charlm.counts.estimate import distributions
from charlm.counts.sampling import MixedNext, mixed_log_probs, sampler
from charlm.counts.scoring import Mix, figures, load_mix, mixed_losses
from charlm.evaluate import CharLosses


@dataclass(frozen=True)
class ServedMix:
    """The served model's mix (its index and static mixer, shared read-only by the workers), and the
    --max-copy guard of its samples."""

    mix: Mix
    max_copy: int | None = None

    @classmethod
    def load(cls, model, *, max_copy: int | None, say: Callable[[str], object]) -> ServedMix:
        """The mix of `model` (charlm.load's), fitted and kept on first use, before the server listens."""
        return cls(load_mix(model.path, model.checkpoint, model.net, device=model.device, say=say), max_copy)

    def sampler(self) -> MixedNext:
        """A new request's sampler of the mix (it keeps that request's rows)."""
        return sampler(self.mix, max_copy=self.max_copy)

    def scored(self, losses: CharLosses, ids: torch.Tensor, *, bits: bool) -> dict:
        """POST /perplexity's "mix": the mix's figures of a text the network scored (`losses`, with features)."""
        mixed = mixed_losses(losses, ids, self.mix.index, self.mix.static)
        result = figures(mixed) | {"gain": 1 - mixed.nats_per_char / losses.nats_per_char, "reading": "static"}
        if bits:
            result["bits"] = (mixed.nats.double() / np.log(2)).tolist()
        return result

    def log_probs(self, losses: CharLosses, ids: list[int]) -> torch.Tensor:
        """(len(ids) - 1, V) the mix's log-probabilities of each position's next character, from the
        network's whole distributions (`losses` kept with top_k = V)."""
        network = torch.zeros(losses.chars, self.mix.index.vocab_size, dtype=torch.float64)
        network.scatter_(1, losses.top_ids.long(), losses.top_probs.double())
        history, positions = np.asarray(ids, dtype=np.int64), np.arange(1, losses.chars + 1)
        counts = distributions(self.mix.index, history, positions, self.mix.static.smoothing[0])
        return mixed_log_probs(network.log(), [counts], self.mix.static)
