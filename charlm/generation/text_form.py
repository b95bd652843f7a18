"""The text form of generation: a prefix put in the run's own form before the model reads it, and a sample's
ids as plain output prints them."""

from __future__ import annotations

from pathlib import Path

from charlm.config import DataConfig
from charlm.data.documents import clean_unicode
from charlm.data.vocab import Vocab, not_utf8
from charlm.errors import UsageError
from charlm.errors import shown as quoted
from charlm.files.limits import PREFIX_FILE_LIMIT, read_user_text


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


def start_text(vocab: Vocab) -> str:
    """What a sample without a prefix starts after (not part of its text): a new line, else a space."""
    for char in ("\n", " "):
        if char in vocab.index:
            return char
    raise UsageError("this model's vocabulary has neither a newline nor a space to start from: pass --prefix")


UNKNOWN = ("refuse", "map")  # what a prefix's characters the model never saw do: refused, or read as <unk>


def check_prefix(vocab: Vocab, prefix: str, *, unknown: str = "refuse") -> list[int]:
    if not isinstance(prefix, str):
        hint = " (decode bytes first, e.g. prefix.decode('utf-8'))" if isinstance(prefix, (bytes, bytearray)) else ""
        raise UsageError(f"the prefix must be text, not {quoted(prefix)}{hint}")
    if not prefix:
        raise UsageError(
            "the prefix is empty: pass at least one character, e.g. --prefix 分开 "
            "(or leave --prefix out to start at a new line)"
        )
    missing = vocab.missing(prefix)
    if not_utf8(missing):
        raise UsageError(
            f"the prefix is not UTF-8 (it holds the byte or lone surrogate {not_utf8(missing)}): pass UTF-8 text"
        )
    if unknown not in UNKNOWN:
        raise UsageError(f"unknown must be refuse or map, not {quoted(unknown)}")
    if missing and unknown == "map":
        if vocab.unk is None:
            raise UsageError(
                "--unknown map needs a model with the unknown symbol <unk>: train it with data.min_char_count=N"
            )
        return vocab.encode(prefix, unknown=True)
    if missing:
        shown = " ".join(repr(c) for c in missing[:10])
        fix = " or pass --unknown map to read them as <unk>" if vocab.unk is not None else ""
        raise UsageError(
            f"the prefix has characters the model never saw: {shown}; use characters of the training corpus{fix}"
        )
    return vocab.encode(prefix)


def read_prefix_file(path: Path) -> str:
    """A prefix from a UTF-8 file, exactly as written (a BOM dropped); check_prefix checks it like --prefix.
    A regular file of at most limits.PREFIX_FILE_LIMIT bytes, refused before it is read."""
    return read_user_text(path, "prefix file", PREFIX_FILE_LIMIT)
