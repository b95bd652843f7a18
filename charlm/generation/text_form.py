"""The text form of generation: a prefix put in the run's own form before the model reads it, and a sample's
ids as plain output prints them."""

from __future__ import annotations

from charlm.config import DataConfig
from charlm.data.documents import clean_unicode
from charlm.data.vocab import Vocab


def normalise_prefix(prefix: str | None, data: DataConfig) -> str | None:
    """`prefix` as the run's corpus was read: Unicode normal form (data.normalize) and lower case
    (data.lowercase), so that "The" reaches a lower-cased model as "the". Anything but text, and a run
    without either, gets it back unchanged (check_prefix judges it)."""
    form = None if data.normalize == "none" else data.normalize
    if not isinstance(prefix, str) or (form is None and not data.lowercase):
        return prefix
    return "".join(clean_unicode(iter([prefix]), form, data.lowercase))


def plain_chars(vocab: Vocab) -> list[str]:
    """Each id's text in plain output: the characters, with a document's end <eod> as a line break (what
    separated the documents of a lines text) and <unk> by its name."""
    chars = list(vocab.chars)
    if vocab.eod is not None:
        chars[vocab.eod] = "\n"
    return chars


def plain_text(vocab: Vocab, ids: list[int]) -> str:
    chars = plain_chars(vocab)
    return "".join(chars[i] for i in ids)
