"""Novelty: how much of a text also occurs in a run's training split, found in a suffix array of that split.

`SuffixIndex` holds the training split's ids and their suffix array (sorted suffixes; `novelty_index` builds,
caches and checks it). For each position i of a text, `matches` finds the longest prefix of text[i:] that
occurs in training and one training offset where it does: a lower-bound binary search of all positions at
once (numpy, one batched comparison per step, O(len * log n)), then the longer common prefix of the query
with the two suffixes beside the place it would sort into (the suffix sharing the longest prefix with a
query is always one of those two). From those lengths come the report (`novelty`: the longest copied span,
the share of 8-, 16- and 32-character substrings found in training) and the copied spans --show marks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

SHARE_LENGTHS = (8, 16, 32)  # the substring lengths whose share found in training the report gives
MIN_SPAN = 16  # perplexity --novelty marks spans of at least this many characters found in training
WINDOW = 64  # characters compared per row and round: most comparisons end in the first window
# what a comparison reads past an end, and a character outside the vocabulary: never equal to an id (>= 0)
# or to each other, so every comparison ends; their order (unknown < text's end < query's end < any id)
# extends the suffix array's (a text suffix that ends sorts first) to the query's, so the search is sound
UNKNOWN, TEXT_END, QUERY_END = -3, -2, -1


@dataclass(frozen=True)
class SuffixIndex:
    """The training split's ids (`text`) and their suffix array (`sa`: text[sa[0]:] < text[sa[1]:] < ...);
    `newline` is the id of "\\n" (None: the vocabulary has none), for line numbers."""

    text: np.ndarray
    sa: np.ndarray
    newline: int | None

    def __len__(self) -> int:
        return len(self.text)

    @cached_property
    def _line_breaks(self) -> np.ndarray:  # once per index, at the first line number asked for
        if self.newline is None:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.text == self.newline)

    def line_of(self, offset: int) -> int:
        """The 1-based line of the training split on which the character at `offset` is."""
        return 1 + int(np.searchsorted(self._line_breaks, offset, side="left"))


@dataclass(frozen=True)
class Novelty:
    """What of a text (a sample) also occurs in training: the longest such span (its length and text, where
    it starts in the text, one training offset and line where it occurs: None when nothing matches), and
    for each of SHARE_LENGTHS the share of the text's substrings of that length found in training (None
    when the text is shorter). `training_item`: whether the whole text is a training document (None: not
    asked)."""

    chars: int
    longest: int
    longest_text: str
    start: int | None
    train_offset: int | None
    train_line: int | None
    shares: dict[int, float | None]
    training_item: bool | None = None

    def to_dict(self) -> dict:
        """The `novelty` object of `charlm generate --json` and of Model.novelty."""
        return {
            "chars": self.chars,
            "longest": {
                "length": self.longest,
                "text": self.longest_text,
                "start": self.start,
                "train_offset": self.train_offset,
                "train_line": self.train_line,
            },
            "shares": {str(k): v for k, v in self.shares.items()},
            "training_item": self.training_item,
        }


def encode(text: str, lookup: np.ndarray) -> np.ndarray:
    """`text` as int64 ids through a vocabulary's code point -> id table (Vocab.lookup_table: -1 where
    none); a character the vocabulary lacks becomes UNKNOWN, which matches nothing."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
    inside = points < len(lookup)
    ids = np.where(inside, lookup[np.where(inside, points, 0)], -1).astype(np.int64)
    return np.where(ids < 0, UNKNOWN, ids)


def _compare(index: SuffixIndex, query: np.ndarray, starts: np.ndarray, offsets: np.ndarray, skip: np.ndarray):
    """For each row r: the common prefix length of query[starts[r]:] and text[offsets[r]:], known to be at
    least skip[r], and whether the query's suffix sorts first. WINDOW characters per round, for the rows
    still equal."""
    text, n, m = index.text, len(index.text), len(query)
    common = np.zeros(len(starts), dtype=np.int64)
    first = np.zeros(len(starts), dtype=bool)
    rows, done = np.arange(len(starts)), skip.astype(np.int64)
    steps = np.arange(WINDOW, dtype=np.int64)
    while rows.size:
        at = done[rows, None] + steps
        q_at, t_at = starts[rows, None] + at, offsets[rows, None] + at
        q = np.where(q_at < m, query[np.minimum(q_at, m - 1)], QUERY_END)
        t = np.where(t_at < n, text[np.minimum(t_at, n - 1)].astype(np.int64), TEXT_END)
        differ = q != t
        ended = differ.any(axis=1)
        k = differ.argmax(axis=1)[ended]
        which = rows[ended]
        common[which] = done[which] + k
        first[which] = q[ended, k] < t[ended, k]
        rows = rows[~ended]
        done[rows] += WINDOW
    return common, first


def matches(index: SuffixIndex, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position i of `query` (ids): the length of the longest prefix of query[i:] that occurs in
    training, and one training offset where it does (-1 where the length is 0)."""
    m, n, sa = len(query), len(index.sa), index.sa
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.arange(m, dtype=np.int64)
    lo, hi = np.zeros(m, dtype=np.int64), np.full(m, n, dtype=np.int64)
    lo_common, hi_common = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    while (active := np.flatnonzero(lo < hi)).size:
        mid = (lo[active] + hi[active]) // 2
        # every suffix between the two bounds shares the smaller of their common prefixes with the query
        skip = np.minimum(lo_common[active], hi_common[active])
        common, first = _compare(index, query, starts[active], sa[mid].astype(np.int64), skip)
        hi[active] = np.where(first, mid, hi[active])
        hi_common[active] = np.where(first, common, hi_common[active])
        lo[active] = np.where(first, lo[active], mid + 1)
        lo_common[active] = np.where(first, lo_common[active], common)
    best, where = np.zeros(m, dtype=np.int64), np.full(m, -1, dtype=np.int64)
    for side in (lo - 1, lo):  # the suffixes just before and at the place query[i:] sorts into
        ok = np.flatnonzero((side >= 0) & (side < n))
        offsets = sa[side[ok]].astype(np.int64)
        common, _ = _compare(index, query, starts[ok], offsets, np.zeros(len(ok), dtype=np.int64))
        longer = common > best[ok]
        best[ok[longer]], where[ok[longer]] = common[longer], offsets[longer]
    return best, where


def shares(lengths: np.ndarray) -> dict[int, float | None]:
    """For each of SHARE_LENGTHS k, the share of the text's k-character substrings found in training."""
    m = len(lengths)
    return {k: None if m < k else float(np.mean(lengths[: m - k + 1] >= k)) for k in SHARE_LENGTHS}


def novelty(index: SuffixIndex, text: str, lookup: np.ndarray, *, documents: frozenset[bytes] | None = None):
    """The Novelty of `text` against the training split in `index` (`lookup`: the vocabulary's code point
    table); with `documents` (document_digests of the training documents), whether it is one of them."""
    lengths, offsets = matches(index, encode(text, lookup))
    item = None if documents is None else is_training_item(text, documents)
    if not len(lengths) or lengths.max() == 0:
        return Novelty(len(text), 0, "", None, None, None, shares(lengths), item)
    i = int(lengths.argmax())
    length, offset = int(lengths[i]), int(offsets[i])
    return Novelty(len(text), length, text[i : i + length], i, offset, index.line_of(offset), shares(lengths), item)


@dataclass(frozen=True)
class Checker:
    """A run's novelty index with its vocabulary's code point table: what generate --novelty, perplexity
    --novelty and Model.novelty ask."""

    index: SuffixIndex
    lookup: np.ndarray  # Vocab.lookup_table(): code point -> id, -1 where none
    documents: frozenset[bytes] | None = None  # the training documents' digests (a run trained on documents)

    def report(self, text: str, *, documents: frozenset[bytes] | None = None) -> Novelty:
        """`text`'s novelty; `training_item` says whether it is a whole training document (with the run's
        documents, or `documents`), None for a run trained on a stream."""
        return novelty(self.index, text, self.lookup, documents=documents if documents is not None else self.documents)

    def copied(self, ids: np.ndarray, min_span: int = MIN_SPAN) -> list[tuple[int, int]]:
        """The spans of a text given as ids that are copies of training text, at least `min_span` long."""
        return copied_spans(matches(self.index, np.asarray(ids, dtype=np.int64))[0], min_span)


def copied_spans(lengths: np.ndarray, min_span: int = MIN_SPAN) -> list[tuple[int, int]]:
    """The [start, end) runs of the text covered by a match of at least `min_span` characters (`lengths`
    from `matches`), merged where they touch or overlap."""
    starts = np.flatnonzero(lengths >= min_span)
    edges = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths[starts], -1)
    covered = np.concatenate(([False], np.cumsum(edges[:-1]) > 0, [False]))
    change = np.flatnonzero(covered[1:] != covered[:-1])
    return [(int(a), int(b)) for a, b in zip(change[::2], change[1::2], strict=True)]


def document_digests(documents: Iterable[str]) -> frozenset[bytes]:
    """The training documents as digests (16 bytes each, however long a document): what is_training_item
    looks an item up in."""
    return frozenset(_digest(d) for d in documents)


def is_training_item(item: str, documents: frozenset[bytes]) -> bool:
    """Whether `item` is exactly one of the documents whose digests are `documents`."""
    return _digest(item) in documents


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
