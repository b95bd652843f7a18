"""Beam search against brute force over every continuation of a tiny model and vocabulary."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import make_rnn

from charlm.data import Vocab
from charlm.generation import sampling as gen
from charlm.generation.fast_step import FastStep

VOCAB = Vocab("ab\n")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = make_rnn(len(VOCAB), kind="gru", hidden_size=12, num_layers=2, input="embedding", embed_size=6)
    with torch.no_grad():
        m.head.weight.mul_(4.0)  # sharper, so that the scores are well apart
    return m.eval()


def brute_force(model, prefix: str, length: int, stop: str | None = None) -> list[tuple[str, float]]:
    """Every continuation of `length` characters (cut after the first stop text), by summed log-probability."""
    texts = {"".join(chars) for chars in itertools.product(VOCAB.chars, repeat=length)}
    if stop is not None:
        texts = {_cut(prefix, t, stop) for t in texts}
    scored = []
    with torch.inference_mode():
        for text in sorted(texts):
            ids = torch.tensor([VOCAB.encode(prefix + text)])
            logits, _ = model(ids[:, :-1], None)
            log_probs = logits[:, 0].log_softmax(-1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
            scored.append((text, float(log_probs[len(prefix) - 1 :].sum())))
    return sorted(scored, key=lambda item: -item[1])


def _cut(prefix: str, text: str, stop: str) -> str:
    for end in range(1, len(text) + 1):
        if (prefix + text[:end]).endswith(stop):
            return text[:end]
    return text


def test_beams_wide_enough_to_keep_everything_find_the_brute_force_ranking(model):
    length = 5
    exact = brute_force(model, "ab", length)
    greedy = gen.generate(model, VOCAB, "ab", length)[0][2:]
    assert exact[0][0] != greedy, "the fixture should make greedy miss the best continuation"
    assert all(a[1] - b[1] > 1e-4 for a, b in itertools.pairwise(exact[:6])), "no near-ties in the top 5"
    found = gen.samples(model, VOCAB, "ab", length=length, beam=len(VOCAB) ** length, num_samples=5)
    assert [s.text[2:] for s in found] == [text for text, _ in exact[:5]]
    for sample, (_, log_prob) in zip(found, exact, strict=False):
        assert sample.bits_per_char == pytest.approx(-log_prob / length / math.log(2), abs=1e-5)
        assert sample.stop is None and sample.generated == length


def test_a_few_beams_still_beat_greedy_here_and_one_beam_is_greedy(model):
    length = 5
    exact = dict(brute_force(model, "ab", length))
    greedy = gen.generate(model, VOCAB, "ab", length)[0]
    assert gen.generate(model, VOCAB, "ab", length, beam=1) == [greedy]
    (best,) = gen.samples(model, VOCAB, "ab", length=length, beam=3)
    assert exact[best.text[2:]] > exact[greedy[2:]]
    assert exact[best.text[2:]] == pytest.approx(max(exact.values()))


@pytest.mark.parametrize(("prefix", "stop", "count"), [("b", "a\n", 6), ("ab", "ba", 4)])  # "ba" may begin in "ab"
def test_stop_texts_finish_beams(model, prefix, stop, count):
    length = 5
    exact = brute_force(model, prefix, length, stop=stop)
    assert all(a[1] - b[1] > 1e-4 for a, b in itertools.pairwise(exact[: count + 1])), "no near-ties"
    found = gen.samples(model, VOCAB, prefix, length=length, beam=len(VOCAB) ** length, num_samples=count, stop=(stop,))
    assert [s.text[len(prefix) :] for s in found] == [text for text, _ in exact[:count]]
    for sample, (text, log_prob) in zip(found, exact, strict=False):
        assert sample.stop == (stop if (prefix + text).endswith(stop) else None)
        assert sample.bits_per_char == pytest.approx(-log_prob / len(text) / math.log(2), abs=1e-5)
    assert {s.stop for s in found} == ({stop, None} if stop == "a\n" else {stop})


def test_beam_search_is_deterministic_and_one_batched_step_per_character(model, monkeypatch):
    first = gen.generate(model, VOCAB, "a", 30, beam=4, num_samples=4)
    calls = []
    original = FastStep.__call__

    def counted(self, ids, hidden):
        calls.append(ids.shape[0])
        return original(self, ids, hidden)

    monkeypatch.setattr(FastStep, "__call__", counted)
    assert gen.generate(model, VOCAB, "a", 30, beam=4, num_samples=4) == first
    assert len(calls) == 30 and max(calls) == 4  # one call per character, all beams in it
    assert len(set(first)) == 4
