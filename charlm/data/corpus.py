"""A corpus loaded for training: read, normalised, given a vocabulary, encoded and split.

load_corpus runs the two passes over the text (text.scan, then vocab.encode_chunks), or takes the ids
from the memory-mapped encoded cache (cache.load_encoded); encode_file encodes any file with a run's
vocabulary and normalisation, to score it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.config import DataConfig
from charlm.data.cache import load_encoded
from charlm.data.documents import EOD_MARK, split_documents
from charlm.data.text import (
    Normalisation,
    Source,
    TextPart,
    _limited,
    iter_text,
    normalise_string,
    resolve_source,
    scan,
)
from charlm.data.vocab import EOD, UNK, Vocab, encode_chunks
from charlm.errors import CorpusError
from charlm.files.limits import check_memory


@dataclass
class Corpus:
    name: str
    vocab: Vocab
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    sha256: str  # of the normalised text: a resumed or scored run can check it has the same data

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def encode_file(path: str | Path, vocab: Vocab, cfg: DataConfig) -> torch.Tensor:
    """Encode any text file with a run's vocabulary and normalisation (to score it with the model)."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"file {path} not found: check the path")
    if not path.is_file():
        raise CorpusError(f"{path} is not a regular file: pass a UTF-8 text file")
    # its ids are held whole (one to four bytes each, and a file has at most as many characters as bytes):
    # refused before the first read when they cannot fit
    need = path.stat().st_size * torch.empty(0, dtype=vocab.id_dtype()).element_size()
    check_memory(need, f"scoring {path}", "score a part of it (split it, e.g. with head -c)")
    parts = (TextPart(path),)
    normalisation = Normalisation.of(cfg)  # as the run's corpus was: a PTB run scores files without spaces

    def text():
        return iter_text(parts, normalisation)

    _, length, _ = scan(text())
    return encode_chunks(text(), vocab, length, unknown=vocab.unk is not None)


def encode_text(text: str, vocab: Vocab, cfg: DataConfig) -> torch.Tensor:
    """Encode a string with a run's vocabulary and normalisation, as encode_file does a file. With <unk> in
    the vocabulary, a character it lacks is <unk> (perplexity reports their share), in both."""
    normalised = normalise_string(text, Normalisation.of(cfg))
    return encode_chunks(iter([normalised]), vocab, len(normalised), unknown=vocab.unk is not None)


def unknown_share(ids: torch.Tensor, vocab: Vocab) -> float:
    """The share of `ids` that is <unk> (0 without one): text the model reads as one symbol, so it scores
    better than the text it stands for."""
    return float((ids == vocab.unk).sum()) / max(1, len(ids)) if vocab.unk is not None else 0.0


def decode_ids(ids: torch.Tensor, vocab: Vocab) -> str:
    """The text of `ids` in one vectorised step: <eod> as EOD_MARK, <unk> as U+FFFD."""
    special = {EOD: ord(EOD_MARK), UNK: 0xFFFD}
    points = torch.tensor([special[c] if c in special else ord(c) for c in vocab.chars], dtype=torch.int32)
    return points[ids.long()].numpy().tobytes().decode("utf-32-le")


def training_documents(cfg: DataConfig, vocab: Vocab | None = None) -> list[str]:
    """The training split's documents as strings (one, the whole split, in stream mode), normalised as the
    model read them (a rare character of min_char_count as U+FFFD). `vocab`: a run's saved one."""
    corpus = load_corpus(cfg, vocab=vocab)
    text = decode_ids(corpus.train, corpus.vocab)
    return split_documents(text) if cfg.documents != "stream" else [text]


def load_corpus(
    cfg: DataConfig, progress: Callable | None = None, cache: Path | None = None, vocab: Vocab | None = None
) -> Corpus:
    """Read, normalise, build the vocabulary, encode and split the corpus named by `cfg`.

    With `cache` (a folder), the encoded text is kept there as integer files and memory-mapped:
    encoded once, then every process that loads it shares the same pages instead of holding a copy.
    With `vocab` (a fine-tuned run's parent's, or a saved run's), the corpus's vocabulary is that one,
    ids unchanged, extended by the characters it lacks.
    """
    source = resolve_source(cfg.corpus, progress)
    groups = _split_groups(source)
    normalisation = Normalisation.of(cfg)
    base = vocab

    def text(parts):
        return _limited(iter_text(parts, normalisation), cfg.max_chars)

    if cache is not None:
        vocab, encoded, sha256 = load_encoded(
            source,
            groups,
            text,
            cfg=cfg,
            cache=cache,
            first_pass=lambda: _scan_groups(source, groups, text, base),
            base=base,
        )
    else:
        vocab, lengths, sha256 = _scan_groups(source, groups, text, base)
        encoded = {split: encode_chunks(text(parts), vocab, lengths[split]) for split, parts in groups.items()}
    if source.has_splits:
        empty = torch.empty(0, dtype=vocab.id_dtype())
        train, val, test = (encoded.get(s, empty) for s in ("train", "val", "test"))
    else:
        train, val, test = split_ids(encoded["all"], cfg.val_fraction, cfg.test_fraction, eod=vocab.eod)
    if cfg.min_char_count:
        vocab, (train, val, test) = drop_rare(vocab, (train, val, test), cfg.min_char_count, keep=base)
    return Corpus(source.name, vocab, train, val, test, sha256)


def drop_rare(vocab: Vocab, splits: tuple, min_count: int, *, keep: Vocab | None = None) -> tuple[Vocab, tuple]:
    """Characters seen fewer than `min_count` times in the training split (splits[0]) become <unk>: the new
    vocabulary and the splits re-encoded (one gather each). A `keep` vocabulary's characters (a parent's, a
    saved run's) are never dropped, so their ids stay."""
    counts = torch.bincount(splits[0].long(), minlength=len(vocab)).tolist()
    kept = set(keep.chars) if keep is not None else set()
    rare = {c for c, n in zip(vocab.chars, counts, strict=True) if n < min_count and len(c) == 1 and c not in kept}
    cleaned = vocab.without(rare)
    remap = torch.tensor([cleaned.index.get(c, cleaned.unk) for c in vocab.chars], dtype=torch.int64)
    return cleaned, tuple(remap[ids.long()].to(cleaned.id_dtype()) for ids in splits)


def _scan_groups(
    source: Source, groups: dict, text: Callable, base: Vocab | None = None
) -> tuple[Vocab, dict[str, int], str]:
    """First pass over every split group: the vocabulary, each group's length, the text's sha256."""
    chars: set[str] = set()
    digest = hashlib.sha256()
    lengths = {}
    for split, parts in groups.items():
        split_chars, lengths[split], split_sha = scan(text(parts))
        chars |= split_chars
        digest.update(split_sha.encode())
    if sum(lengths.values()) == 0:
        raise CorpusError(f"corpus {source.name} is empty: use a text file with some characters")
    if EOD_MARK in chars:  # documents mode: each document's end is the reserved <eod>
        chars = (chars - {EOD_MARK}) | {EOD}
    return (base.extended(chars) if base is not None else Vocab(chars)), lengths, digest.hexdigest()


def _split_groups(source: Source) -> dict[str, tuple[TextPart, ...]]:
    groups: dict[str, tuple[TextPart, ...]] = {}
    for part in source.parts:
        groups[part.split] = groups.get(part.split, ()) + (part,)
    return groups


def split_ids(ids: torch.Tensor, val_fraction: float, test_fraction: float, *, eod: int | None = None):
    """Contiguous train / val / test: the tail holds val then test, so no window straddles splits. With `eod`
    (documents), each cut moves to the nearest document end, so no document is cut."""
    n = len(ids)
    n_test = int(n * test_fraction)
    n_val = int(n * val_fraction)
    n_train = n - n_val - n_test
    cuts = [n_train, n_train + n_val]
    if eod is not None:
        cuts = [_document_cut(ids, cut, eod) if 0 < cut < n else cut for cut in cuts]
    return ids[: cuts[0]], ids[cuts[0] : cuts[1]], ids[cuts[1] :]


def _document_cut(ids: torch.Tensor, cut: int, eod: int) -> int:
    """The position just after the document end nearest `cut` (n when there is none: one document)."""
    ends = (ids == eod).nonzero().flatten() + 1
    if len(ends) == 0:
        return len(ids)
    return int(ends[(ends - cut).abs().argmin()])
