"""tokenizer.json read by Hugging Face's own `tokenizers`: one token per character, the ids of charlm's vocabulary,
line breaks, spaces and CJK alike, the reserved symbols whole, and the text decoded back unchanged."""

from __future__ import annotations

import pytest

from charlm.data.vocab import Vocab
from charlm.export.tokenizer import tokenizer_json

tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed: pip install tokenizers")


@pytest.mark.parametrize("reserved", [[], ["<eod>"], ["<eod>", "<unk>"]])
def test_every_character_is_one_token_with_charlms_id(reserved):
    vocab = Vocab.in_order(["\n", " ", "a", "b", "分", "开", "é", "\t", "[", "\\", *reserved])
    tokenizer = tokenizers.Tokenizer.from_str(tokenizer_json(vocab))
    for text in ["ab", "a b\n\nb", "分开 a\tb", "[\\]"[0:2] + "é"]:
        encoded = tokenizer.encode(text)
        assert encoded.ids == vocab.encode(text) and len(encoded.ids) == len(text)
        assert tokenizer.decode(encoded.ids) == text
    if reserved:
        assert tokenizer.encode("a<eod>b").ids == [vocab.index["a"], vocab.eod, vocab.index["b"]]
    if "<unk>" in reserved:
        assert tokenizer.encode("z").ids == [vocab.unk]
    else:
        with pytest.raises(Exception, match="UNK"):
            tokenizer.encode("z")
