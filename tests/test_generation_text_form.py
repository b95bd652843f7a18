"""charlm.generation.text_form: a prefix in the run's own text form; <eod> as plain output prints it."""

from __future__ import annotations

from charlm.config import DataConfig
from charlm.data import Vocab
from charlm.generation.text_form import normalise_prefix, plain_chars, plain_text


def test_a_prefix_gets_the_run_s_lowercase_and_normal_form():
    assert normalise_prefix("The Café", DataConfig(lowercase=True)) == "the café"
    decomposed = "Cafe\u0301"  # e and a combining acute accent: NFC joins them into é
    assert normalise_prefix(decomposed, DataConfig(normalize="NFC")) == "Caf\u00e9"
    assert normalise_prefix("ﬁｎｅ", DataConfig(normalize="NFKC")) == "fine"  # a ligature, full-width letters
    assert normalise_prefix("ＴＨＥ", DataConfig(normalize="NFKC", lowercase=True)) == "the"
    long = "Ａ" * 50 + "e\u0301"  # longer than a chunk's held-back tail: read as one text all the same
    assert normalise_prefix(long, DataConfig(normalize="NFKC")) == "A" * 50 + "\u00e9"


def test_without_cleaning_the_prefix_is_the_same_object():
    prefix = "The Cafe\u0301"
    assert normalise_prefix(prefix, DataConfig()) is prefix
    assert normalise_prefix(None, DataConfig(lowercase=True)) is None
    assert normalise_prefix(b"The", DataConfig(lowercase=True)) == b"The"  # check_prefix refuses it, naming it


def test_plain_output_shows_the_end_symbol_as_a_line_break():
    vocab = Vocab([*"ab", "<eod>", "<unk>"])
    assert plain_chars(vocab) == ["a", "b", "\n", "<unk>"]
    assert plain_text(vocab, [0, 2, 1, 3]) == "a\nb<unk>"
    assert plain_chars(Vocab("ab\n")) == ["\n", "a", "b"]  # no end symbol: the characters themselves
