"""Sampling from the mix: at each step, each row's next-character distribution is the network's and the counts'
(of the training text) weighted by the static mixer's gate, as in scoring.

generation.sampling.Stream calls it through three methods (`start`, `log_probs`, `push`), so the sampler knows
nothing of counts. The counts' distribution needs each row's whole text so far, so rows are looked up one by
one: a step costs a few milliseconds per row (the orders' binary searches), not a loop over characters.

`max_copy`: once a row's context matches the training text over that many characters, the counts' weight is
0 for that row (the network alone), so the mix does not recite a long passage it knows by heart.
"""

from __future__ import annotations

import numpy as np
import torch

from charlm.counts.estimate import distributions
from charlm.counts.index import CountIndex
from charlm.counts.mixer import Mixer


class MixedNext:
    """The mix's next-character log-probabilities for the rows of a sampler (see the module's docstring)."""

    def __init__(self, index: CountIndex, mixer: Mixer, *, max_copy: int | None = None):
        self.index, self.mixer, self.max_copy = index, mixer, max_copy
        self.rows: list[np.ndarray] = []
        self.copied: list[int] = []  # each row's last matched length in the training text (the novelty guard)

    def start(self, context: torch.Tensor) -> None:
        """The rows' texts before the first step: (rows, length) ids."""
        self.rows = [row.astype(np.int64) for row in context.cpu().numpy()]

    def push(self, ids: torch.Tensor) -> None:
        """Each row's chosen id of this step."""
        self.rows = [np.append(row, i) for row, i in zip(self.rows, ids.cpu().tolist(), strict=True)]

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(rows, V) log-probabilities of the mix from the network's logits of this step (float32, logits' device)."""
        network = torch.log_softmax(logits.double().cpu(), dim=1)
        lstm_features = torch.stack([-(network.exp() * network).nan_to_num().sum(1), network.max(1).values], 1)
        counts, features = zip(*(self._counts(row) for row in self.rows), strict=True)
        count_features = torch.cat(features)
        weights = self.mixer.weights([count_features], lstm_features)
        if self.max_copy is not None:
            # the longest order whose context occurs: that many characters of the row's end are a copy
            guarded = count_features[:, 0] >= self.max_copy
            weights = torch.where(guarded[:, None], torch.tensor([1.0, 0.0], dtype=weights.dtype), weights)
        self.copied = count_features[:, 0].long().tolist()
        mixed = weights[:, :1] * network.exp() + weights[:, 1:] * torch.cat(counts)
        return mixed.clamp(min=1e-300).log().to(logits.device, torch.float32)

    def _counts(self, row: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return distributions(self.index, row, np.array([len(row)]), self.mixer.smoothing[0])
