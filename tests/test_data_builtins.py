"""charlm.data.builtins: the corpora shipped in the package (read offline, verified), and fetch with a
file:// registry entry."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from charlm.config import DataConfig
from charlm.data import builtins as data_builtins
from charlm.data import load_corpus
from charlm.data.builtins import Builtin, RemoteFile
from charlm.errors import CorpusError, RunError
from charlm.files import fsio

REPO = Path(__file__).resolve().parents[1]
CORPORA = REPO / "charlm" / "data" / "corpora"
SHIPPED = ["jaychou", "timemachine", "tinyshakespeare"]


def register(
    monkeypatch,
    tmp_path,
    content: bytes,
    *,
    sha256: str | None = None,
    url: str | None = None,
    name: str = "unit-corpus",
    filename: str = "unit.txt",
    member: str | None = None,
    size: int | None = None,
) -> RemoteFile:
    source = tmp_path / "upstream" / filename
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    remote = RemoteFile(
        filename,
        url or source.as_uri(),
        sha256 or hashlib.sha256(content).hexdigest(),
        len(content) if size is None else size,
        member=member,
    )
    monkeypatch.setitem(data_builtins.BUILTINS, name, Builtin(name, "unit test corpus", (remote,)))
    return remote


# ---------------------------------------------------------------------------------------------------
# The shipped corpora: read from the package, offline, verified


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No CHARLM_DATA_DIR, an empty HOME, and a network that fails the test if anything tries to use it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("CHARLM_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    tried = []

    def no_network(url, *args, **kwargs):
        tried.append(url)
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(data_builtins.urllib.request, "urlopen", no_network)
    yield home
    assert tried == []


def shipped_text(name: str) -> str:
    """The text of a shipped corpus straight from the package file, as its format says to read it."""
    (remote,) = data_builtins.BUILTINS[name].files
    raw = (CORPORA / remote.packaged).read_bytes()
    if remote.member:
        raw = zipfile.ZipFile(io.BytesIO(raw)).read(remote.member)
    elif remote.packaged.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8-sig")  # what text.iter_text reads: a BOM is not text


@pytest.mark.parametrize(
    "name, chars", [("jaychou", 63_282), ("timemachine", 178_979), ("tinyshakespeare", 1_115_394)]
)  # the sizes data/README.md states
def test_a_shipped_corpus_loads_offline_from_the_package(offline, name, chars):
    corpus = load_corpus(DataConfig(corpus=name, val_fraction=0.0))
    assert len(corpus.train) == chars
    assert corpus.vocab.decode(corpus.train.tolist()) == shipped_text(name)
    assert list(offline.rglob("*")) == []  # nothing downloaded or copied into the per-user cache


def test_only_the_freely_shippable_corpora_ship_and_every_packaged_file_is_one_of_theirs():
    assert sorted(b.name for b in data_builtins.BUILTINS.values() if b.shipped) == SHIPPED
    assert not data_builtins.BUILTINS["ptb-char"].shipped  # research-only licence: a download only
    packaged = {r.packaged for name in SHIPPED for r in data_builtins.BUILTINS[name].files}
    assert packaged == {p.name for p in CORPORA.iterdir()}


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_copies_are_the_upstream_files(shared_data, name):
    for remote in data_builtins.BUILTINS[name].files:
        assert data_builtins.read_packaged(remote) == (shared_data / remote.filename).read_bytes()


def test_a_shipped_corpus_is_read_from_the_package_not_the_cache(offline, monkeypatch, tmp_path):
    """Package first: a copy in CHARLM_DATA_DIR (here a stale one) is neither read nor replaced."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "timemachine.txt").write_bytes(b"a stale copy")
    monkeypatch.setenv("CHARLM_DATA_DIR", str(cache))
    corpus = load_corpus(DataConfig(corpus="timemachine", val_fraction=0.0))
    assert corpus.vocab.decode(corpus.train.tolist()) == shipped_text("timemachine")
    assert [p.name for p in cache.iterdir()] == ["timemachine.txt"]
    assert (cache / "timemachine.txt").read_bytes() == b"a stale copy"


def damaged_copy(folder: Path, name: str, damage: str) -> Path:
    """A copy of the package's corpora folder with the file of built-in `name` damaged as `damage` says."""
    shutil.copytree(CORPORA, folder)
    (remote,) = data_builtins.BUILTINS[name].files
    path = folder / remote.packaged
    raw = path.read_bytes()
    if damage == "edited text":
        path.write_bytes(gzip.compress(gzip.decompress(raw).replace(b"Time", b"Tide", 1)))
    elif damage == "flipped byte":
        path.write_bytes(raw[:1000] + bytes([raw[1000] ^ 1]) + raw[1001:])
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:
        path.unlink()
    return folder


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("timemachine", "edited text", "has sha256 .*, expected 8424dbd9532a...: the installation is damaged"),
        ("jaychou", "flipped byte", "has sha256 .*, expected 3cfedd7d1741...: the installation is damaged"),
        ("tinyshakespeare", "truncated", "cannot be read"),
        ("tinyshakespeare", "missing", "cannot be read"),
    ],
)
def test_a_damaged_packaged_file_is_a_clear_error(offline, monkeypatch, tmp_path, name, damage, message):
    folder = damaged_copy(tmp_path / "corpora", name, damage)
    monkeypatch.setattr(data_builtins, "packaged_file", lambda remote: folder / remote.packaged)
    with pytest.raises(RunError, match=message) as info:
        load_corpus(DataConfig(corpus=name))
    assert "reinstall charlm" in str(info.value) and "\n" not in str(info.value)


def test_a_wheel_and_an_sdist_carry_the_shipped_corpora(tmp_path):
    """Built by setuptools from a copy of the sources: pyproject's package-data must name the files."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:  # pyproject's build-system floor
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build needs (68)")
    src, out = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(REPO / "charlm", src / "charlm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    for kind in ("wheel", "sdist"):  # one process per hook, as build frontends (pip, build) call them
        build = f"import sys; from setuptools import build_meta; build_meta.build_{kind}(sys.argv[1])"
        result = subprocess.run(
            [sys.executable, "-c", build, str(out)], cwd=src, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as built, tarfile.open(sdist) as source:
        top = source.getnames()[0].split("/")[0]
        for path in CORPORA.iterdir():
            assert built.read(f"charlm/data/corpora/{path.name}") == path.read_bytes()
            assert source.extractfile(f"{top}/charlm/data/corpora/{path.name}").read() == path.read_bytes()


# ---------------------------------------------------------------------------------------------------
# The download of the others (PTB-char), into the cache


def test_fetch_downloads_and_verifies(monkeypatch, tmp_path):
    content = "分开\nhello\n".encode()
    register(monkeypatch, tmp_path, content)
    cache = tmp_path / "cache"
    calls = []

    class Progress:
        def __init__(self, filename, total):
            calls.append((filename, total))
            self.received = 0

        def __enter__(self):
            def advance(n):
                self.received += n
                calls.append(n)

            return advance

        def __exit__(self, *exc):
            return False

    paths = data_builtins.fetch("unit-corpus", cache, progress=Progress)
    assert paths == [cache / "unit.txt"]
    assert paths[0].read_bytes() == content
    assert sorted(p.name for p in cache.iterdir()) == ["unit.txt"]  # no temp file left
    assert calls[0] == ("unit.txt", len(content))
    assert sum(calls[1:]) == len(content)


def test_fetch_uses_charlm_data_dir_and_load_corpus_reads_it(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abcabc")
    (tmp_path / "env-cache").mkdir()  # CHARLM_DATA_DIR must name an existing folder
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path / "env-cache"))
    corpus = load_corpus(DataConfig(corpus="unit-corpus", val_fraction=0.0))
    assert corpus.vocab.decode(corpus.train.tolist()) == "abcabc"
    assert (tmp_path / "env-cache" / "unit.txt").is_file()


def test_fetch_with_a_wrong_checksum_leaves_nothing(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"the real bytes", sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(RunError, match="sha256") as info:
        data_builtins.fetch("unit-corpus", cache)
    assert "unit.txt" in str(info.value)
    assert list(cache.iterdir()) == []  # neither the file nor a .part


def test_fetch_replaces_a_corrupt_cached_file(monkeypatch, tmp_path):
    content = b"good content"
    register(monkeypatch, tmp_path, content)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unit.txt").write_bytes(b"bad content!")  # same size, wrong bytes
    data_builtins.fetch("unit-corpus", cache)
    assert (cache / "unit.txt").read_bytes() == content


def test_fetch_does_not_touch_the_network_for_a_verified_file(monkeypatch, tmp_path):
    content = b"already here"
    register(monkeypatch, tmp_path, content, url="http://invalid.invalid/never-fetched.txt")

    def no_network(*args, **kwargs):
        raise AssertionError("fetch tried to download a file that was present and verified")

    monkeypatch.setattr(data_builtins.urllib.request, "urlopen", no_network)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unit.txt").write_bytes(content)
    assert data_builtins.fetch("unit-corpus", cache) == [cache / "unit.txt"]
    assert (cache / "unit.txt").read_bytes() == content


@pytest.mark.parametrize("url", ["file:///nonexistent/charlm/unit.txt", "http://127.0.0.1:9/unit.txt"])
def test_fetch_unreachable_url_names_the_file_and_folder(monkeypatch, tmp_path, url):
    monkeypatch.setenv("no_proxy", "*")  # a proxy from the environment must not answer for 127.0.0.1
    register(monkeypatch, tmp_path, b"x", url=url)
    cache = tmp_path / "cache"
    with pytest.raises(RunError) as info:
        data_builtins.fetch("unit-corpus", cache)
    message = str(info.value)
    assert "unit.txt" in message and str(cache) in message and "CHARLM_DATA_DIR" in message
    assert list(cache.iterdir()) == []


def test_fetch_extracts_a_member_of_a_tarball(monkeypatch, tmp_path):
    member_bytes = b"a b c _ d\n"
    register(
        monkeypatch,
        tmp_path,
        tarball("./simple-examples/data/unit.txt", member_bytes),
        filename="unit.txt",
        sha256=hashlib.sha256(member_bytes).hexdigest(),
        size=len(member_bytes),
        member="./simple-examples/data/unit.txt",
    )
    cache = tmp_path / "cache"
    data_builtins.fetch("unit-corpus", cache)
    assert (cache / "unit.txt").read_bytes() == member_bytes
    assert sorted(p.name for p in cache.iterdir()) == ["unit.txt"]


def tarball(name: str, content: bytes) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return archive.getvalue()


@pytest.mark.parametrize(
    "upstream", [tarball("./other.txt", b"x"), b"<html>404 Not Found</html>"], ids=["member-missing", "not-a-tarball"]
)
def test_fetch_bad_archive_is_a_run_error(monkeypatch, tmp_path, upstream):
    register(
        monkeypatch,
        tmp_path,
        upstream,
        filename="unit.txt",
        sha256="0" * 64,
        size=1,
        member="./simple-examples/data/unit.txt",
    )
    cache = tmp_path / "cache"
    with pytest.raises(RunError, match="unit.txt"):
        data_builtins.fetch("unit-corpus", cache)
    assert list(cache.iterdir()) == []


def test_fetch_into_an_unusable_folder(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abc")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(RunError, match="cannot write to the data folder") as info:
        data_builtins.fetch("unit-corpus", not_a_folder)
    assert str(not_a_folder) in str(info.value)


def test_fetch_unknown_builtin(tmp_path):
    with pytest.raises(CorpusError, match="unknown built-in"):
        data_builtins.fetch("no-such-corpus", tmp_path)


# ---------------------------------------------------------------------------------------------------
# Publishing through fsio.atomic_write: nothing but a whole, verified file ever appears


def test_fetch_with_a_wrong_checksum_keeps_the_previous_file_and_no_temp_file(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"the real bytes", sha256="0" * 64)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unit.txt").write_bytes(b"an old, stale copy")
    with pytest.raises(RunError, match="sha256 .* expected 000000000000"):
        data_builtins.fetch("unit-corpus", cache)
    assert sorted(p.name for p in cache.iterdir()) == ["unit.txt"]  # no temp file beside it
    assert (cache / "unit.txt").read_bytes() == b"an old, stale copy"


def test_fetch_publishes_a_file_readable_like_any_other(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abc")
    cache = tmp_path / "cache"
    (path,) = data_builtins.fetch("unit-corpus", cache)
    umask = fsio.current_umask()
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_fetch_into_a_folder_that_refuses_new_files(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abc")
    cache = tmp_path / "cache"
    cache.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsio.tempfile, "mkstemp", refuse)
    with pytest.raises(RunError) as info:
        data_builtins.fetch("unit-corpus", cache)
    assert str(info.value) == (
        f"cannot write to the data folder {cache} (Permission denied): put unit.txt "
        f"(sha256 {hashlib.sha256(b'abc').hexdigest()[:12]}...) in {cache}/ or set "
        "CHARLM_DATA_DIR"
    )
    assert list(cache.iterdir()) == []


def test_fetch_that_fails_to_publish_is_a_download_error(monkeypatch, tmp_path):
    remote = register(monkeypatch, tmp_path, b"abc")
    cache = tmp_path / "cache"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsio.os, "replace", full)
    with pytest.raises(RunError) as info:
        data_builtins.fetch("unit-corpus", cache)
    assert str(info.value).startswith(
        f"cannot download unit.txt from {remote.url} (No space left on device): "
        f"put unit.txt (sha256 {remote.sha256[:12]}...) in {cache}/"
    )
    assert list(cache.iterdir()) == []


def test_fetch_interrupted_mid_download_leaves_nothing(monkeypatch, tmp_path):
    remote = register(monkeypatch, tmp_path, b"x" * 100_000, url="http://example.invalid/unit.txt")

    class Response:
        headers = {"Content-Length": "100000"}
        sent = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            if self.sent:
                raise TimeoutError("timed out")
            self.sent += n
            return b"x" * n

    monkeypatch.setattr(data_builtins.urllib.request, "urlopen", lambda url, timeout: Response())
    cache = tmp_path / "cache"
    with pytest.raises(RunError) as info:
        data_builtins.fetch("unit-corpus", cache)
    assert str(info.value).startswith(f"cannot download unit.txt from {remote.url} (timed out): put unit.txt")
    assert list(cache.iterdir()) == []
