"""novelty: the longest matches, shares and copied spans of a text against a suffix array, checked against a
brute-force search on small random texts."""

from __future__ import annotations

import numpy as np
import pytest

from charlm.analysis import novelty as nv

divsufsort = pytest.importorskip("pydivsufsort").divsufsort


def index_of(text: np.ndarray, newline: int | None = None) -> nv.SuffixIndex:
    return nv.SuffixIndex(text, divsufsort(text), newline)


def brute_lengths(text: list[int], query: list[int]) -> list[int]:
    """For each i, the longest prefix of query[i:] found anywhere in text, by trying every alignment."""
    best = []
    for i in range(len(query)):
        longest = 0
        for j in range(len(text)):
            k = 0
            while i + k < len(query) and j + k < len(text) and query[i + k] == text[j + k]:
                k += 1
            longest = max(longest, k)
        best.append(longest)
    return best


def random_case(rng: np.random.Generator, dtype=np.uint8, alphabet: int = 0):
    """A random training text over a small alphabet and a query that often copies a piece of it (and may
    hold an id the text never has: `alphabet`, which matches nothing)."""
    k = alphabet or int(rng.integers(1, 5))
    text = rng.integers(0, k, int(rng.integers(1, 120))).astype(dtype)
    query = rng.integers(0, k + 1, int(rng.integers(0, 90))).astype(np.int64)
    if len(query) and rng.random() < 0.6:
        a = int(rng.integers(0, len(text)))
        piece = text[a : a + int(rng.integers(1, 80))][: len(query)].astype(np.int64)
        b = int(rng.integers(0, len(query) - len(piece) + 1))
        query[b : b + len(piece)] = piece
    return text, query


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_longest_matches_equal_a_brute_force_search(dtype):
    rng = np.random.default_rng(7)
    for _ in range(150):  # many small texts, from one alphabet letter (long runs) to five
        text, query = random_case(rng, dtype, alphabet=int(rng.integers(1, 6)) * (300 if dtype != np.uint8 else 1))
        lengths, offsets = nv.matches(index_of(text), query)
        assert lengths.tolist() == brute_lengths(text.tolist(), query.tolist())
        for i, (length, offset) in enumerate(zip(lengths.tolist(), offsets.tolist(), strict=True)):
            if length:  # the offset really holds the match
                assert text[offset : offset + length].tolist() == query[i : i + length].tolist()
            else:
                assert offset == -1


def test_matches_longer_than_a_window_of_comparison():
    rng = np.random.default_rng(3)
    text = rng.integers(0, 3, 2000).astype(np.uint8)
    query = np.concatenate([[9], text[500 : 500 + 5 * nv.WINDOW + 7], [9]]).astype(np.int64)
    lengths, offsets = nv.matches(index_of(text), query)
    assert lengths[1] >= 5 * nv.WINDOW + 7 and lengths[0] == 0 and lengths[-1] == 0
    assert text[offsets[1] : offsets[1] + lengths[1]].tolist() == query[1 : 1 + lengths[1]].tolist()
    assert lengths.tolist() == brute_lengths(text.tolist(), query.tolist())


def test_shares_equal_brute_force_counts():
    rng = np.random.default_rng(11)
    for _ in range(60):
        text, query = random_case(rng)
        index = index_of(text)
        lengths, _ = nv.matches(index, query)
        found = nv.shares(lengths)
        substrings = {tuple(text[j : j + k].tolist()) for k in nv.SHARE_LENGTHS for j in range(len(text) - k + 1)}
        for k in nv.SHARE_LENGTHS:
            windows = [tuple(query[i : i + k].tolist()) for i in range(len(query) - k + 1)]
            if not windows:
                assert found[k] is None  # a text shorter than k has no k-character substring
            else:  # both are counts over the same windows: exact
                assert found[k] == sum(w in substrings for w in windows) / len(windows)


def test_the_report_of_a_text_names_the_longest_span_and_its_line():
    train = "to be or not\nto be, that is\nthe question\n"
    chars = sorted(set(train + "xyz"))
    lookup = np.full(128, -1, dtype=np.int64)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = lookup[[ord(c) for c in train]].astype(np.uint8)
    index = index_of(ids, newline=chars.index("\n"))
    report = nv.novelty(index, "xx that is\nthe quest yy", lookup)
    assert (report.longest, report.longest_text, report.start) == (18, " that is\nthe quest", 2)
    assert train[report.train_offset : report.train_offset + 18] == " that is\nthe quest"
    assert report.train_line == 2 and report.chars == 23
    assert report.shares[8] == sum(train.find("xx that is\nthe quest yy"[i : i + 8]) >= 0 for i in range(16)) / 16
    assert report.shares[32] is None and report.training_item is None
    unseen = nv.novelty(index, "éé", lookup)  # characters outside the vocabulary match nothing
    assert (unseen.longest, unseen.start, unseen.train_line, unseen.longest_text) == (0, None, None, "")
    assert nv.novelty(index, "", lookup).shares == {8: None, 16: None, 32: None}
    as_json = report.to_dict()
    assert as_json["longest"]["length"] == 18 and set(as_json["shares"]) == {"8", "16", "32"}


def test_line_numbers_count_the_line_breaks_before_an_offset():
    text = np.array([0, 1, 0, 1, 1, 0], dtype=np.uint8)  # 1 is a line break
    index = index_of(text, newline=1)
    assert [index.line_of(i) for i in range(6)] == [1, 1, 2, 2, 3, 4]
    assert index_of(text, newline=None).line_of(5) == 1


def test_copied_spans_merge_the_matches_at_least_as_long_as_asked():
    lengths = np.array([3, 2, 1, 0, 5, 4, 3, 2, 1, 0, 2, 1])
    assert nv.copied_spans(lengths, 3) == [(0, 3), (4, 9)]
    assert nv.copied_spans(lengths, 2) == [(0, 3), (4, 9), (10, 12)]
    assert nv.copied_spans(lengths, 6) == []
    rng = np.random.default_rng(5)
    for _ in range(40):  # against marking by hand
        text, query = random_case(rng)
        lengths, _ = nv.matches(index_of(text), query)
        mark = [False] * len(query)
        for i, length in enumerate(lengths.tolist()):
            if length >= 4:
                mark[i : i + length] = [True] * length
        spans = nv.copied_spans(lengths, 4)
        assert [any(a <= i < b for a, b in spans) for i in range(len(query))] == mark


def test_a_whole_item_is_a_training_item_only_when_equal_to_one():
    documents = nv.document_digests(["我不能再想", "分开", "a much longer line " * 50])
    assert nv.is_training_item("我不能再想", documents) and nv.is_training_item("a much longer line " * 50, documents)
    assert not nv.is_training_item("我不能再", documents) and not nv.is_training_item("分开 ", documents)
    assert len(next(iter(documents))) == 16  # a digest, however long the document
    index = index_of(np.array([0, 1], dtype=np.uint8))
    lookup = np.full(30000, -1, dtype=np.int64)
    assert nv.novelty(index, "分开", lookup, documents=documents).training_item is True


def test_encode_maps_unknown_and_large_code_points_to_a_value_that_matches_nothing():
    lookup = np.full(100, -1, dtype=np.int64)
    lookup[ord("a")] = 0
    assert nv.encode("a\U0001f600b", lookup).tolist() == [0, nv.UNKNOWN, nv.UNKNOWN]


def test_the_cli_default_span_is_the_library_one():
    from charlm.cli.perplexity import MIN_SPAN

    assert MIN_SPAN == nv.MIN_SPAN
