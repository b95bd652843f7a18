"""counts.reading: the text read so far is counted chunk by chunk, and per document where the run resets at <eod>."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydivsufsort", reason="pydivsufsort not installed: pip install 'charlm[novelty]'")

from charlm.counts.reading import READ_CHUNK, chunks, read_evidence  # noqa: E402

EOD = 3


def documents(*texts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.append(t, EOD) for t in texts])


def test_chunks_cover_every_position_once_and_grow_with_the_text_read():
    found = list(chunks(1, 200_000, reading=True))
    assert found[0] == (1, 1 + READ_CHUNK) and found[-1][1] == 200_000
    assert all(a[1] == b[0] for a, b in zip(found, found[1:], strict=False))
    assert max(b - a for a, b in found) > READ_CHUNK  # past 65,536 read: a 32nd of it


def test_a_new_document_knows_nothing_of_the_one_before_it_where_the_run_resets():
    rng = np.random.default_rng(0)
    first = rng.integers(0, 3, 3000)
    ids = documents(first, first[:2500])  # the second document repeats the first's start
    start, stop = 3100, 5000  # a chunk inside the second document, after the first one's <eod>
    carried = read_evidence(ids, start, stop, vocab_size=4)
    alone = read_evidence(ids, start, stop, vocab_size=4, reset=EOD)
    # without the reset the counts of the first document know the repeat by heart; with it only the second
    # document's first 99 characters were read
    assert (carried.longest[-100:] >= 40).all()
    assert (alone.longest < carried.longest).any() and (alone.n[0] <= start - 3001).all()


def test_positions_after_an_eod_read_within_the_chunk_know_nothing():
    rng = np.random.default_rng(1)
    ids = documents(rng.integers(0, 3, 3000), rng.integers(0, 3, 3000))
    start, stop = 2049, 4000  # the first document's <eod> at 3000 lies inside this chunk
    ev = read_evidence(ids, start, stop, vocab_size=4, reset=EOD)
    at_eod = 3000 - start
    assert (ev.longest[: at_eod + 1] >= 0).all()  # up to predicting the <eod> itself: the first document's text
    assert (ev.longest[at_eod + 1 :] == -1).all() and (ev.n[:, at_eod + 1 :] == 0).all()
    same = read_evidence(ids, start, stop, vocab_size=4)
    assert (same.longest[at_eod + 1 :] >= 0).all()  # without the reset the text read goes on counting
