"""charlm.data.documents: a text cut into documents ended by EOD_MARK, and Unicode cleaning, chunk by chunk."""

from __future__ import annotations

import unicodedata

import pytest

from charlm.data.documents import EOD_MARK, clean_unicode, end_documents, end_file, split_documents

E = EOD_MARK
TEXT = "\n\nfirst line\r\nsecond  \n\n\n  indented\nlast"


def chunked(text: str, size: int):
    return iter([text[i : i + size] for i in range(0, len(text), size)])


def test_lines_end_each_non_empty_line():
    assert "".join(end_documents(iter([TEXT]), "lines")) == f"first line{E}second{E}  indented{E}last{E}"


def test_paragraphs_end_at_blank_lines_only():
    text = "a b\nc d\n\ne f\n \t\ng\n"
    assert "".join(end_documents(iter([text]), "paragraphs")) == f"a b\nc d{E}e f{E}g{E}"


@pytest.mark.parametrize("mode", ["lines", "paragraphs"])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_chunk_boundaries_change_nothing(mode, size):
    whole = "".join(end_documents(iter([TEXT]), mode))
    assert "".join(end_documents(chunked(TEXT, size), mode)) == whole


def test_an_empty_or_blank_text_has_no_document():
    assert "".join(end_documents(iter(["\n \n\n"]), "lines")) == ""
    assert split_documents("") == []


def test_a_file_is_one_document_without_its_trailing_white_space():
    assert "".join(end_file(chunked("a\n\nb c \n\n", 2))) == f"a\n\nb c{E}"
    assert split_documents(f"a\n\nb c{E}d{E}") == ["a\n\nb c", "d"]


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
@pytest.mark.parametrize("size", [1, 2, 5])
def test_unicode_normalisation_across_chunks_equals_the_whole_text(form, size):
    text = "e\u0301te\u0301 \ufb01ne Å\u0308\u0323x " * 3  # combining marks, a ligature, a run of marks
    expected = unicodedata.normalize(form, text)
    assert "".join(clean_unicode(chunked(text, size), form, False)) == expected


def test_lowercase_alone():
    assert "".join(clean_unicode(chunked("ABC Déf", 2), None, True)) == "abc déf"
