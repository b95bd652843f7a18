"""The vocabulary, and the second pass: text chunks encoded into one preallocated tensor of ids.

Ids follow sorted code-point order, so the same text always gives the same ids; a fine-tuned run's
vocabulary is its parent's, in the parent's order, followed by the new corpus's new characters (sorted),
so that every old character keeps its id. Encoding goes through a code-point lookup table (one gather per
chunk): no per-character Python work, no list of ints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import torch

from charlm.data.documents import EOD_MARK
from charlm.errors import CorpusError
from charlm.files.readback import RESERVED, vocab_chars

EOD, UNK = RESERVED  # the end-of-document and unknown symbols: vocabulary entries, never characters of a text


class Vocab:
    """Characters in sorted code-point order: the same text always gives the same ids.

    `Vocab(chars)` builds one from any characters; `Vocab.in_order(chars)` keeps a saved vocabulary's
    order (a checkpoint's, vocab.json's), which is not sorted in a fine-tuned run.
    """

    def __init__(self, chars, *, keep_order: bool = False):
        self.chars: list[str] = list(chars) if keep_order else _sorted(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise ValueError("a vocabulary lists each character once")
        self.eod: int | None = self.index.get(EOD)  # the reserved symbols' ids (None: the vocabulary has none)
        self.unk: int | None = self.index.get(UNK)

    @classmethod
    def in_order(cls, chars) -> Vocab:
        """The vocabulary with exactly these ids (a saved one)."""
        return cls(chars, keep_order=True)

    def extended(self, chars) -> Vocab:
        """This vocabulary, ids unchanged, followed by the characters of `chars` it lacks (sorted)."""
        return Vocab.in_order(self.chars + _sorted(set(chars) - set(self.index)))

    def without(self, drop) -> Vocab:
        """This vocabulary less the characters `drop`, with <unk> (new ids: the rest keep their order)."""
        kept = [c for c in self.chars if c not in set(drop)]
        return Vocab.in_order(kept + ([UNK] if UNK not in self.index else []))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def missing(self, text: str) -> list[str]:
        """Characters of `text` that the vocabulary lacks, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(
        self, text: str, *, unknown: bool = False
    ) -> list[int]:  # short strings (prefixes); corpora: encode_chunks
        """The ids of `text`; with `unknown`, a character the vocabulary lacks is <unk> (which it must have)."""
        if unknown:
            return [self.index.get(c, self.unk) for c in text]
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Vocab:
        """A saved vocab.json's vocabulary; readback.BadFile (a ValueError) says what is wrong with one."""
        return cls.in_order(vocab_chars(text))

    def lookup_table(self) -> torch.Tensor:
        """code point -> id (or -1): encodes text with one gather instead of a Python loop. EOD_MARK is <eod>."""
        pairs = [(ord(c), i) for i, c in enumerate(self.chars) if len(c) == 1]
        if self.eod is not None:
            pairs.append((ord(EOD_MARK), self.eod))
        points = torch.tensor([p for p, _ in pairs] or [0], dtype=torch.int64)
        table = torch.full((int(points.max()) + 1,), -1, dtype=torch.int32)
        table[points[: len(pairs)]] = torch.tensor([i for _, i in pairs], dtype=torch.int32)
        return table

    def unknown_share(self, ids: torch.Tensor) -> float | None:
        """The share of `ids` that is <unk> (None: this vocabulary has no <unk>)."""
        return None if self.unk is None else float((ids == self.unk).float().mean())

    def id_dtype(self) -> torch.dtype:
        return torch.uint8 if len(self) <= 256 else torch.int16 if len(self) <= 32767 else torch.int32


def _sorted(chars) -> list[str]:
    """A new vocabulary's order: the characters by code point, then the reserved symbols it has."""
    chars = set(chars)
    return sorted(c for c in chars if c not in RESERVED) + [s for s in RESERVED if s in chars]


def code_points(chunk: str) -> torch.Tensor:
    if not chunk:  # frombuffer refuses an empty buffer
        return torch.empty(0, dtype=torch.int32)
    # surrogatepass: a lone surrogate (a byte that was not UTF-8 on the command line) becomes a code point
    # that no vocabulary has, refused below with the other unknown characters
    return torch.frombuffer(bytearray(chunk.encode("utf-32-le", "surrogatepass")), dtype=torch.int32)


def not_utf8(chars) -> str | None:
    """Where text came from a command line holding bytes that are not UTF-8 (Python keeps each as a lone
    surrogate, U+DC80-U+DCFF): the first such byte as 0xNN, else None."""
    for c in chars:
        if "\udc80" <= c <= "\udcff":
            return f"0x{ord(c) - 0xDC00:02x}"
        if "\ud800" <= c <= "\udfff":
            return f"U+{ord(c):04X}"
    return None


def encode_chunks(
    chunks: Iterator[str], vocab: Vocab, length: int, out: torch.Tensor | None = None, *, unknown: bool = False
) -> torch.Tensor:
    """Second pass: fill one tensor of `length` ids (`out`, e.g. a memory-mapped file, or a new one).

    Characters outside the vocab raise CorpusError, or with `unknown` (the vocabulary has <unk>) become <unk>.
    """
    table = vocab.lookup_table()
    ids = out if out is not None else torch.empty(length, dtype=vocab.id_dtype())
    pos = 0
    for chunk in chunks:
        points = code_points(chunk)
        known = points < len(table)
        encoded = table[points.clamp(max=len(table) - 1)]
        bad = ~known | (encoded < 0)
        if unknown:
            encoded = torch.where(bad, vocab.unk, encoded)
        elif bool(bad.any()):
            missing = vocab.missing(chunk)
            if not_utf8(missing):
                raise CorpusError(
                    f"the text is not UTF-8 (it holds the byte or lone surrogate {not_utf8(missing)}): pass UTF-8 text"
                )
            shown = "".join(missing[:20])
            raise CorpusError(
                f"the text has {len(missing)} characters the vocabulary lacks ({shown!r}): "
                "score text written with the training corpus's characters"
            )
        ids[pos : pos + len(points)] = encoded.to(ids.dtype)
        pos += len(points)
    return ids
