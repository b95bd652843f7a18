"""charlm.data.batches: consecutive and random batches, compared with d2l's own iterators."""

from __future__ import annotations

import d2l_reference
import pytest
import torch

from charlm.config import TrainConfig
from charlm.data import batches as batching

CASES = [(100, 4, 5), (101, 3, 7), (3000, 32, 35), (64, 2, 15), (36, 1, 35), (50, 16, 1), (50, 5, 3)]


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), CASES)
def test_consecutive_batches_equal_d2l(n, batch_size, num_steps):
    ids = torch.randperm(n)
    ours = list(batching.consecutive_batches(ids, batch_size, num_steps))
    ref = list(d2l_reference.data_iter_consecutive(ids.tolist(), batch_size, num_steps))  # the seed's own code
    assert len(ours) == len(ref) > 0
    for (x, y), (rx, ry) in zip(ours, ref, strict=True):
        assert x.shape == y.shape == (batch_size, num_steps)
        assert torch.equal(x.float(), rx) and torch.equal(y.float(), ry)


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), CASES)
def test_consecutive_windows_continue_each_stream(n, batch_size, num_steps):
    ids = torch.arange(n)
    batches = list(batching.consecutive_batches(ids, batch_size, num_steps))
    stream_len = n // batch_size
    for i, (x, y) in enumerate(batches):
        assert torch.equal(y, x + 1)
        for b in range(batch_size):
            assert x[b, 0] == b * stream_len + i * num_steps  # stream b, window i
        if i:
            prev_x, prev_y = batches[i - 1]
            assert torch.equal(x[:, 0], prev_x[:, -1] + 1)  # picks up right after the last window
            assert torch.equal(x[:, 0], prev_y[:, -1])


@pytest.mark.parametrize("offset", [0, 1, 3, 6])
def test_consecutive_offset_shifts_the_start(offset):
    ids = torch.arange(200)
    ours = list(batching.consecutive_batches(ids, 4, 7, offset=offset))
    ref = list(d2l_reference.data_iter_consecutive(ids[offset:].tolist(), 4, 7))
    assert len(ours) == len(ref)
    assert all(
        torch.equal(x.float(), rx) and torch.equal(y.float(), ry) for (x, y), (rx, ry) in zip(ours, ref, strict=True)
    )
    assert int(ours[0][0][0, 0]) == offset


def test_num_consecutive_batches_matches_the_iterator():
    checked = 0
    for batch_size, num_steps in [(1, 1), (1, 5), (3, 4), (4, 7), (8, 2)]:
        for offset in (0, 2, 5):
            for n in range(offset + batch_size, 90):
                got = batching.num_consecutive_batches(n, batch_size, num_steps, offset)
                expected = len(
                    list(batching.consecutive_batches(torch.arange(n), batch_size, num_steps, offset=offset))
                )
                assert got == expected, (n, batch_size, num_steps, offset)
                checked += expected > 0
    assert checked > 100


def test_num_consecutive_batches_never_negative():
    assert len(list(batching.consecutive_batches(torch.arange(3), 4, 2))) == 0
    assert batching.num_consecutive_batches(3, 4, 2) == 0


def test_min_chars_is_the_shortest_split_with_one_batch():
    for batch_size, num_steps in [(1, 1), (4, 7), (32, 35)]:
        need = batching.min_chars(batch_size, num_steps, "consecutive")
        assert batching.num_consecutive_batches(need, batch_size, num_steps) == 1
        assert batching.num_consecutive_batches(need - 1, batch_size, num_steps) == 0
        need = batching.min_chars(batch_size, num_steps, "random")
        assert batching.num_random_batches(need, batch_size, num_steps) == 1
        assert batching.num_random_batches(need - 1, batch_size, num_steps) == 0


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), [(100, 4, 5), (101, 3, 7), (1000, 32, 6), (36, 1, 35)])
def test_random_batches_are_disjoint_windows(n, batch_size, num_steps):
    ids = torch.arange(n)
    gen = torch.Generator().manual_seed(0)
    batches = list(batching.random_batches(ids, batch_size, num_steps, generator=gen))
    assert len(batches) == batching.num_random_batches(n, batch_size, num_steps) > 0
    seen: set[int] = set()
    for x, y in batches:
        assert x.shape == y.shape == (batch_size, num_steps)
        assert torch.equal(y, x + 1)
        assert int(y.max()) < n
        for row in x:
            assert row[0] % num_steps == 0  # d2l: windows start at multiples of num_steps
            assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + num_steps))
            window = set(row.tolist())
            assert not window & seen, "two windows of one epoch overlap"
            seen |= window
    assert len(seen) == len(batches) * batch_size * num_steps


def test_random_batches_cover_every_window_when_they_divide_evenly():
    n, batch_size, num_steps = 4 * 5 * 3 + 1, 4, 5  # 12 windows, 3 batches
    batches = list(
        batching.random_batches(torch.arange(n), batch_size, num_steps, generator=torch.Generator().manual_seed(1))
    )
    starts = sorted(int(s) for x, _ in batches for s in x[:, 0])
    assert starts == list(range(0, n - 1, num_steps))


def test_random_batches_reproducible_for_a_seed():
    ids = torch.arange(500)

    def epoch(seed):
        return [
            torch.cat([x, y])
            for x, y in batching.random_batches(ids, 4, 6, generator=torch.Generator().manual_seed(seed))
        ]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert len(a) == len(b) == len(c)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


# ---------------------------------------------------------------------------------------------------
# The batch objects: an epoch's batches and their count, every random choice drawn from one generator


def pairs(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


def same(a, b) -> bool:
    if len(a) != len(b):
        return False
    return all(torch.equal(x, p) and torch.equal(y, q) for (x, y), (p, q) in zip(a, b, strict=True))


def test_make_batches_follows_the_train_config():
    ids = torch.arange(500)
    made = batching.make_batches(ids, TrainConfig(batch_size=4, num_steps=6, sampling="random"))
    assert isinstance(made, batching.RandomBatches) and not made.carries_hidden
    made = batching.make_batches(ids, TrainConfig(batch_size=4, num_steps=6, random_offset=True, variable_bptt=True))
    assert isinstance(made, batching.ConsecutiveBatches) and made.carries_hidden
    assert made.random_offset and made.variable_bptt
    assert made.min_chars == batching.min_chars(4, 6, "consecutive")


def test_consecutive_epoch_equals_the_function_and_shares_split_the_streams():
    ids = torch.arange(1000)
    batches = batching.ConsecutiveBatches(ids, 4, 7)
    epoch, count = batches.epoch(torch.Generator().manual_seed(0))
    got = pairs(epoch)
    assert count == len(batches) == len(got) == batching.num_consecutive_batches(1000, 4, 7)
    assert same(got, pairs(batching.consecutive_batches(ids, 4, 7)))
    halves = [pairs(batches.epoch(torch.Generator().manual_seed(0), share)[0]) for share in (slice(0, 2), slice(2, 4))]
    joined = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*halves, strict=True)]
    assert same(joined, got)


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_consecutive_epoch_with_random_choices_replays_from_the_generator(variable_bptt):
    ids = torch.arange(3000)
    batches = batching.ConsecutiveBatches(ids, 4, 10, random_offset=True, variable_bptt=variable_bptt)
    runs = []
    for seed in (3, 3, 4):
        epoch, count = batches.epoch(torch.Generator().manual_seed(seed))
        runs.append(pairs(epoch))
        assert count == len(runs[-1]) > 0
        if not variable_bptt:
            assert count == len(batches)  # the offset never costs the epoch a batch
    assert same(runs[0], runs[1]) and not same(runs[0], runs[2])


def test_random_epoch_equals_the_function():
    ids = torch.arange(500)
    batches = batching.RandomBatches(ids, 4, 6)
    epoch, count = batches.epoch(torch.Generator().manual_seed(5))
    got = pairs(epoch)
    assert count == len(batches) == len(got) == batching.num_random_batches(500, 4, 6)
    assert same(got, pairs(batching.random_batches(ids, 4, 6, generator=torch.Generator().manual_seed(5))))
    share = pairs(batches.epoch(torch.Generator().manual_seed(5), slice(1, 3))[0])
    assert same(share, [(x[1:3], y[1:3]) for x, y in got])
