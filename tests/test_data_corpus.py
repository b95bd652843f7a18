"""charlm.data.corpus: load_corpus (splits, checksum), encode_file, and the real corpora."""

from __future__ import annotations

import hashlib

import pytest
import torch

from charlm.config import DataConfig
from charlm.data.builtins import BUILTINS, Builtin, RemoteFile
from charlm.data.corpus import Corpus, encode_file, load_corpus, split_ids
from charlm.data.vocab import Vocab
from charlm.errors import CorpusError


def load(path, **kw) -> Corpus:
    kw.setdefault("val_fraction", 0.0)
    return load_corpus(DataConfig(corpus=str(path), **kw))


def whole(corpus: Corpus) -> torch.Tensor:
    return torch.cat([corpus.train, corpus.val, corpus.test])


# ---------------------------------------------------------------------------------------------------
# Splits and checksum


def test_contiguous_splits(write_text):
    text = "".join(chr(0x4E00 + i) for i in range(100))
    corpus = load(write_text(text), val_fraction=0.1, test_fraction=0.2)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (70, 10, 20)
    assert corpus.vocab.decode(whole(corpus).tolist()) == text  # train, then val, then test
    assert corpus.split("val") is corpus.val


def test_split_ids_sizes():
    ids = torch.arange(1000)
    train, val, test = split_ids(ids, 0.05, 0.0)
    assert (len(train), len(val), len(test)) == (950, 50, 0)
    assert torch.equal(torch.cat([train, val, test]), ids)


def test_sha256_is_of_the_normalised_text(write_text):
    a = load(write_text("ab\ncd", "a.txt"), newlines="space")
    b = load(write_text("ab cd", "b.txt"))
    c = load(write_text("ab cx", "c.txt"))
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256


def test_empty_file_is_rejected(write_text):
    with pytest.raises(CorpusError, match="empty"):
        load(write_text(""))
    with pytest.raises(CorpusError, match="empty"):
        load(write_text("\ufeff", "bom-only.txt"))


# ---------------------------------------------------------------------------------------------------
# encode_file: a file encoded with a run's vocabulary and normalisation


def test_encode_file_with_an_existing_vocab(write_text):
    v = Vocab("ab \n")
    assert encode_file(write_text("ab\nba"), v, DataConfig()).tolist() == v.encode("ab\nba")
    spaced = DataConfig(newlines="space")
    assert encode_file(write_text("ab\nba"), v, spaced).tolist() == v.encode("ab ba")
    with pytest.raises(CorpusError, match="'z'"):
        encode_file(write_text("abz"), v, DataConfig())


def test_encode_file_applies_the_ptb_spacing_of_a_ptb_run(write_text):
    v = Vocab("ab_\n")
    ptb_line = write_text(" a b _ b a \n")
    assert encode_file(ptb_line, v, DataConfig(corpus="ptb-char")).tolist() == v.encode("ab_ba\n")


def test_encode_file_normalises_like_load_corpus_for_a_spaced_builtin(monkeypatch, tmp_path, write_text):
    # encode_file asks Normalisation.of(cfg), the same home as load_corpus: any built-in flagged drop_spaces
    content = "a b _ c\nc b a\n"
    upstream = write_text(content, "upstream/spaced.txt")
    remote = RemoteFile("spaced.txt", upstream.as_uri(), hashlib.sha256(content.encode()).hexdigest(), len(content))
    monkeypatch.setitem(
        BUILTINS, "spaced", Builtin("spaced", "symbols separated by spaces", (remote,), drop_spaces=True)
    )
    (tmp_path / "cache").mkdir()  # CHARLM_DATA_DIR must name an existing folder
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path / "cache"))
    cfg = DataConfig(corpus="spaced", val_fraction=0.0)
    corpus = load_corpus(cfg)
    assert corpus.vocab.decode(corpus.train.tolist()) == "ab_c\ncba\n"
    assert torch.equal(encode_file(upstream, corpus.vocab, cfg), corpus.train)


def test_encode_file_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        encode_file(tmp_path / "nope.txt", Vocab("a"), DataConfig())


# ---------------------------------------------------------------------------------------------------
# The real corpora (skipped when ../shared/data is absent)


def test_jaychou_like_d2l_has_1027_characters(builtin_cache):
    corpus = load_corpus(DataConfig(corpus="jaychou", newlines="space", max_chars=10000, val_fraction=0.0))
    assert len(corpus.vocab) == 1027
    assert len(corpus.train) == 10000 and corpus.train.dtype == torch.int16
    assert "\n" not in corpus.vocab.chars
    assert corpus.vocab.decode(corpus.train[:4].tolist()) == "想要有直"


def test_tinyshakespeare(builtin_cache):
    corpus = load_corpus(DataConfig(corpus="tinyshakespeare"))
    assert len(corpus.vocab) == 65
    assert len(whole(corpus)) == 1_115_394
    assert len(corpus.val) == 111_539 and len(corpus.test) == 0
    text = (builtin_cache / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert corpus.vocab.decode(corpus.train[:200].tolist()) == text[:200]
    assert corpus.vocab.decode(corpus.val[-50:].tolist()) == text[-50:]


def test_ptb_char_has_its_own_splits_without_spaces(builtin_cache):
    corpus = load_corpus(DataConfig(corpus="ptb-char", val_fraction=0.3, test_fraction=0.3))
    assert " " not in corpus.vocab.chars
    assert "_" in corpus.vocab.chars and "\n" in corpus.vocab.chars
    assert len(corpus.vocab) == 50  # the literature's 50 symbols: 48 characters, "_" and the end of line
    # the fractions are ignored: each split is its own file, with the spaces dropped
    for split, filename in [
        ("train", "ptb.char.train.txt"),
        ("val", "ptb.char.valid.txt"),
        ("test", "ptb.char.test.txt"),
    ]:
        text = (builtin_cache / filename).read_text(encoding="utf-8").replace(" ", "")
        ids = corpus.split(split)
        assert len(ids) == len(text), split
        assert corpus.vocab.decode(ids[:300].tolist()) == text[:300]


# ---------------------------------------------------------------------------------------------------
# documents and vocabulary cleaning


def test_documents_splits_cut_between_documents(write_text):
    from charlm.data.corpus import decode_ids

    path = write_text("".join(f"line {i}\n" for i in range(20)))
    corpus = load_corpus(DataConfig(corpus=str(path), documents="lines", val_fraction=0.17, test_fraction=0.13))
    eod = corpus.vocab.eod
    for split in (corpus.train, corpus.val, corpus.test):
        assert len(split) and int(split[-1]) == eod  # every split ends a document: none is cut
    texts = [decode_ids(s, corpus.vocab).split("\x00")[:-1] for s in (corpus.train, corpus.val, corpus.test)]
    assert sum(texts, []) == [f"line {i}" for i in range(20)]


def test_files_mode_makes_one_document_per_file(tmp_path):
    from charlm.data.corpus import training_documents

    for name, text in (("a.txt", "one\ntwo\n"), ("b.txt", "three"), ("c.txt", "four\n\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    cfg = DataConfig(corpus=str(tmp_path), documents="files", val_fraction=0.0)
    assert training_documents(cfg) == ["one\ntwo", "three", "four"]
    assert load_corpus(cfg).vocab.chars[-1] == "<eod>"


def test_stream_mode_is_unchanged(write_text):
    path = write_text("ab\ncd\n")
    corpus = load(path)
    assert corpus.vocab.chars == ["\n", "a", "b", "c", "d"] and corpus.vocab.eod is None
    assert len(corpus.train) == 6


def test_rare_characters_of_the_training_split_become_unk(write_text):
    from charlm.data.corpus import decode_ids, training_documents, unknown_share

    # "z" twice and "q" once in training; "y" only in val (never seen in training)
    path = write_text("aaaa bbbb zz\naaa bbb q\nab ab ab\naaay bbb\n")
    cfg = DataConfig(corpus=str(path), documents="lines", val_fraction=0.2, min_char_count=3)
    corpus = load_corpus(cfg)
    assert corpus.vocab.chars == [" ", "a", "b", "<eod>", "<unk>"]
    assert decode_ids(corpus.train, corpus.vocab).count("\ufffd") == 3  # z, z, q
    assert decode_ids(corpus.val, corpus.vocab) == "aaa\ufffd bbb\x00"
    assert unknown_share(corpus.val, corpus.vocab) == pytest.approx(1 / 9)
    assert training_documents(cfg)[0] == "aaaa bbbb \ufffd\ufffd"
    # a saved vocabulary (a resume, a parent) keeps its characters even when they are rare here
    again = load_corpus(cfg, vocab=Vocab.in_order([*corpus.vocab.chars, "q"]))
    assert again.vocab.chars[:5] == corpus.vocab.chars and "q" in again.vocab.index


def test_lowercase_and_normalize_apply_to_the_corpus_and_to_scored_text(write_text):
    from charlm.data.corpus import encode_text

    path = write_text("Cafe\u0301 ÉTÉ\n")
    cfg = DataConfig(corpus=str(path), val_fraction=0.0, lowercase=True, normalize="NFC")
    corpus = load_corpus(cfg)
    assert "é" in corpus.vocab.index and "É" not in corpus.vocab.index and "\u0301" not in corpus.vocab.index
    assert encode_text("CAFÉ", corpus.vocab, cfg).tolist() == corpus.vocab.encode("café")
