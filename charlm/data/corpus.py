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
from charlm.data.text import Normalisation, Source, TextPart, _limited, iter_text, resolve_source, scan
from charlm.data.vocab import Vocab, encode_chunks
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
    return encode_chunks(text(), vocab, length)


def encode_text(text: str, vocab: Vocab, cfg: DataConfig) -> torch.Tensor:
    """Encode a string with a run's vocabulary and normalisation, as encode_file does a file."""
    normalised = text.translate(Normalisation.of(cfg).table())
    return encode_chunks(iter([normalised]), vocab, len(normalised))


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
        train, val, test = split_ids(encoded["all"], cfg.val_fraction, cfg.test_fraction)
    return Corpus(source.name, vocab, train, val, test, sha256)


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
    return (base.extended(chars) if base is not None else Vocab(chars)), lengths, digest.hexdigest()


def _split_groups(source: Source) -> dict[str, tuple[TextPart, ...]]:
    groups: dict[str, tuple[TextPart, ...]] = {}
    for part in source.parts:
        groups[part.split] = groups.get(part.split, ()) + (part,)
    return groups


def split_ids(ids: torch.Tensor, val_fraction: float, test_fraction: float):
    """Contiguous train / val / test: the tail holds val then test, so no window straddles splits."""
    n = len(ids)
    n_test = int(n * test_fraction)
    n_val = int(n * val_fraction)
    n_train = n - n_val - n_test
    return ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
