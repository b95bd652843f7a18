"""charlm.data.text: resolving a source, reading and normalising its text in chunks."""

from __future__ import annotations

import pytest

from charlm.config import DataConfig
from charlm.data import text as data_text
from charlm.data.builtins import BUILTINS, Builtin, RemoteFile
from charlm.data.corpus import Corpus, load_corpus
from charlm.data.text import Normalisation, TextPart, iter_text
from charlm.errors import CorpusError

MIXED = "分开 hello\n不分开,\t世界!\r\nabc 😀 jay周杰伦\n\n末尾"


def load(path, **kw) -> Corpus:
    kw.setdefault("val_fraction", 0.0)
    return load_corpus(DataConfig(corpus=str(path), **kw))


# ---------------------------------------------------------------------------------------------------
# Reading in chunks


@pytest.mark.parametrize("chunk", [1, 2, 7, 1000])
def test_load_corpus_encoding_across_chunk_boundaries(write_text, monkeypatch, chunk):
    monkeypatch.setattr(data_text, "CHUNK_CHARS", chunk)
    text = MIXED * 3
    corpus = load(write_text(text))
    assert len(corpus.vocab) == len(set(text))
    assert corpus.train.long().tolist() == [corpus.vocab.index[c] for c in text]
    assert corpus.vocab.decode(corpus.train.tolist()) == text


def test_max_chars_keeps_the_first_characters(write_text, monkeypatch):
    monkeypatch.setattr(data_text, "CHUNK_CHARS", 3)
    text = "0123456789abcdef"
    corpus = load(write_text(text), max_chars=10)
    assert corpus.vocab.decode(corpus.train.tolist()) == "0123456789"
    assert corpus.vocab.chars == list("0123456789")  # the vocab is built from the kept text only


# ---------------------------------------------------------------------------------------------------
# Normalisation


def test_bom_is_stripped(write_text):
    corpus = load(write_text("\ufeffabca"))
    assert "\ufeff" not in corpus.vocab.chars
    assert corpus.vocab.decode(corpus.train.tolist()) == "abca"


def test_newlines_keep_keeps_cr_and_lf(write_text):
    corpus = load(write_text("a\nb\r\nc\rd"))
    assert corpus.vocab.decode(corpus.train.tolist()) == "a\nb\r\nc\rd"


def test_newlines_space_turns_cr_and_lf_into_spaces(write_text):
    corpus = load(write_text("a\nb\r\nc\rd"), newlines="space")
    assert corpus.vocab.decode(corpus.train.tolist()) == "a b  c d"
    assert "\n" not in corpus.vocab.chars and "\r" not in corpus.vocab.chars


# ---------------------------------------------------------------------------------------------------
# Sources: files and folders


def test_folder_of_txt_files_is_read_sorted_and_joined(tmp_path, write_text):
    write_text("second", "corpus/b.txt")
    write_text("\ufefffirst", "corpus/a.txt")
    write_text("ignored", "corpus/c.md")
    write_text("third", "corpus/c.txt")
    corpus = load(tmp_path / "corpus")
    assert corpus.vocab.decode(corpus.train.tolist()) == "first\nsecond\nthird"
    spaced = load(tmp_path / "corpus", newlines="space")
    assert spaced.vocab.decode(spaced.train.tolist()) == "first second third"


def test_folder_without_txt_files(tmp_path, write_text):
    write_text("x", "corpus/readme.md")
    with pytest.raises(CorpusError, match="no .txt files"):
        load(tmp_path / "corpus")


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(CorpusError, match="binary") as info:
        load(path)
    assert str(path) in str(info.value) and "NUL" in str(info.value)


def test_non_utf8_file_is_rejected(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8") as info:
        load(path)
    assert "0xe9" in str(info.value) and str(path) in str(info.value)


def test_missing_path_is_rejected(tmp_path):
    with pytest.raises(CorpusError, match="neither a file, a folder nor a built-in") as info:
        load(tmp_path / "nope.txt")
    assert "jaychou" in str(info.value)  # lists the built-ins


# ---------------------------------------------------------------------------------------------------
# Normalisation: the one place that says how a run's corpus is normalised


def test_normalisation_of_a_data_config():
    of = Normalisation.of
    assert of(DataConfig(corpus="ptb-char")) == Normalisation("keep", True)
    assert of(DataConfig(corpus="ptb-char", newlines="space")) == Normalisation("space", True)
    assert of(DataConfig(corpus="jaychou", newlines="space")) == Normalisation("space", False)
    assert of(DataConfig(corpus="some/file.txt")) == Normalisation()


def test_normalisation_follows_the_builtins_flag(monkeypatch):
    remote = RemoteFile("spaced.txt", "file:///nowhere/spaced.txt", "0" * 64, 1)
    monkeypatch.setitem(
        BUILTINS, "spaced", Builtin("spaced", "symbols separated by spaces", (remote,), drop_spaces=True)
    )
    assert Normalisation.of(DataConfig(corpus="spaced")).drop_spaces


def test_iter_text_applies_the_normalisation_to_every_part_and_the_joins(write_text):
    parts = (TextPart(write_text("a b\r\nc", "1.txt")), TextPart(write_text(" d ", "2.txt")))

    def read(**kw):
        return "".join(iter_text(parts, Normalisation(**kw)))

    assert read() == "a b\r\nc\n d "
    assert read(newlines="space") == "a b  c  d "
    assert read(drop_spaces=True) == "ab\r\nc\nd"
    assert read(newlines="space", drop_spaces=True) == "ab  c d"  # one pass: newlines become kept spaces
