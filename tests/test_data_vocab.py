"""charlm.data.vocab: the vocabulary and the second pass (encode_chunks)."""

from __future__ import annotations

import pytest
import torch

from charlm.config import DataConfig
from charlm.data.corpus import Corpus, encode_text, load_corpus
from charlm.data.vocab import Vocab, encode_chunks
from charlm.errors import CorpusError

MIXED = "分开 hello\n不分开,\t世界!\r\nabc 😀 jay周杰伦\n\n末尾"


def load(path, **kw) -> Corpus:
    kw.setdefault("val_fraction", 0.0)
    return load_corpus(DataConfig(corpus=str(path), **kw))


# ---------------------------------------------------------------------------------------------------
# Vocab


def test_vocab_is_sorted_unique_and_deterministic():
    v = Vocab("cabbage 分")
    assert v.chars == sorted(set("cabbage 分"))
    assert v.chars == [" ", "a", "b", "c", "e", "g", "分"]
    assert Vocab("gabbace分 ") == v  # order of appearance does not matter
    assert [v.index[c] for c in v.chars] == list(range(len(v)))
    assert v.encode("cab") == [3, 1, 2]
    assert v.decode([3, 1, 2]) == "cab"
    assert Vocab("ab") != Vocab("abc")


def test_vocab_json_round_trip():
    v = Vocab(MIXED)
    text = v.to_json()
    assert "分" in text  # stored as readable text
    back = Vocab.from_json(text)
    assert back == v and back.chars == v.chars and back.index == v.index


def test_vocab_missing_in_first_appearance_order():
    v = Vocab("abc")
    assert v.missing("abc") == []
    assert v.missing("xaybxz") == ["x", "y", "z"]
    assert v.missing("分开分") == ["分", "开"]


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(1, torch.uint8), (256, torch.uint8), (257, torch.int16), (32767, torch.int16), (32768, torch.int32)],
)
def test_id_dtype_by_vocab_size(size, dtype):
    assert Vocab(chr(0x4E00 + i) for i in range(size)).id_dtype() == dtype


@pytest.mark.parametrize("size", [256, 300])
def test_encode_uses_the_narrow_dtype_and_keeps_every_id(write_text, size):
    chars = [chr(0x4E00 + i) for i in range(size)]
    text = "".join(chars) + "".join(reversed(chars))
    corpus = load(write_text(text))
    assert corpus.train.dtype == (torch.uint8 if size <= 256 else torch.int16)
    assert corpus.train.long().tolist() == [corpus.vocab.index[c] for c in text]
    assert int(corpus.train.long().max()) == size - 1


# ---------------------------------------------------------------------------------------------------
# Encoding


def test_encode_chunks_equals_a_plain_python_encoding():
    v = Vocab(MIXED)
    chunks = [MIXED[i : i + 5] for i in range(0, len(MIXED), 5)]
    ids = encode_chunks(iter(chunks), v, len(MIXED))
    assert ids.long().tolist() == [v.index[c] for c in MIXED]


def test_encode_chunks_rejects_unknown_characters():
    v = Vocab("abc")
    with pytest.raises(CorpusError, match="lacks") as info:
        encode_chunks(iter(["ab", "a分b"]), v, 5)
    assert "分" in str(info.value)
    with pytest.raises(CorpusError, match="'B'"):  # below the highest known code point, still unknown
        encode_chunks(iter(["aBc"]), v, 3)


# ---------------------------------------------------------------------------------------------------
# a saved vocabulary's order, and growing one (fine-tuning)


def test_in_order_keeps_a_saved_order_and_refuses_repeats():
    v = Vocab.in_order(["z", "a", "分"])
    assert v.chars == ["z", "a", "分"] and v.index == {"z": 0, "a": 1, "分": 2}
    assert Vocab.from_json(v.to_json()).chars == ["z", "a", "分"]
    with pytest.raises(ValueError, match="once"):
        Vocab.in_order(["a", "b", "a"])


def test_extended_keeps_every_id_and_appends_the_new_characters_sorted():
    parent = Vocab("hello 分开")
    grown = parent.extended("world 不分开!")
    assert grown.chars[: len(parent)] == parent.chars
    assert grown.chars[len(parent) :] == ["!", "d", "r", "w", "不"]
    assert parent.extended("hello") == parent


def test_load_corpus_with_a_base_vocabulary_encodes_with_its_ids(write_text, tmp_path):
    base = Vocab.in_order(["z", "分", "a"])  # not sorted: a fine-tuned run's order
    text = "abc 分开\n" * 30
    cfg = DataConfig(corpus=str(write_text(text)), val_fraction=0.0)
    for cache in (None, tmp_path / "enc"):
        corpus = load_corpus(cfg, vocab=base, cache=cache)
        assert corpus.vocab.chars == ["z", "分", "a", "\n", " ", "b", "c", "开"]
        assert corpus.vocab.decode(corpus.train.tolist()) == text
        assert corpus.sha256 == load_corpus(cfg).sha256  # the checksum is the text's, whatever the ids
    assert len(list((tmp_path / "enc").iterdir())) == 1
    load_corpus(cfg, cache=tmp_path / "enc")  # the sorted vocabulary gets its own folder
    assert len(list((tmp_path / "enc").iterdir())) == 2


def test_encode_text_applies_the_corpus_normalisation():
    vocab = Vocab("ab ")
    ids = encode_text("a\nb", vocab, DataConfig(newlines="space"))
    assert vocab.decode(ids.tolist()) == "a b"
    with pytest.raises(CorpusError, match="lacks"):
        encode_text("a\nb", vocab, DataConfig())


# ---------------------------------------------------------------------------------------------------
# reserved symbols: <eod> and <unk>


def test_reserved_symbols_come_last_and_are_never_text():
    from charlm.data.vocab import EOD, UNK

    v = Vocab(["b", UNK, "a", EOD])
    assert v.chars == ["a", "b", EOD, UNK]
    assert (v.eod, v.unk) == (2, 3)
    assert v.missing("<eod>") == ["<", "e", "o", "d", ">"]  # the text "<eod>" is five characters, not the symbol
    assert Vocab.from_json(v.to_json()) == v
    assert Vocab("ab").eod is None and Vocab("ab").unk is None  # an old vocabulary: no symbols


def test_unknown_characters_map_to_unk_only_when_asked():
    from charlm.data.vocab import UNK

    v = Vocab(["a", "b", UNK])
    assert encode_chunks(iter(["abz"]), v, 3, unknown=True).tolist() == [0, 1, 2]
    assert v.encode("aΩ", unknown=True) == [0, 2]
    with pytest.raises(CorpusError, match="lacks"):
        encode_chunks(iter(["abz"]), v, 3)


def test_a_saved_vocabulary_lists_a_reserved_symbol_once():
    from charlm.files.readback import BadFile, check_vocab

    assert check_vocab(["a", "<eod>", "<unk>"]) == ["a", "<eod>", "<unk>"]
    with pytest.raises(BadFile, match="not one character"):
        check_vocab(["a", "<eod>", "<eod>"])
    with pytest.raises(BadFile, match="not one character"):
        check_vocab(["a", "<bos>"])
