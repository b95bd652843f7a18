"""charlm.data.cache: the encoded corpus, written once through fsio.atomic_folder and memory-mapped."""

from __future__ import annotations

import json

import pytest
import torch

from charlm.config import DataConfig
from charlm.data import cache as data_cache
from charlm.data import encoded_cache_dir
from charlm.data.corpus import load_corpus
from charlm.data.text import resolve_source
from charlm.errors import CorpusError, RunError
from charlm.files import fsio

TEXT = "分开 hello\n不分开,\t世界!\r\n" * 40


def test_the_cached_corpus_equals_the_plain_one_and_is_encoded_once(write_text, tmp_path, monkeypatch):
    cfg = DataConfig(corpus=str(write_text(TEXT)), val_fraction=0.1, test_fraction=0.1)
    plain = load_corpus(cfg)
    cached = load_corpus(cfg, cache=tmp_path / "enc")
    monkeypatch.setattr(data_cache, "encode_chunks", lambda *a, **k: pytest.fail("encoded again"))
    again = load_corpus(cfg, cache=tmp_path / "enc")
    for corpus in (cached, again):
        assert corpus.vocab == plain.vocab and corpus.sha256 == plain.sha256 and corpus.name == plain.name
        for split in ("train", "val", "test"):
            assert torch.equal(corpus.split(split), plain.split(split))
            assert corpus.split(split).dtype == plain.split(split).dtype


def test_the_published_folder_is_whole_and_readable(write_text, tmp_path):
    cfg = DataConfig(corpus=str(write_text(TEXT)))
    load_corpus(cfg, cache=tmp_path / "enc")
    (folder,) = (tmp_path / "enc").iterdir()  # no temp folder left beside it
    assert sorted(p.name for p in folder.iterdir()) == ["all.ids", "meta.json"]
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["format"] == data_cache.ENCODED_FORMAT and meta["lengths"] == {"all": len(TEXT)}
    umask = fsio.current_umask()
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in folder.iterdir())


def test_the_encoding_key_is_unchanged(write_text):
    # the folder names of caches written before the data package: an existing cache stays valid
    path = write_text("ab c\nd\n", "c.txt")
    source = resolve_source(str(path))
    assert data_cache._encoding_key(source, DataConfig(corpus=str(path))) == "f08a9b6654b72765f15179c2062c6874"
    spaced = DataConfig(corpus=str(path), newlines="space", max_chars=5)
    assert data_cache._encoding_key(source, spaced) == "73840d8eaf192cecfd617ba7ce79d658"


def test_the_ptb_encoding_key_is_unchanged(builtin_cache):
    source = resolve_source("ptb-char")
    assert data_cache._encoding_key(source, DataConfig(corpus="ptb-char")) == "c8dea918690029cefdf6be8632ece89e"


def test_each_normalisation_gets_its_own_folder(write_text, tmp_path):
    path = str(write_text(TEXT))
    for cfg in [
        DataConfig(corpus=path),
        DataConfig(corpus=path, newlines="space"),
        DataConfig(corpus=path, max_chars=100),
        DataConfig(corpus=path),
    ]:
        load_corpus(cfg, cache=tmp_path / "enc")
    assert len(list((tmp_path / "enc").iterdir())) == 3


def test_a_folder_published_first_by_another_process_is_kept(write_text, tmp_path):
    cfg = DataConfig(corpus=str(write_text(TEXT)), val_fraction=0.0)
    first = load_corpus(cfg, cache=tmp_path / "enc")
    (folder,) = (tmp_path / "enc").iterdir()
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    source = resolve_source(cfg.corpus)
    groups = {"all": source.parts}

    def text(parts):
        return iter([TEXT])

    def first_pass():  # the racing writer: its rename finds the folder already there
        return first.vocab, {"all": len(first.train)}, first.sha256

    data_cache._write_encoded(folder, source, groups, text=text, first_pass=first_pass)  # must not raise
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert list((tmp_path / "enc").iterdir()) == [folder]  # its temp folder is gone


def test_a_cache_that_cannot_be_written_is_a_run_error(write_text, tmp_path):
    cfg = DataConfig(corpus=str(write_text(TEXT)))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(RunError, match="cannot write the encoded corpus to .*: free disk space or set CHARLM_DATA_DIR"):
        load_corpus(cfg, cache=not_a_folder / "enc")


@pytest.mark.parametrize("damage", ["truncate", "meta"])
def test_a_damaged_cache_is_a_corpus_error(write_text, tmp_path, damage):
    cfg = DataConfig(corpus=str(write_text(TEXT)))
    load_corpus(cfg, cache=tmp_path / "enc")
    (folder,) = (tmp_path / "enc").iterdir()
    if damage == "truncate":
        with open(folder / "all.ids", "r+b") as f:
            f.truncate(10)
    else:
        (folder / "meta.json").write_text("{", encoding="utf-8")
    with pytest.raises(CorpusError, match="damaged: delete that folder and run again"):
        load_corpus(cfg, cache=tmp_path / "enc")


def test_encoded_cache_dir_is_beside_the_builtins(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path))
    assert encoded_cache_dir() == tmp_path / "encoded"
