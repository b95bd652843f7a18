"""readback.py: a file read back is a bounded regular file of strict JSON, and a saved vocabulary is checked."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from charlm.files import readback
from charlm.files.readback import BadFile, check_vocab, finite_number, parse_json, read_bytes, read_json, vocab_chars

posix_only = pytest.mark.skipif(
    not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="FIFOs and /dev/zero are POSIX"
)


def test_a_regular_file_and_a_symlink_to_one_are_read(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2.5, "分"]}', encoding="utf-8")
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    assert read_json(tmp_path / "link.json", 100) == {"x": [1, 2.5, "分"]}
    assert read_bytes(tmp_path / "a.json", 100) == (tmp_path / "a.json").read_bytes()


@posix_only
@pytest.mark.parametrize("make", ["fifo", "dev-zero", "dev-null", "folder", "symlink-to-fifo"])
def test_anything_but_a_regular_file_is_refused_without_reading_it(tmp_path, make):
    path = tmp_path / "cache.json"
    if make == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif make == "symlink-to-fifo":
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    elif make == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero" if make == "dev-zero" else "/dev/null")
    with pytest.raises((BadFile, IsADirectoryError)) as caught:
        read_bytes(path, 1024)
    if isinstance(caught.value, BadFile):
        assert "not a regular file" in caught.value.reason


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(64 * readback.MIB)  # sparse: costs no disk, and would cost 64 MiB of memory if read
    with pytest.raises(BadFile, match="67,108,864 bytes, over the 1,024-byte limit"):
        read_bytes(path, 1024)
    (tmp_path / "exact").write_bytes(b"x" * 1024)
    assert len(read_bytes(tmp_path / "exact", 1024)) == 1024


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "nope.json", 10)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"speed": NaN}', "NaN"),
        (b'{"speed": Infinity}', "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": 1', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"a": 1} trailing', "not valid JSON"),
    ],
)
def test_json_that_python_would_read_loosely_or_crash_on_is_refused(data, reason):
    with pytest.raises(BadFile, match=reason):
        parse_json(data)


def test_large_numbers_and_escapes_are_still_json():
    assert parse_json(b'{"n": 1e300, "big": 1' + b"0" * 400 + b', "s": "\\u5206"}')["s"] == "分"


@pytest.mark.parametrize(
    ("chars", "reason"),
    [
        ([1, 2, 3], "entry 0 is 1, not one character"),
        (["a", 2.5], "entry 1 is 2.5, not one character"),
        (["a", "bc"], "entry 1 is 'bc', not one character"),
        (["a", ""], "entry 1 is '', not one character"),
        (["a", None], "entry 1 is None, not one character"),
        (["a", True], "entry 1 is True, not one character"),
        (["a", ["b"]], "entry 1 is ['b'], not one character"),
        (["a", {"b": 1}], "not one character"),
        (["a", "b", "a"], "entry 2 ('a') is listed twice"),
        (["\n", "\n"], "listed twice"),
        (["a", "\ud800"], "lone surrogate (0xd800)"),
        (["\udfff"], "lone surrogate"),
        ([], "empty"),
        ("abc", "not a list but 'abc'"),
        ({"a": 0}, "not a list but {'a': 0}"),
        (None, "not a list but None"),
        (42, "not a list but 42"),
    ],
)
def test_a_saved_vocabulary_is_distinct_single_characters(chars, reason):
    with pytest.raises(BadFile, match=re.escape(reason)):
        check_vocab(chars)


def test_a_good_vocabulary_passes_in_its_order():
    chars = ["z", "a", "分", "\n", " ", "😀", "\x00"]
    assert check_vocab(chars) == chars


@pytest.mark.parametrize(
    "text",
    [
        '["a", "b"]',
        '{"chars": "ab"}',
        '{"chars": [["a"], ["b"]]}',
        '{"vocab": ["a"]}',
        '{"chars": {"a": 0}}',
        '"chars"',
        "null",
        '{"chars": ["a", "\\ud83d"]}',
    ],
)
def test_vocab_json_of_the_wrong_shape_is_refused(text):
    with pytest.raises(BadFile):
        vocab_chars(text)


@pytest.mark.parametrize(
    ("value", "kwargs", "ok"),
    [
        (1.5, {}, True),
        (0, {}, True),
        (0, {"positive": True}, False),
        (-800, {"positive": True}, False),
        (float("nan"), {}, False),
        (float("inf"), {}, False),
        (10**400, {}, False),
        (1e300, {"limit": 1e12}, False),
        (1e12, {"limit": 1e12}, True),
        (True, {}, False),
        ("5", {}, False),
        (None, {}, False),
        ([1], {}, False),
    ],
)
def test_finite_number(value, kwargs, ok):
    assert finite_number(value, **kwargs) is ok
