"""Batches: X and Y are (batch_size, num_steps) with Y = X shifted by one character.

Two sampling modes, one object each. `Batches.epoch(generator, share)` gives an epoch's (X, Y) pairs and
their count, drawing every random choice (offset, window lengths, order) from `generator`, so a resume
that restores the generator replays the same epoch. `share` keeps this process's block of the streams
(or windows) when several processes train together; the batch is cut as for all of them.

Consecutive sampling (d2l's data_iter_consecutive), batch_size 3, num_steps 4, text a b c ... :

    stream 0:  a b c d | e f g h | i ...        batch 1 = the first window of every stream,
    stream 1:  p q r s | t u v w | x ...        batch 2 = the second, and so on: window i of a stream
    stream 2:  F G H I | J K L M | N ...        continues where window i-1 ended, so the hidden state
               batch 1   batch 2                carried between batches has seen unbroken text.

Random sampling (d2l's data_iter_random): the text is cut into windows of num_steps, shuffled; each
batch is batch_size of them, independent, so the hidden state starts from zeros every batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]
ALL = slice(None)


class ConsecutiveBatches:
    """`batch_size` parallel streams walked in windows of `num_steps`; the hidden state is carried.

    random_offset: each epoch skips a random number (< num_steps) of leading characters, so the window
    boundaries move, without costing the epoch a batch. variable_bptt: AWD-LSTM's random window lengths
    (see bptt_lengths); the epoch's batch count then varies and `len()` is the expected count.
    """

    carries_hidden = True

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        num_steps: int,
        *,
        random_offset: bool = False,
        variable_bptt: bool = False,
    ):
        self.ids, self.batch_size, self.num_steps = ids, batch_size, num_steps
        self.random_offset, self.variable_bptt = random_offset, variable_bptt

    @property
    def min_chars(self) -> int:
        """The shortest text that yields one batch."""
        return min_chars(self.batch_size, self.num_steps, "consecutive")

    def __len__(self) -> int:
        return num_consecutive_batches(len(self.ids), self.batch_size, self.num_steps)

    def epoch(self, generator: torch.Generator, share: slice = ALL) -> tuple[Iterator[Batch], int]:
        n, b, steps = len(self.ids), self.batch_size, self.num_steps
        offset = 0
        if self.random_offset:
            spare = n - b * (len(self) * steps + 1)  # characters an offset may skip and keep the batch count
            offset = int(torch.randint(0, min(steps, spare + 1), (1,), generator=generator))
        if self.variable_bptt:
            lengths = bptt_lengths((n - offset) // b, steps, generator)
            return consecutive_batches(self.ids, b, steps, offset=offset, share=share, lengths=lengths), len(lengths)
        batches = consecutive_batches(self.ids, b, steps, offset=offset, share=share)
        return batches, num_consecutive_batches(n, b, steps, offset)


class RandomBatches:
    """Non-overlapping windows in a random order; every batch starts from a zero hidden state."""

    carries_hidden = False

    def __init__(self, ids: torch.Tensor, batch_size: int, num_steps: int):
        self.ids, self.batch_size, self.num_steps = ids, batch_size, num_steps

    @property
    def min_chars(self) -> int:
        return min_chars(self.batch_size, self.num_steps, "random")

    def __len__(self) -> int:
        return num_random_batches(len(self.ids), self.batch_size, self.num_steps)

    def epoch(self, generator: torch.Generator, share: slice = ALL) -> tuple[Iterator[Batch], int]:
        return random_batches(self.ids, self.batch_size, self.num_steps, generator=generator, share=share), len(self)


Batches = ConsecutiveBatches | RandomBatches


def make_batches(ids: torch.Tensor, train) -> Batches:
    """The batches that a TrainConfig asks for."""
    if train.sampling == "random":
        return RandomBatches(ids, train.batch_size, train.num_steps)
    return ConsecutiveBatches(
        ids, train.batch_size, train.num_steps, random_offset=train.random_offset, variable_bptt=train.variable_bptt
    )


def min_chars(batch_size: int, num_steps: int, sampling: str) -> int:
    """The shortest training split that yields one batch."""
    if sampling == "consecutive":
        return batch_size * (num_steps + 1)
    return batch_size * num_steps + 1


def consecutive_batches(
    ids: torch.Tensor,
    batch_size: int,
    num_steps: int,
    *,
    offset: int = 0,
    share: slice = ALL,
    lengths: list[int] | None = None,
) -> Iterator[Batch]:
    """The windows of the picture above. `offset` skips characters at the start; `lengths` gives each
    window its own length (variable BPTT); `share` keeps some of the streams."""
    ids = ids[offset:]
    stream_len = len(ids) // batch_size
    streams = ids[: batch_size * stream_len].view(batch_size, stream_len)[share]
    if lengths is None:
        lengths = [num_steps] * ((stream_len - 1) // num_steps)
    start = 0
    for length in lengths:
        yield streams[:, start : start + length], streams[:, start + 1 : start + length + 1]
        start += length


def bptt_lengths(stream_len: int, num_steps: int, generator: torch.Generator) -> list[int]:
    """AWD-LSTM's variable BPTT: each window is num_steps long (half that 5% of the time), jittered by
    a normal draw with deviation 5, at least 5 and at most 2 x num_steps, until the streams are used up.

    Varying the lengths moves the window boundaries from epoch to epoch, so every character is trained
    on with varied amounts of context. Drawn once per epoch from `generator`: a resume replays them.
    """
    count = stream_len // 5 + 1  # enough draws for the shortest windows
    base = torch.where(torch.rand(count, generator=generator) < 0.05, num_steps / 2, float(num_steps))
    drawn = (base + 5 * torch.randn(count, generator=generator)).long().clamp(min(5, num_steps), 2 * num_steps)
    ends = drawn.cumsum(0)
    usable = stream_len - 1  # the targets of the last window need one character more
    full = int((ends <= usable).sum())
    lengths = drawn[:full].tolist()
    rest = usable - sum(lengths)
    if rest >= min(5, num_steps):
        lengths.append(rest)
    return lengths


def num_consecutive_batches(n: int, batch_size: int, num_steps: int, offset: int = 0) -> int:
    return max(0, ((n - offset) // batch_size - 1) // num_steps)


def random_batches(
    ids: torch.Tensor, batch_size: int, num_steps: int, *, generator: torch.Generator, share: slice = ALL
) -> Iterator[Batch]:
    """Windows drawn in a random order; `share` keeps some of each batch's windows (processes drawing
    with equal generators take disjoint shares)."""
    num_windows = (len(ids) - 1) // num_steps
    order = torch.randperm(num_windows, generator=generator)
    steps = torch.arange(num_steps)
    for i in range(num_windows // batch_size):
        starts = order[i * batch_size : (i + 1) * batch_size][share] * num_steps
        index = starts[:, None] + steps
        yield ids[index], ids[index + 1]


def num_random_batches(n: int, batch_size: int, num_steps: int) -> int:
    return ((n - 1) // num_steps) // batch_size
