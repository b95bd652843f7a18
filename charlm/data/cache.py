"""Encoded cache: the ids of a corpus as integer files, memory-mapped by every process that trains on it.

One folder per encoding, named by a hash of the raw bytes of every file and of the options that change
the encoding; it holds meta.json (vocabulary, lengths, sha256 of the text) and one <split>.ids file per
split group. It is written once, published with one rename (fsio.atomic_folder), and then only read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.config import DataConfig
from charlm.data.builtins import data_dir
from charlm.data.text import Normalisation, Source
from charlm.data.vocab import Vocab, encode_chunks
from charlm.errors import CorpusError, RunError
from charlm.files import readback
from charlm.files.fsio import atomic_folder

ENCODED_FORMAT = 1

FirstPass = Callable[[], tuple[Vocab, dict[str, int], str]]  # the vocabulary, each group's length, the sha256


def encoded_cache_dir() -> Path:
    """Where encoded corpora are kept: the folder `encoded` beside the built-in corpora."""
    return data_dir() / "encoded"


def load_encoded(
    source: Source,
    groups: dict,
    text: Callable,
    *,
    cfg: DataConfig,
    cache: Path,
    first_pass: FirstPass,
    base: Vocab | None = None,
) -> tuple[Vocab, dict[str, torch.Tensor], str]:
    """The vocabulary, the ids of each split group (memory-mapped) and the text's sha256.

    The folder is named by a hash of the raw bytes of every file and of the options that change the
    encoding, so an edited file or another normalisation gets a folder of its own, never a stale one.
    `first_pass` scans the text; it runs only when the folder has to be written. A `base` vocabulary (a
    fine-tuned run's) gives other ids, so it is part of the name.
    """
    folder = Path(cache) / _encoding_key(source, cfg, base)
    if not (folder / "meta.json").is_file():
        _write_encoded(folder, source, groups, text=text, first_pass=first_pass)
    return _open_encoded(folder)


def _encoding_key(source: Source, cfg: DataConfig, base: Vocab | None = None) -> str:
    normalisation = Normalisation.of(cfg)
    options = {
        "format": ENCODED_FORMAT,
        "newlines": normalisation.newlines,
        "max_chars": cfg.max_chars,
        "drop_spaces": normalisation.drop_spaces,
    }
    for name, value, default in (
        ("documents", normalisation.documents, "stream"),
        ("form", normalisation.form, None),
        ("lowercase", normalisation.lowercase, False),
    ):
        if value != default:  # a key of its own only when set: the folders of older encodings keep their names
            options[name] = value
    if base is not None:
        options["base_vocab"] = hashlib.sha256("".join(base.chars).encode()).hexdigest()
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for part in source.parts:
        digest.update(f"{part.split}\0{part.member}\0{part.sha256()}\0".encode())
    return digest.hexdigest()[:32]


def _write_encoded(folder: Path, source: Source, groups: dict, *, text: Callable, first_pass: FirstPass) -> None:
    """Encode straight into files mapped in memory (no copy of the ids in RAM), then publish the folder
    with one rename: a reader sees a whole folder or none, even if several processes race to write it."""
    vocab, lengths, sha256 = first_pass()
    try:
        with atomic_folder(folder) as tmp:
            for split, parts in groups.items():
                if lengths[split]:
                    path = tmp / f"{split}.ids"
                    ids = torch.from_file(str(path), shared=True, size=lengths[split], dtype=vocab.id_dtype())
                    encode_chunks(text(parts), vocab, lengths[split], out=ids)
                    del ids  # unmap before atomic_folder fsyncs the file
            meta = {
                "format": ENCODED_FORMAT,
                "corpus": source.name,
                "vocab": vocab.chars,
                "lengths": lengths,
                "sha256": sha256,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    except OSError as e:
        if not (folder / "meta.json").is_file():  # another process published it first: that copy is as good
            raise RunError(
                f"cannot write the encoded corpus to {folder.parent} ({e.strerror or e}): free disk "
                "space or set CHARLM_DATA_DIR to a writable folder"
            ) from None


def _open_encoded(folder: Path) -> tuple[Vocab, dict[str, torch.Tensor], str]:
    damaged = f"the encoded corpus in {folder} is damaged: delete that folder and run again"
    try:
        meta = readback.read_json(folder / "meta.json", readback.MAX_VOCAB_JSON + readback.MIB)
        vocab = Vocab.in_order(readback.check_vocab(meta["vocab"]))
        dtype = vocab.id_dtype()
        encoded = {}
        for split, n in meta["lengths"].items():
            path = folder / f"{split}.ids"
            if n and path.stat().st_size != n * dtype.itemsize:
                raise CorpusError(damaged)
            # shared=False maps the file copy-on-write: the pages come from the page cache, shared by
            # every process on the machine, and nothing can write back to the file
            encoded[split] = (
                torch.from_file(str(path), shared=False, size=n, dtype=dtype) if n else torch.empty(0, dtype=dtype)
            )
        return vocab, encoded, meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CorpusError(damaged) from None
