"""Reading text: a corpus source resolved into files, read in chunks and normalised, and the first pass.

A source is a built-in name (read from the package when it ships there, else fetched when needed), a
UTF-8 file or a folder of .txt files. Its text is read in chunks of CHUNK_CHARS characters, never whole,
and normalised on the way as `Normalisation` says: the one place that knows how a run's corpus is
normalised, for training and for scoring.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from charlm.config import DataConfig
from charlm.data import documents
from charlm.data.builtins import BUILTINS, fetch, packaged_file, read_packaged, sha256_file
from charlm.errors import CorpusError

CHUNK_CHARS = 1 << 20  # 1M characters per read: a few MB of working memory for any corpus size


@dataclass(frozen=True)
class Normalisation:
    """How a corpus's text is normalised before it is encoded."""

    newlines: str = "keep"  # keep | space: "\n" and "\r" become spaces
    drop_spaces: bool = False  # PTB-char writes "a b c _ d": the spaces only separate symbols
    documents: str = "stream"  # stream | lines | paragraphs | files: documents.py ends each document
    form: str | None = None  # Unicode normal form (NFC, NFKC), or None
    lowercase: bool = False

    @classmethod
    def of(cls, cfg: DataConfig) -> Normalisation:
        """The normalisation of the corpus that `cfg` names: its newlines option, and a built-in's own spacing.

        A file scored with a run's vocabulary is normalised the same way, so a PTB run scores PTB-style
        files without their separating spaces.
        """
        builtin = BUILTINS.get(cfg.corpus)
        form = None if cfg.normalize == "none" else cfg.normalize
        return cls(cfg.newlines, builtin is not None and builtin.drop_spaces, cfg.documents, form, cfg.lowercase)

    @property
    def unicode(self) -> bool:
        """Whether the text goes through documents.clean_unicode."""
        return self.form is not None or self.lowercase

    def table(self) -> dict[int, str | None]:
        """The str.translate table that applies it (empty: the text is kept as it is)."""
        table: dict[int, str | None] = {}
        if self.newlines == "space":
            table.update({ord("\n"): " ", ord("\r"): " "})
        if self.drop_spaces:
            table[ord(" ")] = None
        return table


@dataclass(frozen=True)
class TextPart:
    """One file of a corpus (or a member of a zip) that belongs to a split."""

    path: Path  # for a shipped file, where the package keeps it (named in messages; `content` is read)
    split: str = "all"
    member: str | None = None
    content: bytes | None = field(default=None, repr=False)  # a shipped file's verified bytes

    def open(self):
        raw = io.BytesIO(self.content) if self.content is not None else None
        if self.member is None:
            return raw or open(self.path, "rb")
        try:
            with zipfile.ZipFile(raw or self.path) as archive:
                return io.BytesIO(archive.read(self.member))
        except (zipfile.BadZipFile, KeyError) as e:
            raise CorpusError(
                f"{self.path} is not a zip holding {self.member} ({e}): delete it and fetch again"
            ) from None

    def sha256(self) -> str:
        """The sha256 of the file's bytes (of the whole zip for a member)."""
        if self.content is not None:
            return hashlib.sha256(self.content).hexdigest()
        return sha256_file(self.path)


@dataclass(frozen=True)
class Source:
    """A resolved corpus: its parts in order."""

    name: str
    parts: tuple[TextPart, ...]

    @property
    def has_splits(self) -> bool:
        return any(p.split != "all" for p in self.parts)


def resolve_source(corpus: str, progress: Callable | None = None) -> Source:
    """Turn data.corpus into files: a built-in name (shipped in the package, else fetched when needed), a file
    or a folder. A shipped built-in is always read from the package, even when the cache holds a copy: the
    copy has the same sha256, so the text is the same, and the package needs neither network nor cache."""
    if corpus in BUILTINS:
        builtin = BUILTINS[corpus]
        if builtin.shipped:
            parts = tuple(
                TextPart(Path(str(packaged_file(r))), r.split, _zip_member(r), content=read_packaged(r))
                for r in builtin.files
            )
        else:
            paths = fetch(corpus, progress=progress)
            parts = tuple(TextPart(p, r.split, _zip_member(r)) for p, r in zip(paths, builtin.files, strict=True))
        return Source(corpus, parts)
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise CorpusError(f"folder {path} has no .txt files: add UTF-8 .txt files or point data.corpus at a file")
        return Source(str(path), tuple(TextPart(p) for p in files))
    if path.is_file():
        return Source(str(path), (TextPart(path),))
    if path.exists():
        raise CorpusError(f"corpus {path} is not a regular file or a folder: pass a UTF-8 text file or a folder")
    raise CorpusError(
        f"corpus {corpus!r} is neither a file, a folder nor a built-in ({', '.join(BUILTINS)}): check the path"
    )


def check_source(corpus: str) -> None:
    """Refuse a corpus that names no built-in, file or folder, reading and fetching nothing (a dry run, or a
    launch that would otherwise fail in every process)."""
    if corpus not in BUILTINS:
        resolve_source(corpus)


def _zip_member(remote) -> str | None:
    """The member to read of a file kept as a zip (a tarball's member is extracted on download)."""
    return remote.member if remote.filename.endswith(".zip") else None


def iter_text(parts: tuple[TextPart, ...], normalisation: Normalisation) -> Iterator[str]:
    """Yield normalised text chunks of the parts in order, files joined by a newline (in documents mode, each
    document ended by documents.EOD_MARK)."""
    return _finish(_join(parts, normalisation.table(), normalisation.documents), normalisation)


def normalise_string(text: str, normalisation: Normalisation) -> str:
    """A string normalised as a corpus file holding it would be (in files mode: one document)."""
    chunks = iter([text.translate(normalisation.table())])
    if normalisation.documents == "files":
        chunks = documents.end_file(chunks)
    return "".join(_finish(chunks, normalisation))


def _finish(chunks: Iterator[str], normalisation: Normalisation) -> Iterator[str]:
    """Unicode cleaning, then each document of a lines/paragraphs text ended (documents.py)."""
    if normalisation.unicode:
        chunks = documents.clean_unicode(chunks, normalisation.form, normalisation.lowercase)
    mode = normalisation.documents
    return documents.end_documents(chunks, mode) if mode in documents.SEPARATORS else chunks


def _join(parts: tuple[TextPart, ...], table: dict, mode: str) -> Iterator[str]:
    for i, part in enumerate(parts):
        if mode == "files":
            yield from documents.end_file(_read(part, table))
            continue
        if i:
            yield "\n".translate(table)
        yield from _read(part, table)


def _read(part: TextPart, table: dict) -> Iterator[str]:
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
        raise CorpusError(
            f"{name} is not UTF-8 text (byte 0x{e.object[e.start]:02x}): convert it to UTF-8, e.g. iconv -t UTF-8"
        ) from None
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
