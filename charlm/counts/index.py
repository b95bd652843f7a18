"""An "infini-gram" of a text: for every context, however long, where it occurs and what followed it.

The text is kept read backwards, with the suffix array of that reversed text. A context read backwards
(the character just before the position first) is then a prefix of the reversed suffixes where it occurs,
so the suffixes that match a context of length k+1 are a sub-range of those that match its last k
characters: each longer order narrows the range of the one before, by two binary searches.

 text      t h e _ c a t _ t h e _ d o g          context of "?" in "...t h e ?": "e", "he", "the", ...
 reversed  g o d _ e h t _ t a c _ e h t          suffixes starting "e", then "eh", then "eht": nested
 next      the character before the match in the reversed text is the one after it in the text

For a range at order k, the characters that followed its occurrences (`succ`, in suffix-array order) give
the counts: gathered one by one for a small range, or counted once for a large one (few at low orders) and
kept. Every step works on all the positions of a window at once: no Python loop per character.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# a range up to this many occurrences is gathered; a larger one is counted once and kept (see Counts)
GATHER = 64
# the longest context followed. The suffix array would follow any length, but each order is a row of every
# window's evidence, and past a few dozen characters a context that occurs is followed by one character: the
# interpolation is then at that character already (tiny shakespeare's val: the longest match in the training
# text averages 8 characters; a passage copied whole would otherwise make every window thousands of rows deep)
MAX_ORDER = 64
KEPT_HISTOGRAMS = 4096
# a large range up to this many occurrences is counted with the others of its window in one bincount; a larger
# one (a low order's) on its own, and kept
COUNT_AT_ONCE = 4096


def sort_suffixes(ids: np.ndarray) -> np.ndarray:
    """The suffix array of `ids` (pydivsufsort, the optional extra charlm[novelty])."""
    from pydivsufsort import divsufsort

    return np.asarray(divsufsort(ids))


@dataclass(frozen=True)
class OrderStats:
    """Per query, at one order: occurrences with a next character (n), how many distinct next characters (u),
    the commonest one's count (top), and how many of them are the query's target (hits; None: not asked)."""

    n: np.ndarray
    u: np.ndarray
    top: np.ndarray
    hits: np.ndarray | None


@dataclass
class CountIndex:
    """A text of ids under `vocab_size`, read backwards (`rev`), and the suffix array of `rev` (`sa`)."""

    rev: np.ndarray
    sa: np.ndarray
    vocab_size: int
    _hist: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, ids: np.ndarray, vocab_size: int) -> CountIndex:
        rev = np.ascontiguousarray(np.asarray(ids)[::-1]).astype(id_type(vocab_size))
        return cls(rev, sort_suffixes(rev), vocab_size)

    def __len__(self) -> int:
        return len(self.rev)

    @property
    def nbytes(self) -> int:
        """The memory of its arrays (the kept histograms aside: at most KEPT_HISTOGRAMS rows of V)."""
        return self.rev.nbytes + self.sa.nbytes + self.succ.nbytes + self.keys.nbytes

    def __post_init__(self):
        n = len(self.rev)
        # succ[j]: the character that followed, in the text, the occurrence at suffix-array slot j; vocab_size
        # for the text's last character, which nothing followed
        succ = np.full(n, self.vocab_size, dtype=id_type(self.vocab_size + 1))
        has = self.sa > 0
        succ[has] = self.rev[self.sa[has] - 1]
        self.succ = succ
        self.no_next = int(np.flatnonzero(self.sa == 0)[0]) if n else -1
        # keys[i]: rev[i] + 1, and 0 past the text's end (a suffix too short sorts first): the binary searches
        # read a suffix's character at any offset up to MAX_ORDER with one lookup
        keys = np.zeros(n + MAX_ORDER + 1, dtype=id_type(self.vocab_size + 2))
        keys[:n] = self.rev.astype(keys.dtype) + 1
        self.keys = keys

    def intervals(self, history: np.ndarray, positions: np.ndarray, max_order: int = MAX_ORDER):
        """The suffix-array ranges [lo, hi) of the contexts before each of `positions` in `history` (ids, -1 for
        a character outside the vocabulary, which matches nothing), order 0 (every occurrence) up to the
        longest that occurs: arrays (orders, queries), an empty range past a query's longest."""
        q = len(positions)
        lo_rows, hi_rows = [np.zeros(q, np.int64)], [np.full(q, len(self), np.int64)]
        live = np.flatnonzero(np.full(q, len(self) > 0))
        for k in range(1, max_order + 1):
            live = live[positions[live] >= k]
            if len(live) == 0:
                break
            c = history[positions[live] - k]
            c = np.where(c < 0, self.vocab_size, c)  # outside the vocabulary: matches nothing
            new_lo, new_hi = self._narrowed(lo_rows[-1][live], hi_rows[-1][live], k - 1, c)
            row_lo, row_hi = np.zeros(q, np.int64), np.zeros(q, np.int64)
            row_lo[live], row_hi[live] = new_lo, new_hi
            lo_rows.append(row_lo)
            hi_rows.append(row_hi)
            # a range that is only the text's last character (nothing followed it) says nothing at longer orders
            only_end = (new_hi - new_lo == 1) & (new_lo == self.no_next)
            live = live[(new_hi > new_lo) & ~only_end]
        return np.stack(lo_rows), np.stack(hi_rows)

    def _narrowed(self, lo, hi, offset: int, c) -> tuple[np.ndarray, np.ndarray]:
        """The sub-ranges of [lo, hi) whose suffixes read `c` at `offset`. A window's positions share few
        contexts at the low orders, whose ranges are the widest to search: each distinct (range, c) is
        searched once (PTB-char's test split: 4.6 s of binary searches before)."""
        keys, first, inverse = np.unique(lo * (self.vocab_size + 1) + c, return_index=True, return_inverse=True)
        lo, hi, c = lo[first], hi[first], c[first]
        new_lo = self._bound(lo, hi, offset, c, upper=False)
        new_hi = self._bound(new_lo, hi, offset, c, upper=True)
        inverse = inverse.reshape(-1)
        return new_lo[inverse], new_hi[inverse]

    def _bound(self, lo, hi, offset: int, c, *, upper: bool):
        """The first slot in [lo, hi) whose suffix's character at `offset` is > c (upper) or >= c: within a
        range that shares its first `offset` characters these are sorted (a suffix too short reads -1)."""
        a, b = lo.copy(), hi.copy()
        c = c + 1  # as `keys` holds them
        todo = np.flatnonzero(a < b)
        while len(todo):
            mid = (a[todo] + b[todo]) >> 1
            key = self.keys[self.sa[mid] + offset]
            go = key <= c[todo] if upper else key < c[todo]
            a[todo] = np.where(go, mid + 1, a[todo])
            b[todo] = np.where(go, b[todo], mid)
            todo = todo[a[todo] < b[todo]]
        return a

    def stats(self, lo: np.ndarray, hi: np.ndarray, targets: np.ndarray | None = None) -> OrderStats:
        """OrderStats of the ranges [lo, hi) (one order's row of `intervals`)."""
        q = len(lo)
        size = hi - lo
        n = size - ((lo <= self.no_next) & (self.no_next < hi))
        u, top = np.zeros(q, np.int64), np.zeros(q, np.int64)
        hits = None if targets is None else np.zeros(q, np.int64)
        small = np.flatnonzero((size > 0) & (size <= GATHER))
        if len(small):
            self._gathered(small, lo, size, targets, u, top, hits)
        large = np.flatnonzero(size > GATHER)
        if len(large):
            rows = large_histograms(self, lo[large], hi[large])
            u[large] = (rows > 0).sum(1)
            top[large] = rows.max(1)
            if hits is not None:
                hits[large] = rows[np.arange(len(large)), targets[large]]
        return OrderStats(n, u, top, hits)

    def _gathered(self, which, lo, size, targets, u, top, hits) -> None:
        """Fill u, top and hits of the small ranges `which` from their occurrences' next characters."""
        sizes = size[which]
        seg = np.repeat(np.arange(len(which)), sizes)
        slot = np.repeat(lo[which] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        nxt = self.succ[slot].astype(np.int64)
        if hits is not None:
            hits[which] = np.bincount(seg, weights=nxt == targets[which][seg], minlength=len(which)).astype(np.int64)
        keys, counts = np.unique(seg * (self.vocab_size + 1) + nxt, return_counts=True)
        real = keys % (self.vocab_size + 1) != self.vocab_size
        owner = keys[real] // (self.vocab_size + 1)
        u[which] = np.bincount(owner, minlength=len(which))
        best = np.zeros(len(which), np.int64)
        np.maximum.at(best, owner, counts[real])
        top[which] = best

    def histograms(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(len(lo), vocab_size) counts of the next characters of each range: each range counted once and
        kept (a low order's few ranges recur at almost every position)."""
        rows = np.empty((len(lo), self.vocab_size), np.int64)
        for i, key in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            row = self._hist.get(key)
            if row is None:
                if len(self._hist) >= KEPT_HISTOGRAMS:
                    self._hist.clear()
                row = np.bincount(self.succ[key[0] : key[1]], minlength=self.vocab_size + 1)[: self.vocab_size]
                self._hist[key] = row
            rows[i] = row
        return rows

    def counts(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(len(lo), vocab_size) counts of the next characters of each range (every character: for sampling)."""
        rows = np.zeros((len(lo), self.vocab_size), np.int64)
        large = np.flatnonzero(hi - lo > GATHER)
        if len(large):
            rows[large] = self.histograms(lo[large], hi[large])
        for i in np.flatnonzero((hi > lo) & (hi - lo <= GATHER)).tolist():
            nxt = self.succ[lo[i] : hi[i]]
            rows[i] = np.bincount(nxt, minlength=self.vocab_size + 1)[: self.vocab_size]
        return rows


def large_histograms(index: CountIndex, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """index.histograms() of ranges larger than GATHER, many of which recur in a window: each distinct range
    counted once, those up to COUNT_AT_ONCE occurrences all in one bincount (a Python step per range cost
    PTB-char's test split 15 s of 35), the larger ones (few: low orders) one by one and kept."""
    keys, first, inverse = np.unique(lo * (len(index) + 1) + hi, return_index=True, return_inverse=True)
    lo, hi = lo[first], hi[first]
    rows = np.empty((len(keys), index.vocab_size), np.int64)
    huge = (hi - lo) > COUNT_AT_ONCE
    if huge.any():
        rows[huge] = index.histograms(lo[huge], hi[huge])
    medium = np.flatnonzero(~huge)
    for which in _groups(medium, hi[medium] - lo[medium], width=index.vocab_size + 1):
        sizes = hi[which] - lo[which]
        seg = np.repeat(np.arange(len(which)), sizes)
        slot = np.repeat(lo[which] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        width = index.vocab_size + 1
        counted = np.bincount(seg * width + index.succ[slot], minlength=len(which) * width)
        rows[which] = counted.reshape(len(which), width)[:, : index.vocab_size]
    return rows[inverse.reshape(-1)]


def _groups(which: np.ndarray, sizes: np.ndarray, *, width: int, budget: int = 1 << 22):
    """`which` in consecutive groups whose table (ranges x `width`) and occurrences (their `sizes`) each stay
    within `budget` entries: the memory of counting a group at once."""
    ends = np.cumsum(sizes)
    at = 0
    while at < len(which):
        before = ends[at - 1] if at else 0
        stop = min(len(which), at + max(1, budget // width), int(np.searchsorted(ends, before + budget, "right")))
        stop = max(stop, at + 1)
        yield which[at:stop]
        at = stop


def id_type(vocab_size: int):
    """The smallest unsigned type that holds ids under vocab_size."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32
