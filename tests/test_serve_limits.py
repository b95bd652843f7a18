"""charlm serve's limits: the defaults, `--limit NAME=VALUE` typed and checked, each bad one a UsageError."""

from __future__ import annotations

import pytest

from charlm.errors import UsageError
from charlm.serve.limits import Limits


def test_the_defaults_are_those_the_guide_names():
    limits = Limits()
    assert (limits.body_bytes, limits.prefix_chars, limits.length) == (0, 1000, 2000)
    assert limits.body_limit == 12 * 50_000 + 64 * 1024  # derived: text_chars of any characters fit
    assert Limits(body_bytes=1000).body_limit == 1000
    assert (limits.num_samples, limits.beam, limits.time_limit) == (16, 8, 30.0)
    assert (limits.computing, limits.queue) == (2, 32)
    assert (limits.shutdown_grace, limits.read_time, limits.connections) == (10.0, 10.0, 256)


def test_limits_from_name_value_texts():
    limits = Limits.of(["computing=4", "queue=0", "time_limit=2.5", "length=500"])
    assert (limits.computing, limits.queue, limits.time_limit, limits.length) == (4, 0, 2.5, 500)
    assert Limits.of([]) == Limits()


@pytest.mark.parametrize(
    ("items", "words"),
    [
        (["computeing=4"], "did you mean --limit computing?"),
        (["computing"], "is not NAME=VALUE"),
        (["computing=four"], "--limit computing must be int"),
        (["computing=0"], "--limit computing must be a number >= 1, not 0"),
        (["queue=-1"], "--limit queue must be a number >= 0"),
        (["time_limit=0"], "--limit time_limit must be a number >= 0.001"),
        (["batch_rows=4"], "batch_rows (4) must be at least num_samples (16)"),
        (["length=true"], "--limit length must be int"),
        (["shutdown_grace=-1"], "--limit shutdown_grace must be a number >= 0"),
        (["read_time=0"], "--limit read_time must be a number >= 0.001"),
        (["read_time=1e300"], "--limit read_time 1e+300 is too long"),
        (["connections=0"], "--limit connections must be a number >= 1"),
    ],
)
def test_a_bad_limit_is_one_line_naming_it(items, words):
    with pytest.raises(UsageError) as error:
        Limits.of(items)
    assert words in str(error.value)
