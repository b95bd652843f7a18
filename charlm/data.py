"""Corpora, vocabulary and batch iterators.

A corpus source (a file, a folder of .txt files, or a built-in name) is read in chunks, twice: the first
pass finds the character set, the second encodes every character into one preallocated integer
tensor through a code-point lookup table. No per-character Python work, no list of ints.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.config import DataConfig
from charlm.errors import CorpusError, RunError

CHUNK_CHARS = 1 << 20  # 1M characters per read: a few MB of working memory for any corpus size


# ---------------------------------------------------------------------------------------------------
# Built-in corpora


@dataclass(frozen=True)
class RemoteFile:
    filename: str  # the name in the cache folder (the names used in ../shared/data)
    url: str
    sha256: str
    size: int
    split: str = "all"  # all | train | val | test
    member: str | None = None  # the text file inside a zip archive


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    drop_spaces: bool = False  # PTB-char writes "a b c _ d": the spaces only separate symbols


_PTB = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in [
        Builtin(
            "jaychou",
            "Jay Chou lyrics (d2l-zh)",
            (
                RemoteFile(
                    "jaychou_lyrics.txt.zip",
                    "https://raw.githubusercontent.com/d2l-ai/d2l-zh/v1/data/jaychou_lyrics.txt.zip",
                    "3cfedd7d174111cdad5a27eaffaa6a2432a2842cf2590a03dd8a97610ea07043",
                    52607,
                    member="jaychou_lyrics.txt",
                ),
            ),
        ),
        Builtin(
            "tinyshakespeare",
            "Tiny Shakespeare (char-rnn)",
            (
                RemoteFile(
                    "tinyshakespeare.txt",
                    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                    1115394,
                ),
            ),
        ),
        Builtin(
            "timemachine",
            "The Time Machine (d2l)",
            (
                RemoteFile(
                    "timemachine.txt",
                    "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
                    "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516",
                    178979,
                ),
            ),
        ),
        Builtin(
            "ptb-char",
            "Penn Treebank chars, own splits",
            (
                RemoteFile(
                    "ptb.char.train.txt",
                    _PTB,
                    "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
                    10034964,
                    split="train",
                    member="./simple-examples/data/ptb.char.train.txt",
                ),
                RemoteFile(
                    "ptb.char.valid.txt",
                    _PTB,
                    "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
                    786084,
                    split="val",
                    member="./simple-examples/data/ptb.char.valid.txt",
                ),
                RemoteFile(
                    "ptb.char.test.txt",
                    _PTB,
                    "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
                    884846,
                    split="test",
                    member="./simple-examples/data/ptb.char.test.txt",
                ),
            ),
            drop_spaces=True,
        ),
    ]
}


def data_dir() -> Path:
    """The cache folder for built-in corpora: $CHARLM_DATA_DIR, else ./data."""
    return Path(os.environ.get("CHARLM_DATA_DIR") or "data")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_cached(remote: RemoteFile, folder: Path) -> bool:
    path = folder / remote.filename
    return path.is_file() and path.stat().st_size == remote.size and sha256_file(path) == remote.sha256


def fetch(name: str, folder: Path | None = None, progress: Callable | None = None) -> list[Path]:
    """Make every file of built-in `name` present and verified in the cache; return their paths.

    A verified file is never downloaded again. A download goes to a temporary file in the cache
    folder and is renamed into place only after its checksum matches, so a failure leaves nothing.
    `progress(filename, total_bytes)` returns a context manager that gives a callback taking the
    number of bytes just received (the CLI draws a progress bar with it).
    """
    if name not in BUILTINS:
        raise CorpusError(f"unknown built-in corpus {name!r}: choose one of {', '.join(BUILTINS)}")
    folder = folder or data_dir()
    paths = []
    for remote in BUILTINS[name].files:
        path = folder / remote.filename
        if not is_cached(remote, folder):
            _download(remote, folder, progress)
        paths.append(path)
    return paths


def _download(remote: RemoteFile, folder: Path, progress: Callable | None) -> None:
    target = folder / remote.filename
    where = f"put {remote.filename} (sha256 {remote.sha256[:12]}...) in {folder}/ or set CHARLM_DATA_DIR"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=folder)
    except OSError as e:
        raise RunError(f"cannot write to the data folder {folder} ({e.strerror}): {where}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            archive = remote.member is not None and not remote.filename.endswith(".zip")
            with urllib.request.urlopen(remote.url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or (None if archive else remote.size)
                track = progress(remote.filename, total) if progress else contextlib.nullcontext(None)
                raw = tempfile.TemporaryFile() if archive else out
                with track as advance:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        raw.write(block)
                        if advance:
                            advance(len(block))
                if archive:  # the PTB files come inside Mikolov's tarball
                    _extract_member(raw, remote.member, out)
                    raw.close()
            out.flush()
            os.fsync(out.fileno())
        got = sha256_file(Path(tmp))
        if got != remote.sha256:
            raise RunError(f"{remote.filename} from {remote.url} has sha256 {got[:12]}..., expected "
                           f"{remote.sha256[:12]}...: the download is corrupt or changed; {where}")
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise RunError(f"cannot download {remote.filename} from {remote.url} ({reason}): {where}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _extract_member(raw, member: str, out) -> None:
    import tarfile

    raw.seek(0)
    try:
        with tarfile.open(fileobj=raw, mode="r:gz") as tar:
            source = tar.extractfile(member)
            if source is None:
                raise KeyError(member)
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
    except (tarfile.TarError, KeyError, EOFError, OSError) as e:
        raise RunError(f"the downloaded archive has no readable {member} ({type(e).__name__}): "
                       "the server sent something else; fetch it again later") from None


# ---------------------------------------------------------------------------------------------------
# Reading text


@dataclass(frozen=True)
class TextPart:
    """One file of a corpus (or a member of a zip) that belongs to a split."""

    path: Path
    split: str = "all"
    member: str | None = None

    def open(self):
        if self.member is None:
            return open(self.path, "rb")
        try:
            with zipfile.ZipFile(self.path) as archive:
                return io.BytesIO(archive.read(self.member))
        except (zipfile.BadZipFile, KeyError) as e:
            raise CorpusError(f"{self.path} is not a zip holding {self.member} ({e}): "
                              "delete it and fetch again") from None


@dataclass(frozen=True)
class Source:
    """A resolved corpus: its parts in order, and how to normalise them."""

    name: str
    parts: tuple[TextPart, ...]
    drop_spaces: bool = False

    @property
    def has_splits(self) -> bool:
        return any(p.split != "all" for p in self.parts)


def resolve_source(corpus: str, progress: Callable | None = None) -> Source:
    """Turn data.corpus into files: a built-in name (fetched when needed), a file or a folder."""
    if corpus in BUILTINS:
        builtin = BUILTINS[corpus]
        paths = fetch(corpus, progress=progress)
        parts = tuple(TextPart(p, r.split, r.member if r.filename.endswith(".zip") else None)
                      for p, r in zip(paths, builtin.files, strict=True))
        return Source(corpus, parts, builtin.drop_spaces)
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"folder {path} has no .txt files: add UTF-8 .txt files or point data.corpus at a file")
        return Source(str(path), tuple(TextPart(p) for p in files))
    if path.is_file():
        return Source(str(path), (TextPart(path),))
    raise CorpusError(
        f"corpus {corpus!r} is neither a file, a folder nor a built-in ({', '.join(BUILTINS)}): check the path"
    )


def iter_text(parts: tuple[TextPart, ...], newlines: str, drop_spaces: bool) -> Iterator[str]:
    """Yield normalised text chunks of the parts in order, files joined by a newline."""
    table = {}
    if newlines == "space":
        table.update({ord("\n"): " ", ord("\r"): " "})
    if drop_spaces:
        table[ord(" ")] = None
    for i, part in enumerate(parts):
        if i:
            yield "\n".translate(table)
        name = f"{part.path}" + (f":{part.member}" if part.member else "")
        try:
            with part.open() as raw:
                # utf-8-sig strips a BOM; newline="" keeps \r so that newlines=keep means keep
                reader = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
                while chunk := reader.read(CHUNK_CHARS):
                    if "\x00" in chunk:
                        raise CorpusError(f"{name} looks binary (it has NUL bytes): use a UTF-8 text file")
                    yield chunk.translate(table) if table else chunk
        except UnicodeDecodeError as e:
            raise CorpusError(f"{name} is not UTF-8 text (byte 0x{e.object[e.start]:02x}): "
                              "convert it to UTF-8, e.g. iconv -t UTF-8") from None
        except OSError as e:
            raise CorpusError(f"cannot read {name} ({e.strerror or e}): check the file") from None


def _limited(chunks: Iterator[str], max_chars: int | None) -> Iterator[str]:
    left = max_chars
    for chunk in chunks:
        if left is not None:
            chunk = chunk[:left]
            left -= len(chunk)
        if chunk:
            yield chunk
        if left == 0:
            return


# ---------------------------------------------------------------------------------------------------
# Vocabulary and encoding


class Vocab:
    """Characters in sorted code-point order: the same text always gives the same ids."""

    def __init__(self, chars):
        self.chars: list[str] = sorted(set(chars))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def missing(self, text: str) -> list[str]:
        """Characters of `text` that the vocabulary lacks, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:  # for short strings (prefixes); corpora use encode_chunks
        return [self.index[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        return cls(json.loads(text)["chars"])

    def lookup_table(self) -> torch.Tensor:
        """code point -> id (or -1): encodes text with one gather instead of a Python loop."""
        points = torch.tensor([ord(c) for c in self.chars], dtype=torch.int64)
        table = torch.full((int(points.max()) + 1,), -1, dtype=torch.int32)
        table[points] = torch.arange(len(points), dtype=torch.int32)
        return table

    def id_dtype(self) -> torch.dtype:
        return torch.uint8 if len(self) <= 256 else torch.int16 if len(self) <= 32767 else torch.int32


def code_points(chunk: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(chunk.encode("utf-32-le")), dtype=torch.int32)


def scan(chunks: Iterator[str]) -> tuple[set[str], int, str]:
    """First pass: the character set, the length and a sha256 of the normalised text."""
    chars: set[str] = set()
    count = 0
    digest = hashlib.sha256()
    for chunk in chunks:
        chars.update(chunk)
        count += len(chunk)
        digest.update(chunk.encode("utf-8"))
    return chars, count, digest.hexdigest()


def encode_chunks(chunks: Iterator[str], vocab: Vocab, length: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Second pass: fill one tensor of `length` ids (`out`, e.g. a memory-mapped file, or a new one).

    Characters outside the vocab raise CorpusError.
    """
    table = vocab.lookup_table()
    ids = out if out is not None else torch.empty(length, dtype=vocab.id_dtype())
    pos = 0
    for chunk in chunks:
        points = code_points(chunk)
        known = points < len(table)
        encoded = table[points.clamp(max=len(table) - 1)]
        bad = ~known | (encoded < 0)
        if bool(bad.any()):
            missing = vocab.missing(chunk)
            shown = "".join(missing[:20])
            raise CorpusError(f"the text has {len(missing)} characters the vocabulary lacks ({shown!r}): "
                              "score text written with the training corpus's characters")
        ids[pos:pos + len(points)] = encoded.to(ids.dtype)
        pos += len(points)
    return ids


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
    if not path.is_file():
        raise CorpusError(f"file {path} not found: check the path")
    parts = (TextPart(path),)
    drop_spaces = cfg.corpus in BUILTINS and BUILTINS[cfg.corpus].drop_spaces  # score PTB files as trained

    def text():
        return iter_text(parts, cfg.newlines, drop_spaces)

    _, length, _ = scan(text())
    return encode_chunks(text(), vocab, length)


def load_corpus(cfg: DataConfig, progress: Callable | None = None, cache: Path | None = None) -> Corpus:
    """Read, normalise, build the vocabulary, encode and split the corpus named by `cfg`.

    With `cache` (a folder), the encoded text is kept there as integer files and memory-mapped:
    encoded once, then every process that loads it shares the same pages instead of holding a copy.
    """
    source = resolve_source(cfg.corpus, progress)
    groups = _split_groups(source)

    def text(parts):
        return _limited(iter_text(parts, cfg.newlines, source.drop_spaces), cfg.max_chars)

    if cache is not None:
        vocab, encoded, sha256 = load_encoded(source, groups, text, cfg, cache)
    else:
        vocab, lengths, sha256 = _scan_groups(source, groups, text)
        encoded = {split: encode_chunks(text(parts), vocab, lengths[split]) for split, parts in groups.items()}
    if source.has_splits:
        empty = torch.empty(0, dtype=vocab.id_dtype())
        train, val, test = (encoded.get(s, empty) for s in ("train", "val", "test"))
    else:
        train, val, test = split_ids(encoded["all"], cfg.val_fraction, cfg.test_fraction)
    return Corpus(source.name, vocab, train, val, test, sha256)


def _scan_groups(source: Source, groups: dict, text: Callable) -> tuple[Vocab, dict[str, int], str]:
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
    return Vocab(chars), lengths, digest.hexdigest()


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
    return ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]


# ---------------------------------------------------------------------------------------------------
# Encoded cache: the ids of a corpus as integer files, memory-mapped by every process that trains on it

ENCODED_FORMAT = 1


def encoded_cache_dir() -> Path:
    """Where encoded corpora are kept: the folder `encoded` beside the built-in corpora."""
    return data_dir() / "encoded"


def load_encoded(source: Source, groups: dict, text: Callable, cfg: DataConfig,
                 cache: Path) -> tuple[Vocab, dict[str, torch.Tensor], str]:
    """The vocabulary, the ids of each split group (memory-mapped) and the text's sha256.

    The folder is named by a hash of the raw bytes of every file and of the options that change the
    encoding, so an edited file or another normalisation gets a folder of its own, never a stale one.
    """
    folder = Path(cache) / _encoding_key(source, cfg)
    if not (folder / "meta.json").is_file():
        _write_encoded(folder, source, groups, text)
    return _open_encoded(folder)


def _encoding_key(source: Source, cfg: DataConfig) -> str:
    options = {"format": ENCODED_FORMAT, "newlines": cfg.newlines, "max_chars": cfg.max_chars,
               "drop_spaces": source.drop_spaces}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for part in source.parts:
        digest.update(f"{part.split}\0{part.member}\0{sha256_file(part.path)}\0".encode())
    return digest.hexdigest()[:32]


def _write_encoded(folder: Path, source: Source, groups: dict, text: Callable) -> None:
    """Encode straight into files mapped in memory (no copy of the ids in RAM), then publish the folder
    with one rename: a reader sees a whole folder or none, even if several processes race to write it."""
    vocab, lengths, sha256 = _scan_groups(source, groups, text)
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for split, parts in groups.items():
            if lengths[split]:
                path = tmp / f"{split}.ids"
                ids = torch.from_file(str(path), shared=True, size=lengths[split], dtype=vocab.id_dtype())
                encode_chunks(text(parts), vocab, lengths[split], out=ids)
                del ids  # unmap before the fsync
                _fsync(path)
        meta = {"format": ENCODED_FORMAT, "corpus": source.name, "vocab": vocab.chars, "lengths": lengths,
                "sha256": sha256}
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        _fsync(tmp / "meta.json")
        _make_readable(tmp)  # mkdtemp and the mapped files are private (0700/0600): share like any data file
        os.rename(tmp, folder)
        tmp = None
    except OSError as e:
        if not (folder / "meta.json").is_file():  # another process published it first: that copy is as good
            raise RunError(f"cannot write the encoded corpus to {folder.parent} ({e.strerror or e}): free disk "
                           "space or set CHARLM_DATA_DIR to a writable folder") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _open_encoded(folder: Path) -> tuple[Vocab, dict[str, torch.Tensor], str]:
    damaged = f"the encoded corpus in {folder} is damaged: delete that folder and run again"
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        vocab = Vocab(meta["vocab"])
        dtype = vocab.id_dtype()
        encoded = {}
        for split, n in meta["lengths"].items():
            path = folder / f"{split}.ids"
            if n and path.stat().st_size != n * dtype.itemsize:
                raise CorpusError(damaged)
            # shared=False maps the file copy-on-write: the pages come from the page cache, shared by
            # every process on the machine, and nothing can write back to the file
            encoded[split] = (torch.from_file(str(path), shared=False, size=n, dtype=dtype) if n
                              else torch.empty(0, dtype=dtype))
        return vocab, encoded, meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CorpusError(damaged) from None


# ---------------------------------------------------------------------------------------------------
# Batches: X and Y are (batch_size, num_steps) with Y = X shifted by one character


def min_chars(batch_size: int, num_steps: int, sampling: str) -> int:
    """The shortest training split that yields one batch."""
    if sampling == "consecutive":
        return batch_size * (num_steps + 1)
    return batch_size * num_steps + 1


def consecutive_batches(ids: torch.Tensor, batch_size: int, num_steps: int, offset: int = 0,
                        rows: slice = slice(None), lengths: list[int] | None = None):
    """d2l's data_iter_consecutive: `batch_size` parallel streams walked in windows of `num_steps`.

    Window i of stream b continues exactly where window i-1 of stream b ended, so a hidden state
    carried from one batch to the next sees unbroken text. `offset` skips characters at the start
    (a random offset per epoch varies where the windows fall); `lengths` gives each window its own
    length instead (variable BPTT, see bptt_lengths). `rows` keeps some of the streams (a process's
    share of the batch in distributed training); the streams are cut as for all of them.
    """
    ids = ids[offset:]
    stream_len = len(ids) // batch_size
    streams = ids[: batch_size * stream_len].view(batch_size, stream_len)[rows]
    if lengths is None:
        lengths = [num_steps] * ((stream_len - 1) // num_steps)
    start = 0
    for length in lengths:
        yield streams[:, start:start + length], streams[:, start + 1:start + length + 1]
        start += length


def bptt_lengths(stream_len: int, num_steps: int, generator: torch.Generator) -> list[int]:
    """AWD-LSTM's variable BPTT: each window is num_steps long (half that 5% of the time), jittered by
    a normal draw with deviation 5, at least 5 and at most 2 x num_steps, until the streams are used up.

    Varying the lengths moves the window boundaries from epoch to epoch, so every character is trained
    on with varied amounts of context. Drawn once per epoch from `generator`: a resume replays them.
    """
    count = stream_len // 5 + 1  # enough draws for the shortest windows
    base = torch.where(torch.rand(count, generator=generator) < 0.05, num_steps / 2, float(num_steps))
    drawn = (base + 5 * torch.randn(count, generator=generator)).long().clamp(min(5, num_steps), 2 * num_steps)
    ends = drawn.cumsum(0)
    usable = stream_len - 1  # the targets of the last window need one character more
    full = int((ends <= usable).sum())
    lengths = drawn[:full].tolist()
    rest = usable - sum(lengths)
    if rest >= min(5, num_steps):
        lengths.append(rest)
    return lengths


def num_consecutive_batches(n: int, batch_size: int, num_steps: int, offset: int = 0) -> int:
    return max(0, ((n - offset) // batch_size - 1) // num_steps)


def random_batches(ids: torch.Tensor, batch_size: int, num_steps: int, generator: torch.Generator,
                   rows: slice = slice(None)):
    """d2l's data_iter_random: non-overlapping windows in a random order, each batch independent.

    `rows` keeps some of each batch's windows: processes drawing with equal generators take disjoint shares.
    """
    num_windows = (len(ids) - 1) // num_steps
    order = torch.randperm(num_windows, generator=generator)
    steps = torch.arange(num_steps)
    for i in range(num_windows // batch_size):
        starts = order[i * batch_size:(i + 1) * batch_size][rows] * num_steps
        index = starts[:, None] + steps
        yield ids[index], ids[index + 1]


def num_random_batches(n: int, batch_size: int, num_steps: int) -> int:
    return ((n - 1) // num_steps) // batch_size
