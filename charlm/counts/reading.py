"""The counts' evidence over a whole text, window by window: of the training text's index (static), and of the
text read so far (with dynamic evaluation: what a compressor counts).

 text      c0 c1 ... c63 | c64 ... c127 | c128 ...
 read-so-far index:  empty  ─►  of c0..c63  ─►  of c0..c127 ...   rebuilt at each chunk's start

A chunk's characters are counted once the chunk has been read: within a chunk the index is the one built at
its start (a suffix array built per character would cost far more than it brings). A chunk grows with the
text read (READ_CHUNK, or a READ_SHARE of what was read), so rebuilding costs O(n log n) over a whole text.
Short chunks are what a small text needs: a song's chorus comes back within a few hundred characters. With
chunks of 2,048 (and 1/32 of what was read) the Jay Chou lyrics' val split scored 6.90 bits/char dynamically
(the mix); with 64 (and 1/256) 4.69, below zpaq's 4.99; tiny shakespeare's 1.895 became 1.880.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from charlm.counts.estimate import WINDOW, Evidence, evidence
from charlm.counts.index import CountIndex

READ_CHUNK, READ_SHARE = 64, 256


def chunks(first: int, end: int, *, reading: bool) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of positions first..end-1: fixed windows, or reading's growing chunks."""
    start = first
    while start < end:
        size = max(READ_CHUNK, start // READ_SHARE) if reading else WINDOW
        yield start, min(end, start + min(size, WINDOW))
        start += min(size, WINDOW)


def evidence_of(
    index: CountIndex | None, ids: np.ndarray, start: int, stop: int, *, vocab_size: int, reset: int | None = None
) -> Evidence:
    """The Evidence for positions start..stop-1 of `ids`: of `index`, or (None) of the text read before
    `start`, indexed now (read_evidence; `reset`: see there)."""
    if index is None:
        return read_evidence(ids, start, stop, vocab_size=vocab_size, reset=reset)
    return evidence(index, ids, np.arange(start, stop))


def read_evidence(ids: np.ndarray, start: int, stop: int, *, vocab_size: int, reset: int | None = None) -> Evidence:
    """The Evidence of the text read before `start` for positions start..stop-1. With `reset` (the <eod> id of
    a run trained in document mode, whose network forgets at each one) only the current document's text is
    counted: a position after an <eod> read within the chunk knows nothing read, as the network's state."""
    first, known = 0, stop
    if reset is not None:
        ends = np.flatnonzero(ids[: stop - 1] == reset)
        before, inside = ends[ends < start], ends[ends >= start]
        first = int(before[-1]) + 1 if len(before) else 0
        known = int(inside[0]) + 1 if len(inside) else stop
    parts = []
    if known > start:
        read = ids[first:start]
        found = evidence(CountIndex.of(read, vocab_size), ids, np.arange(start, known)) if len(read) >= 2 else None
        parts.append(found if found is not None else empty(known - start))
    if stop > known:
        parts.append(empty(stop - known))
    return parts[0] if len(parts) == 1 else concat(parts)


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
