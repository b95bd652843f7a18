"""The counts' evidence over a whole text, window by window: of the training text's index (static), and of the
text read so far (with dynamic evaluation: what a compressor counts).

 text      c0 c1 ... c2047 | c2048 ... c4095 | c4096 ...
 read-so-far index:  empty  ─►  of c0..c2047  ─►  of c0..c4095 ...   rebuilt at each chunk's start

A chunk's characters are counted once the chunk has been read: within a chunk the index is the one built at
its start (a suffix array built per character would cost far more than it brings). A chunk grows with the
text read (READ_CHUNK, or a READ_SHARE of what was read), so rebuilding costs O(n log n) over a whole text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charlm.counts.estimate import WINDOW, Evidence, evidence
from charlm.counts.index import CountIndex

READ_CHUNK, READ_SHARE = 2048, 32


def chunks(first: int, end: int, *, reading: bool) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of positions first..end-1: fixed windows, or reading's growing chunks."""
    start = first
    while start < end:
        size = max(READ_CHUNK, start // READ_SHARE) if reading else WINDOW
        yield start, min(end, start + min(size, WINDOW))
        start += min(size, WINDOW)


def evidence_of(index: CountIndex | None, ids: np.ndarray, start: int, stop: int, *, vocab_size: int) -> Evidence:
    """The Evidence for positions start..stop-1 of `ids`: of `index`, or (None) of the text read before
    `start`, indexed now."""
    positions = np.arange(start, stop)
    if index is None:
        if start < 2:
            return empty(len(positions))
        index = CountIndex.of(ids[:start], vocab_size)
    return evidence(index, ids, positions)


def empty(positions: int) -> Evidence:
    """The Evidence of counts that know nothing."""
    zeros = torch.zeros(1, positions, dtype=torch.float64)
    return Evidence(zeros, zeros, zeros, torch.zeros(positions, dtype=torch.float64), torch.full((positions,), -1))


def concat(parts: list[Evidence]) -> Evidence:
    """One Evidence of consecutive windows' (their orders padded with zeros: an order that never occurs)."""
    orders = max(p.n.shape[0] for p in parts)

    def padded(name: str) -> torch.Tensor:
        rows = [getattr(p, name) for p in parts]
        return torch.cat([torch.nn.functional.pad(r, (0, 0, 0, orders - r.shape[0])) for r in rows], dim=1)

    return Evidence(
        padded("n"),
        padded("u"),
        padded("hits"),
        torch.cat([p.top for p in parts]),
        torch.cat([p.longest for p in parts]),
    )
