"""The count index against a brute-force count: every order's occurrences, distinct next characters and hits,
and the interpolated probabilities, on small texts with repeats, unknown characters and edges."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

pytest.importorskip("pydivsufsort", reason="pydivsufsort not installed: pip install 'charlm[novelty]'")

from charlm.counts.estimate import ORDERS, distributions, evidence, target_probs  # noqa: E402
from charlm.counts.index import COUNT_AT_ONCE, GATHER, CountIndex, _groups, large_histograms  # noqa: E402

V = 5


def brute_orders(train: list[int], history: list[int], p: int) -> list[collections.Counter]:
    """The next-character counts of each order's context before history[p], shortest first, up to the longest
    that occurs (a context holding -1, a character outside the vocabulary, never does)."""
    orders = []
    for k in range(p + 1):
        context = tuple(history[p - k : p])
        counts = collections.Counter(
            train[i] for i in range(max(k, 1), len(train)) if tuple(train[i - k : i]) == context
        )
        if not counts:
            break
        orders.append(counts)
    return orders


def brute_probs(orders: list[collections.Counter], params: torch.Tensor) -> np.ndarray:
    p = np.full(V, 1.0 / V)
    for k, counts in enumerate(orders):
        t, f = params[min(k, ORDERS)].tolist()
        n, u = sum(counts.values()), len(counts)
        a = u * np.exp(t) + np.exp(f)
        p = np.array([(counts[c] + a * p[c]) / (n + a) for c in range(V)])
    return p


def texts(seed: int):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, V, size=int(rng.integers(1, 80)))
    train[: len(train) // 2] = np.tile([0, 1, 2], 40)[: len(train) // 2]  # long repeats: deep orders
    history = rng.integers(0, V, size=40)
    history[5:20] = np.tile([0, 1, 2], 5)
    history[int(rng.integers(0, 40))] = -1
    return train, history


@pytest.mark.parametrize("seed", range(12))
def test_every_orders_counts_equal_a_brute_force_count(seed):
    train, history = texts(seed)
    index = CountIndex.of(train, V)
    positions = np.arange(len(history))
    ev = evidence(index, history, positions)
    for p in positions.tolist():
        orders = brute_orders(train.tolist(), history.tolist(), p)
        assert int(ev.longest[p]) == len(orders) - 1
        for k, counts in enumerate(orders):
            assert ev.n[k, p] == sum(counts.values()), (p, k)
            assert ev.u[k, p] == len(counts), (p, k)
            if history[p] >= 0:
                assert ev.hits[k, p] == counts[history[p]], (p, k)
        assert (ev.n[len(orders) :, p] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_the_probabilities_equal_the_formula_over_the_brute_force_counts(seed):
    train, history = texts(seed)
    index = CountIndex.of(train, V)
    params = torch.tensor(np.random.default_rng(seed).normal(0, 1, (ORDERS + 1, 2)))
    positions = np.arange(len(history))
    probs = target_probs(evidence(index, history, positions), params, V)
    whole, _ = distributions(index, history, positions, params)
    for p in positions.tolist():
        expected = brute_probs(brute_orders(train.tolist(), history.tolist(), p), params)
        np.testing.assert_allclose(whole[p].numpy(), expected, rtol=1e-9)  # numpy against plain Python: rounding apart
        assert float(whole[p].sum()) == pytest.approx(1.0)
        if history[p] >= 0:
            assert float(probs[p]) == pytest.approx(expected[history[p]], rel=1e-9)


def test_a_context_longer_than_a_large_range_is_counted_the_same_gathered_or_whole():
    # one character repeated: order k >= 1's context ends at positions k-1 .. 298 with a next character (order 0:
    # every position but the first is a next character), past GATHER at the low orders
    train = np.zeros(300, dtype=np.int64)
    index = CountIndex.of(train, 2)
    history = np.zeros(10, dtype=np.int64)
    ev = evidence(index, history, np.arange(10))
    for p in range(10):
        for k in range(p + 1):
            expected = 299 if k == 0 else 300 - k
            assert ev.n[k, p] == expected and ev.u[k, p] == 1 and ev.hits[k, p] == expected


def test_large_ranges_counted_at_once_equal_each_range_counted_alone():
    rng = np.random.default_rng(1)
    # three characters, one rare: order 0's ranges hold ~10,000 occurrences (past COUNT_AT_ONCE), order 5's tens
    train = rng.choice(3, 20_000, p=[0.6, 0.35, 0.05])
    index = CountIndex.of(train, 3)
    history = rng.choice(3, 400, p=[0.6, 0.35, 0.05])
    lo, hi = index.intervals(history, np.arange(400))
    for k in range(lo.shape[0]):
        large = np.flatnonzero(hi[k] - lo[k] > GATHER)
        expected = [
            np.bincount(index.succ[a:b], minlength=4)[:3] for a, b in zip(lo[k][large], hi[k][large], strict=True)
        ]
        assert np.array_equal(
            large_histograms(index, lo[k][large], hi[k][large]).reshape(-1, 3), np.array(expected).reshape(-1, 3)
        )
    assert (hi[0] - lo[0]).max() > COUNT_AT_ONCE


def test_groups_cover_every_range_once_within_the_budget():
    which, sizes = np.arange(50), np.random.default_rng(2).integers(65, 500, 50)
    groups = list(_groups(which, sizes, width=4, budget=1000))
    assert np.array_equal(np.concatenate(groups), which)
    for group in groups:
        assert len(group) == 1 or (sizes[group].sum() <= 1000 and len(group) * 4 <= 1000)
