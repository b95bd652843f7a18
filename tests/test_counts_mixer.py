"""The mixer: a gate at zero weight gives the network's figures to the last bit, fitting never ends above the
network alone on the text it is fitted on, and the saved form is read back only when it is the mixer's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pydivsufsort", reason="pydivsufsort not installed: pip install 'charlm[novelty]'")

from charlm.counts.estimate import ORDERS  # noqa: E402
from charlm.counts.index import CountIndex  # noqa: E402
from charlm.counts.mixer import INPUTS, Mixer, fit  # noqa: E402
from charlm.counts.reading import chunks, concat, evidence_of  # noqa: E402
from charlm.counts.scoring import mixed_losses  # noqa: E402
from charlm.evaluate import CharLosses  # noqa: E402

V = 6


def network_losses(ids: torch.Tensor, seed: int = 0) -> CharLosses:
    """A made-up network's losses of ids[1:]: a softmax over random logits that favour the right character."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(ids) - 1, V, generator=g)
    logits[torch.arange(len(ids) - 1), ids[1:]] += 1.0
    log_probs = torch.log_softmax(logits, 1)
    nats = -log_probs[torch.arange(len(ids) - 1), ids[1:]]
    entropy = -(log_probs.exp() * log_probs).sum(1)
    features = torch.stack([entropy, log_probs.max(1).values], 1)
    count = torch.bincount(ids[1:], minlength=V)
    cost = torch.bincount(ids[1:], weights=nats.double(), minlength=V)
    return CharLosses(nats, float(nats.double().sum()), len(ids) - 1, count, cost, features=features)


def repeating_text(n: int, seed: int) -> np.ndarray:
    """Blocks of 23 characters: one phrase (the same in every text) 60% of the time, else random ones."""
    phrase = np.random.default_rng(99).integers(0, V, size=23)
    rng = np.random.default_rng(seed)
    text = np.concatenate([phrase if rng.random() < 0.6 else rng.integers(0, V, size=23) for _ in range(n // 23)])
    return text.astype(np.int64)


def off(experts: int) -> Mixer:
    mixer = Mixer.initial(V, experts)
    for gate in mixer.gate:
        gate[-1] = -torch.inf  # the bias: the counts' weight is exactly 0
    return mixer


@pytest.mark.parametrize("experts", [1, 2])
def test_a_gate_at_zero_weight_gives_the_networks_losses_to_the_last_bit(experts):
    train, scored = repeating_text(3000, 0), torch.from_numpy(repeating_text(1200, 1))
    index = CountIndex.of(train, V)
    network = network_losses(scored)
    mixed = mixed_losses(network, scored, index, off(experts))
    assert torch.equal(mixed.nats, network.nats)
    assert mixed.total == float(network.nats.double().sum())
    assert torch.equal(mixed.count, network.count) and torch.equal(mixed.cost, network.cost)


def test_fitting_ends_below_the_network_alone_on_a_text_the_counts_know():
    train, scored = repeating_text(4000, 0), torch.from_numpy(repeating_text(2000, 1))
    index = CountIndex.of(train, V)
    network = network_losses(scored)
    history = scored.numpy()
    end = network.chars + 1
    static = concat([evidence_of(index, history, *c, vocab_size=V) for c in chunks(1, end, reading=False)])
    read = concat([evidence_of(None, history, *c, vocab_size=V) for c in chunks(1, end, reading=True)])
    for evidence in ([static], [static, read]):
        mixer, loss = fit(V, -network.nats.double(), network.features.double(), evidence)
        assert loss < network.nats_per_char * 0.9  # the phrase repeats: the counts know what follows
        again = mixed_losses(network, scored, index, mixer)
        assert again.nats_per_char == pytest.approx(loss, rel=1e-6)


def test_the_saved_form_reads_back_and_a_wrong_one_is_refused():
    mixer = Mixer.initial(V, 2)
    mixer.gate[1][3] = 0.25
    back = Mixer.from_dict(mixer.to_dict())
    assert back.vocab_size == V and all(torch.equal(a, b) for a, b in zip(back.gate, mixer.gate, strict=True))
    saved = mixer.to_dict()
    for broken in (
        {**saved, "gate": saved["gate"][:1]},
        {**saved, "gate": [[0.0] * (INPUTS - 1)] * 2},
        {**saved, "smoothing": [[[0.0, 0.0]] * ORDERS] * 2},
        {**saved, "gate": [[float("nan")] * INPUTS] * 2},
        {**saved, "gate": [[0.0] * INPUTS] * 3, "smoothing": saved["smoothing"] * 2},
    ):
        with pytest.raises((ValueError, TypeError, KeyError)):
            Mixer.from_dict(broken)
