"""Sampling from the mix: at each step, each row's next-character distribution is the network's and the counts'
(of the training text) weighted by the static mixer's gate, as in scoring.

generation.sampling.Stream calls it through three methods (`start`, `log_probs`, `push`), so the sampler knows
nothing of counts. The counts' distribution needs each row's whole text so far, so rows are looked up one by
one: a step costs a few milliseconds per row (the orders' binary searches), not a loop over characters.

`max_copy`: once a row's context matches the training text over that many characters, the counts' weight is
0 for that row (the network alone), so the mix does not recite a long passage it knows by heart.

After `generate --adapt FILE` the sampler has a second index, of the text the network adapted to, mixed by the
dynamic mixer (fitted with the counts of the text read so far): the counts, too, know what was just read.
"""

from __future__ import annotations

import numpy as np
import torch

from charlm.counts.estimate import distributions
from charlm.counts.index import CountIndex
from charlm.counts.mixer import Mixer


class MixedNext:
    """The mix's next-character log-probabilities for the rows of a sampler (see the module's docstring)."""

    def __init__(self, indexes: list[CountIndex], mixer: Mixer, *, max_copy: int | None = None):
        """`indexes`: the training text's, and with the dynamic mixer also the adapted text's."""
        if len(indexes) != mixer.experts:
            raise ValueError(f"{len(indexes)} indexes for a mixer of {mixer.experts} count experts")
        self.indexes, self.mixer, self.max_copy = indexes, mixer, max_copy
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
        pairs = zip(self.indexes, self.mixer.smoothing, strict=True)
        experts = [self._counts(index, smoothing) for index, smoothing in pairs]
        trained = experts[0][1]
        # the longest order whose context occurs in the training text: that many characters are a copy
        guarded = trained[:, 0] >= self.max_copy if self.max_copy is not None else None
        self.copied = trained[:, 0].long().tolist()
        return mixed_log_probs(network, experts, self.mixer, network_alone=guarded).to(logits.device, torch.float32)

    def _counts(self, index: CountIndex, smoothing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, V) one index's distributions after each row's text, and (rows, 4) the gate's features."""
        found = [distributions(index, row, np.array([len(row)]), smoothing) for row in self.rows]
        return torch.cat([counts for counts, _ in found]), torch.cat([features for _, features in found])


def mixed_log_probs(
    network: torch.Tensor, experts: list[tuple[torch.Tensor, torch.Tensor]], mixer: Mixer, *, network_alone=None
) -> torch.Tensor:
    """(positions, V) log-probabilities of the mix, float64: `network` the network's log-probabilities, `experts`
    each count index's (distributions, gate features) as `distributions` gives them; `network_alone`: the
    positions whose counts get no weight (max_copy's guard)."""
    probs = network.exp()
    lstm_features = torch.stack([-(probs * network).nan_to_num().sum(1), network.max(1).values], 1)
    weights = mixer.weights([features for _, features in experts], lstm_features)
    if network_alone is not None:
        alone = torch.zeros_like(weights[0])
        alone[0] = 1.0
        weights = torch.where(network_alone[:, None], alone, weights)
    mixed = weights[:, :1] * probs
    for e, (counts, _) in enumerate(experts, start=1):
        mixed = mixed + weights[:, e : e + 1] * counts
    return mixed.clamp(min=1e-300).log()


def sampler(mix, *, max_copy: int | None = None, read: torch.Tensor | None = None) -> MixedNext:
    """The sampler of `mix` (scoring.Mix): the training text's counts and the static mixer; with `read`, the
    ids of a text the network adapted to (generate --adapt), also that text's counts, by the dynamic mixer."""
    if read is None:
        return MixedNext([mix.index], mix.static, max_copy=max_copy)
    vocab_size = mix.index.vocab_size
    return MixedNext([mix.index, CountIndex.of(read.numpy(), vocab_size)], mix.dynamic, max_copy=max_copy)
