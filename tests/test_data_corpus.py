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
