"""Features of a text that a hidden unit may track: one number per character, for `charlm neurons`.

A feature describes the state after reading each character, as the hidden state does: `quote` is 1 from
an opening quote mark up to (not including) its closing one, `line-position` is the number of characters
since the last newline (0 on the newline itself). Built-ins are computed with tensor operations over the
code points (cumulative sums and maxima), and a regular expression marks the characters inside its matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from charlm.data import vocab
from charlm.errors import UsageError

SPAN, COUNT = "span", "count"  # a 0/1 feature (shown underlined) or a number (shown on hover)


@dataclass(frozen=True)
class Feature:
    name: str  # a built-in's name, or /REGEX/
    description: str
    kind: str  # SPAN | COUNT
    values: torch.Tensor  # (chars,) float64

    @property
    def constant(self) -> bool:
        """A feature that never changes on this text (no quote mark at all, say) ranks nothing."""
        return len(self.values) == 0 or bool((self.values == self.values[0]).all())


def code_points(text: str) -> torch.Tensor:
    return vocab.code_points(text).long()  # the one conversion (an empty text included)


def _marks(points: torch.Tensor, chars: str) -> torch.Tensor:
    return torch.isin(points, torch.tensor([ord(c) for c in chars]))


def _inside(opens: torch.Tensor, closes: torch.Tensor) -> torch.Tensor:
    """1 where the nesting depth after a character is positive; a stray closing mark does not go below 0."""
    depth = torch.cumsum(opens.long() - closes.long(), 0)
    floor = torch.cummin(depth, 0).values.clamp(max=0)  # the depth of a walk that stops at 0 is depth - floor
    return ((depth - floor) > 0).double()


def quote(points: torch.Tensor) -> torch.Tensor:
    straight = torch.cumsum(_marks(points, '"').long(), 0) % 2 == 1  # "..." opens and closes with one mark
    paired = _inside(_marks(points, "“「『"), _marks(points, "”」』"))
    return (straight | (paired > 0)).double()


def bracket(points: torch.Tensor) -> torch.Tensor:
    return _inside(_marks(points, "([（【"), _marks(points, ")]）】"))


def line_position(points: torch.Tensor) -> torch.Tensor:
    index = torch.arange(len(points))
    last_newline = torch.cummax(torch.where(points == ord("\n"), index, -1), 0).values
    return (index - last_newline).double()  # the text starts as if after a newline


def newline_next(points: torch.Tensor) -> torch.Tensor:
    following = torch.zeros(len(points), dtype=torch.float64)
    following[:-1] = (points[1:] == ord("\n")).double()
    return following


def vowel(points: torch.Tensor) -> torch.Tensor:
    return _marks(points, "aeiouAEIOU").double()


BUILTINS: dict[str, tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "quote": ('inside "..." (or “...”, 「...」)', SPAN, quote),
    "bracket": ("inside (...) or [...]", SPAN, bracket),
    "line-position": ("characters since the last newline", COUNT, line_position),
    "newline-next": ("the next character is a newline", SPAN, newline_next),
    "vowel": ("a vowel (aeiou, either case)", SPAN, vowel),
}


def check(specs: list[str]) -> list[str]:
    """The feature specs to compute (all built-ins when none are given), each a built-in name or a valid regex."""
    for spec in specs:
        if spec in BUILTINS:
            continue
        try:
            re.compile(spec)
        except re.error as e:
            raise UsageError(
                f"--feature {spec!r} is neither a built-in ({', '.join(BUILTINS)}) nor a valid "
                f"regular expression ({e}): fix the pattern"
            ) from None
    return list(dict.fromkeys(specs)) or list(BUILTINS)


def matches(pattern: str, text: str) -> torch.Tensor:
    """1 for the characters inside a match of `pattern` (empty matches mark nothing)."""
    edges = torch.zeros(len(text) + 1, dtype=torch.long)
    spans = [m.span() for m in re.finditer(pattern, text) if m.end() > m.start()]
    if spans:
        starts, ends = (torch.tensor(side) for side in zip(*spans, strict=True))
        edges.index_add_(0, starts, torch.ones_like(starts))
        edges.index_add_(0, ends, -torch.ones_like(ends))
    return (torch.cumsum(edges[:-1], 0) > 0).double()


def compute(specs: list[str], text: str) -> list[Feature]:
    points = code_points(text)
    features = []
    for spec in check(specs):
        if spec in BUILTINS:
            description, kind, function = BUILTINS[spec]
            features.append(Feature(spec, description, kind, function(points)))
        else:
            features.append(Feature(f"/{spec}/", f"inside a match of /{spec}/", SPAN, matches(spec, text)))
    return features
