"""features: the per-character features that `charlm neurons` correlates hidden units with."""

from __future__ import annotations

import pytest

from charlm.analysis.features import BUILTINS, check, code_points, compute, matches
from charlm.errors import UsageError


def values(name: str, text: str) -> list[int]:
    (feature,) = compute([name], text)
    return [int(v) for v in feature.values]


def test_quote_is_on_from_the_opening_mark_to_before_the_closing_one():
    assert values("quote", 'a"bc"d"e') == [0, 1, 1, 1, 0, 0, 1, 1]
    assert values("quote", "x“y”z") == [0, 1, 1, 0, 0]
    assert values("quote", "」a「b」") == [0, 0, 1, 1, 0]  # a stray closing mark does not go below zero


def test_bracket_counts_nesting():
    assert values("bracket", "a(b[c]d)e") == [0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert values("bracket", ")a(b") == [0, 0, 1, 1]


def test_line_position_counts_since_the_last_newline():
    assert values("line-position", "ab\ncde\n\nf") == [1, 2, 0, 1, 2, 3, 0, 0, 1]


def test_newline_next_and_vowel():
    assert values("newline-next", "ab\nc\n") == [0, 1, 0, 1, 0]
    assert values("vowel", "bAnEx") == [0, 1, 0, 1, 0]


def test_a_regex_marks_the_characters_inside_its_matches():
    assert values("[A-Z]+:", "ROMEO: hi\nJULIET: yo") == [1] * 6 + [0] * 4 + [1] * 7 + [0] * 3
    assert matches("x*", "abc").tolist() == [0, 0, 0]  # empty matches mark nothing
    assert values("ab", "abab") == [1, 1, 1, 1]


def test_every_builtin_by_default_and_constant_features_flagged():
    features = compute([], "plain text\nwithout marks")
    assert [f.name for f in features] == list(BUILTINS)
    constant = {f.name for f in features if f.constant}
    assert constant == {"quote", "bracket"}


def test_specs_are_checked():
    assert check(["vowel", "vowel", "[0-9]"]) == ["vowel", "[0-9]"]
    with pytest.raises(UsageError, match=r"neither a built-in .* nor a valid regular expression"):
        check(["(unclosed"])


def test_code_points_of_any_text():
    assert code_points("a分😀").tolist() == [97, 0x5206, 0x1F600]
