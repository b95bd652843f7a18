"""generation/options.py: SamplingOptions checked once, whoever made them (the CLI or the Python API)."""

from __future__ import annotations

import pytest

from charlm.errors import UsageError
from charlm.generation.options import SamplingOptions


def test_one_stop_text_is_one_text_not_its_characters():
    assert SamplingOptions(stop="\n\n").stop == ("\n\n",)
    assert SamplingOptions(stop=["a", "b"]).stop == ("a", "b")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 2.5}, "top-k must be a whole number, not 2.5"),
        ({"num_samples": True}, "num-samples must be a whole number"),
        ({"stop": 3}, "stop must be a text or a list of texts"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_when_made(options, message):
    with pytest.raises(UsageError, match=message):
        SamplingOptions(**options)


def test_unknown_option_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown sampling option 'temprature': use temperature"):
        SamplingOptions.of({"temprature": 0.5})


@pytest.mark.parametrize(
    ("options", "length", "message"),
    [
        ({}, -1, "length must be >= 0"),
        ({"top_p": 0.0}, 5, r"top-p must be in \(0, 1\]"),
        ({"num_samples": 0}, 5, "num-samples must be >= 1"),
        ({"weights": "fp8"}, 5, "weights must be fp32, bf16 or int8"),
    ],
)
def test_check_names_the_flag_of_the_first_bad_value(options, length, message):
    with pytest.raises(UsageError, match=message):
        SamplingOptions(**options).check(length)
    SamplingOptions().check(5)  # the defaults are valid
