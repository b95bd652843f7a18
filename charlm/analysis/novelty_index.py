"""The novelty index of a run's training split: built once, kept, and read back only after a check.

The index (`novelty.SuffixIndex`: the split's ids and their suffix array, from pydivsufsort, the optional
extra charlm[novelty]) is one safetensors file: raw arrays and a small header, nothing unpickled. Its header
holds a `key`, the digest of what the split follows from (the corpus's checksum, the data settings, the
vocabulary), and a checksum of the arrays. Where it is kept:

- a run folder: `novelty-index.safetensors` in it (layout.NOVELTY_INDEX), beside the checkpoints;
- an exported model folder, which charlm never writes into: the user cache folder, `novelty/KEY.safetensors`
  (files.machine.user_cache_dir), so that every copy of the same model shares one.

Where the folder cannot be written, the index is built in memory for this command. A file that is not what
charlm wrote (another run's, an older corpus's, truncated, edited: a checksum or a range that fails) is
built again and replaced, never used.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from charlm.analysis.novelty import Checker, SuffixIndex
from charlm.errors import CorpusError, RunError, UsageError
from charlm.files import fsio, tensorfile
from charlm.files.limits import available_memory
from charlm.files.machine import user_cache_dir
from charlm.files.readback import BadFile
from charlm.store.checkpoint import Checkpoint
from charlm.store.layout import NOVELTY_INDEX
from charlm.store.model_dir import is_model_dir

FORMAT, VERSION = "charlm-novelty-index", "1"
TEXT_TYPES = (np.uint8, np.uint16, np.uint32)  # a split's ids, by vocabulary size (as data.vocab's id_dtype)
SA_TYPES = (np.int32, np.int64)  # pydivsufsort's: int64 past 2**31 positions


def index_key(checkpoint: Checkpoint) -> str:
    """The digest of what a run's training split follows from: its corpus, data settings and vocabulary."""
    what = {
        "corpus_sha256": checkpoint.corpus_sha256,
        "data": asdict(checkpoint.config.data),
        "vocab": checkpoint.vocab,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def index_path(folder: Path, key: str, *, name: str = NOVELTY_INDEX, kind: str = "novelty") -> Path:
    """Where the index of the model in `folder` is kept (see the module's docstring); `name` in a run folder,
    the cache's `kind` folder for a model folder (the counts' index, counts.kept, is kept the same way)."""
    if is_model_dir(folder):
        return user_cache_dir() / kind / f"{key}.safetensors"
    return Path(folder) / name


def checker(folder: Path, checkpoint: Checkpoint, *, say: Callable[[str], object] = lambda line: None) -> Checker:
    """load_index's index with the vocabulary's code point table, ready for queries."""
    from charlm.data.vocab import Vocab

    vocab = Vocab.in_order(checkpoint.vocab)
    lookup = vocab.lookup_table().numpy().astype(np.int64)
    return Checker(load_index(folder, checkpoint, say=say), lookup, _documents(checkpoint, vocab))


def _documents(checkpoint: Checkpoint, vocab) -> frozenset[bytes] | None:
    """The digests of the training split's documents, for a run trained on documents (data.documents lines,
    paragraphs or files): what says whether an item is a whole training item. None in stream mode."""
    from charlm.analysis.novelty import document_digests
    from charlm.data.corpus import training_documents

    if checkpoint.config.data.documents == "stream":
        return None
    return document_digests(training_documents(checkpoint.config.data, vocab))


def load_index(folder: Path, checkpoint: Checkpoint, *, say: Callable[[str], object] = lambda line: None):
    """The novelty index of the model in `folder` (a run or model folder) and `checkpoint`, its own: the
    kept one when it checks out, else built from the training split and kept. `say(line)` hears what was
    done when it is more than a read (built, rebuilt, not kept)."""
    key = index_key(checkpoint)
    path = index_path(folder, key)
    why = "built"
    try:
        return read_index(path, key=key, vocab_size=len(checkpoint.vocab), newline=_newline(checkpoint))
    except FileNotFoundError:
        pass
    except (OSError, BadFile) as e:
        why = f"rebuilt ({path.name}: {getattr(e, 'reason', None) or e.strerror})"
    started = time.perf_counter()
    index = build_index(checkpoint)
    seconds = time.perf_counter() - started
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fsio.atomic_write_bytes(path, to_bytes(index, key))
        where = f"kept in {path}"
    except (OSError, RunError) as e:  # a read-only folder: this command works all the same
        where = f"not kept ({e})"
    say(f"novelty index {why} from {len(index):,} training characters in {seconds:.1f} s, {where}")
    return index


def build_index(checkpoint: Checkpoint) -> SuffixIndex:
    """The suffix array of the training split of `checkpoint`'s run, its corpus read again (and checked)."""
    from charlm import data

    vocab = data.Vocab.in_order(checkpoint.vocab)
    corpus = data.load_corpus(checkpoint.config.data, vocab=vocab)
    if corpus.sha256 != checkpoint.corpus_sha256 or corpus.vocab != vocab:
        raise CorpusError(
            f"corpus {checkpoint.config.data.corpus} changed since this run was trained: the novelty report "
            "compares with the training split, which is no longer there"
        )
    if len(corpus.train) == 0:
        raise CorpusError(f"corpus {checkpoint.config.data.corpus} has no training split to compare with")
    return sort_suffixes(corpus.train.numpy(), len(vocab), _newline(checkpoint))


def sort_suffixes(ids: np.ndarray, vocab_size: int, newline: int | None) -> SuffixIndex:
    """The SuffixIndex of a text given as ids (pydivsufsort sorts the suffixes)."""
    try:
        from pydivsufsort import divsufsort
    except ImportError:
        raise UsageError("the novelty report needs pydivsufsort: pip install 'charlm[novelty]'") from None
    text = ids.astype(_text_type(vocab_size))
    return SuffixIndex(text, divsufsort(text), newline)


def to_bytes(index: SuffixIndex, key: str, *, fmt: str = FORMAT) -> bytes:
    from safetensors.numpy import save

    arrays = {"text": np.ascontiguousarray(index.text), "sa": np.ascontiguousarray(index.sa)}
    meta = {"format": fmt, "version": VERSION, "key": key, "sha256": _checksum(arrays)}
    return save(arrays, metadata=meta)


def read_index(path: Path, *, key: str, vocab_size: int, newline: int | None, fmt: str = FORMAT) -> SuffixIndex:
    """The index kept at `path`, checked: charlm's format for this `key`, its header first (a text and its
    suffix array of one length, in the types the vocabulary and that length imply, in memory there is: a file
    of another size is never read), then the arrays' checksum and every value in range (ids under `vocab_size`,
    positions inside the text). BadFile says what fails."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    data, _ = tensorfile.read(path, _index_check(key, vocab_size, fmt), max_bytes=available_memory())
    try:
        arrays = load(data)
    except (SafetensorError, ValueError, TypeError) as e:
        raise BadFile(f"not a safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if _metadata(data).get("sha256") != _checksum(arrays):
        raise BadFile("its arrays do not match their checksum")
    text, sa = arrays["text"], arrays["sa"]
    if int(text.max()) >= vocab_size or int(sa.min()) < 0 or int(sa.max()) >= len(text):
        raise BadFile("a value out of range")
    return SuffixIndex(text, sa, newline)


def _index_check(key: str, vocab_size: int, fmt: str):
    """The header of this key's index: two arrays of one length n >= 1, the text in the id type of the
    vocabulary (as sort_suffixes makes it), the suffix array in pydivsufsort's, the whole in available memory."""
    text_type = _tensorfile_dtype(_text_type(vocab_size))

    def check(header: tensorfile.Header) -> None:
        meta, arrays = header.metadata, header.tensors
        if meta.get("format") != fmt or meta.get("version") != VERSION:
            raise BadFile(f"not charlm's {fmt.removeprefix('charlm-').replace('-', ' ')} of this version")
        if meta.get("key") != key:
            raise BadFile("the index of another corpus, data settings or vocabulary")
        if set(arrays) != {"text", "sa"} or arrays["text"].dtype != text_type:
            raise BadFile("its arrays are not a text of this vocabulary and its suffix array")
        if arrays["sa"].dtype not in ("I32", "I64") or len(arrays["text"].shape) != 1:
            raise BadFile("its arrays are not a text and its suffix array")
        if arrays["sa"].shape != arrays["text"].shape or arrays["text"].shape[0] < 1:
            raise BadFile("its text and suffix array differ in length")
        if header.size > available_memory():
            raise BadFile(f"its {header.size:,} bytes do not fit in the memory available")

    return check


def _text_type(vocab_size: int):
    return TEXT_TYPES[np.searchsorted([256, 65536], vocab_size, side="right")]


def _tensorfile_dtype(numpy_type) -> str:
    """safetensors' name of a numpy integer type (U8, U16, U32, I32, I64)."""
    kind = np.dtype(numpy_type)
    return f"{'U' if kind.kind == 'u' else 'I'}{kind.itemsize * 8}"


def _metadata(data: bytes) -> dict:
    """The header's metadata (the numpy loader drops it): 8 bytes of length, then JSON (checked by then)."""
    size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(f"{name}:{arrays[name].dtype.str}:{arrays[name].shape}".encode())
        digest.update(np.ascontiguousarray(arrays[name]).data)
    return digest.hexdigest()


def _newline(checkpoint: Checkpoint) -> int | None:
    """The id that ends a line of the training text: <eod> for a run trained on documents, else a newline."""
    from charlm.data.vocab import EOD

    if checkpoint.config.data.documents != "stream" and EOD in checkpoint.vocab:
        return checkpoint.vocab.index(EOD)
    return checkpoint.vocab.index("\n") if "\n" in checkpoint.vocab else None
