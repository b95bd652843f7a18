"""Built-in corpora: where each file comes from, its checksum, the shipped copies and the verified download.

A built-in corpus is a list of remote files (a text file, a member of a zip kept whole in the cache, or a
member of a tarball extracted on download). The lyrics, The Time Machine and tiny shakespeare ship inside
the package (charlm/data/corpora, read with `read_packaged`, verified against the same sha256 as the
download), so they work offline and never touch the network. The others (PTB-char, whose licence is
research-only) are downloaded: `fetch` makes them present and verified in the cache folder
($CHARLM_DATA_DIR, else the per-user cache); a download is published through fsio.atomic_write only once
its checksum matches, so a failure never leaves a file, a half file or a temp file behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charlm.errors import CorpusError, RunError
from charlm.files.fsio import atomic_write


@dataclass(frozen=True)
class RemoteFile:
    filename: str  # the name in the cache folder (the names used in ../shared/data)
    url: str
    sha256: str
    size: int
    split: str = "all"  # all | train | val | test
    member: str | None = None  # the text file inside a zip archive
    # its copy in the package (charlm/data/corpora): the same bytes, or gzipped (.gz: zlib is in every Python,
    # lzma is optional in some builds; xz would save 76 KB of 0.56 MB); None: download only
    packaged: str | None = None


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    files: tuple[RemoteFile, ...]
    drop_spaces: bool = False  # PTB-char writes "a b c _ d": the spaces only separate symbols

    @property
    def shipped(self) -> bool:
        """Whether every file ships inside the package: read from there, never downloaded."""
        return all(r.packaged for r in self.files)


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
                    packaged="jaychou_lyrics.txt.zip",  # d2l-zh's zip, byte for byte
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
                    packaged="tinyshakespeare.txt.gz",
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
                    packaged="timemachine.txt.gz",
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


def packaged_file(remote: RemoteFile):
    """Where the package keeps the shipped copy of `remote` (an importlib.resources Traversable)."""
    if remote.packaged is None:
        raise ValueError(f"{remote.filename} does not ship with charlm")
    return importlib.resources.files("charlm.data").joinpath("corpora", remote.packaged)


def read_packaged(remote: RemoteFile) -> bytes:
    """The shipped copy of `remote`, as the download would give it (a .gz decompressed), verified against the
    download's sha256: a damaged installation is a clear error, never a silently different corpus."""
    resource = packaged_file(remote)
    fix = "reinstall charlm (pip install --force-reinstall charlm, or make install in a checkout)"
    try:
        data = resource.read_bytes()
        if remote.packaged.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise RunError(f"the packaged corpus file {resource} cannot be read ({e}): {fix}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != remote.sha256:
        raise RunError(
            f"the packaged corpus file {resource} has sha256 {got[:12]}..., expected "
            f"{remote.sha256[:12]}...: the installation is damaged; {fix}"
        )
    return data


def data_dir() -> Path:
    """The cache folder for built-in corpora: $CHARLM_DATA_DIR, which must exist (a typo should not silently
    download into a new folder); else one per user as torch hub, Hugging Face and pooch keep theirs:
    $XDG_CACHE_HOME/charlm, by default ~/.cache/charlm (made when first needed)."""
    chosen = os.environ.get("CHARLM_DATA_DIR")
    if not chosen:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlm"
    if not Path(chosen).is_dir():
        raise CorpusError(
            f"CHARLM_DATA_DIR={chosen[:200]} is not a folder: create it, or unset CHARLM_DATA_DIR to "
            "use the per-user cache"
        )
    return Path(chosen)


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
    """Download `remote` into `folder` through fsio.atomic_write: published only when its checksum matches.

    `stage` tells where an OSError that atomic_write turned into its RunError came from, so that the
    message stays the one the user can act on: before the write, the folder is not writable; after it
    (fsync, rename), the download failed. The RunErrors of the write itself pass through as they are.
    """
    where = f"put {remote.filename} (sha256 {remote.sha256[:12]}...) in {folder}/ or set CHARLM_DATA_DIR"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot write to the data folder {folder} ({e.strerror}): {where}") from None
    stage = "open"

    def write(out: BinaryIO) -> None:
        nonlocal stage
        stage = "write"
        _stream(remote, out, progress, where)
        stage = "publish"

    try:
        atomic_write(folder / remote.filename, write)
    except RunError as e:
        failure = e.__context__  # the OSError atomic_write caught: `from None` hides it but keeps it here
        if stage == "write" or not isinstance(failure, OSError):
            raise
        if stage == "open":
            raise RunError(f"cannot write to the data folder {folder} ({failure.strerror}): {where}") from None
        raise _download_error(remote, failure, where) from None


def _download_error(remote: RemoteFile, e: BaseException, where: str) -> RunError:
    reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
    return RunError(f"cannot download {remote.filename} from {remote.url} ({reason}): {where}")


class _Hashing:
    """A file that hashes what is written to it: the checksum is known when the last byte is written."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.digest = hashlib.sha256()

    def write(self, block: bytes) -> None:
        self.digest.update(block)
        self.out.write(block)


def _stream(remote: RemoteFile, out: BinaryIO, progress: Callable | None, where: str) -> None:
    """Write the file's bytes into `out`, hashing them; a RunError (so nothing is published) on a network
    or disk error, or when the checksum does not match."""
    hashing = _Hashing(out)
    archive = remote.member is not None and not remote.filename.endswith(".zip")
    try:
        with urllib.request.urlopen(remote.url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or (None if archive else remote.size)
            track = progress(remote.filename, total) if progress else contextlib.nullcontext(None)
            with tempfile.TemporaryFile() if archive else contextlib.nullcontext(hashing) as raw:
                with track as advance:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        raw.write(block)
                        if advance:
                            advance(len(block))
                if archive:  # the PTB files come inside Mikolov's tarball
                    _extract_member(raw, remote.member, hashing)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise _download_error(remote, e, where) from None
    got = hashing.digest.hexdigest()
    if got != remote.sha256:
        raise RunError(
            f"{remote.filename} from {remote.url} has sha256 {got[:12]}..., expected "
            f"{remote.sha256[:12]}...: the download is corrupt or changed; {where}"
        )


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
        raise RunError(
            f"the downloaded archive has no readable {member} ({type(e).__name__}): "
            "the server sent something else; fetch it again later"
        ) from None
