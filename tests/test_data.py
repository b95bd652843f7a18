"""Data: vocabulary, reading and encoding corpora, splits, batch iterators, built-in downloads."""

from __future__ import annotations

import hashlib
import io
import tarfile

import d2l_reference
import pytest
import torch

from charlm import data
from charlm.config import DataConfig
from charlm.data import Builtin, RemoteFile, Vocab
from charlm.errors import CorpusError, RunError

MIXED = "分开 hello\n不分开,\t世界!\r\nabc 😀 jay周杰伦\n\n末尾"


def load(path, **kw) -> data.Corpus:
    kw.setdefault("val_fraction", 0.0)
    return data.load_corpus(DataConfig(corpus=str(path), **kw))


def whole(corpus: data.Corpus) -> torch.Tensor:
    return torch.cat([corpus.train, corpus.val, corpus.test])


# ---------------------------------------------------------------------------------------------------
# Vocab


def test_vocab_is_sorted_unique_and_deterministic():
    v = Vocab("cabbage 分")
    assert v.chars == sorted(set("cabbage 分"))
    assert v.chars == [" ", "a", "b", "c", "e", "g", "分"]
    assert Vocab("gabbace分 ") == v  # order of appearance does not matter
    assert [v.index[c] for c in v.chars] == list(range(len(v)))
    assert v.encode("cab") == [3, 1, 2]
    assert v.decode([3, 1, 2]) == "cab"
    assert Vocab("ab") != Vocab("abc")


def test_vocab_json_round_trip():
    v = Vocab(MIXED)
    text = v.to_json()
    assert "分" in text  # stored as readable text
    back = Vocab.from_json(text)
    assert back == v and back.chars == v.chars and back.index == v.index


def test_vocab_missing_in_first_appearance_order():
    v = Vocab("abc")
    assert v.missing("abc") == []
    assert v.missing("xaybxz") == ["x", "y", "z"]
    assert v.missing("分开分") == ["分", "开"]


@pytest.mark.parametrize(
    ("size", "dtype"),
    [(1, torch.uint8), (256, torch.uint8), (257, torch.int16), (32767, torch.int16), (32768, torch.int32)],
)
def test_id_dtype_by_vocab_size(size, dtype):
    assert Vocab(chr(0x4E00 + i) for i in range(size)).id_dtype() == dtype


@pytest.mark.parametrize("size", [256, 300])
def test_encode_uses_the_narrow_dtype_and_keeps_every_id(write_text, size):
    chars = [chr(0x4E00 + i) for i in range(size)]
    text = "".join(chars) + "".join(reversed(chars))
    corpus = load(write_text(text))
    assert corpus.train.dtype == (torch.uint8 if size <= 256 else torch.int16)
    assert corpus.train.long().tolist() == [corpus.vocab.index[c] for c in text]
    assert int(corpus.train.long().max()) == size - 1


# ---------------------------------------------------------------------------------------------------
# Encoding


def test_encode_chunks_equals_a_plain_python_encoding():
    v = Vocab(MIXED)
    chunks = [MIXED[i:i + 5] for i in range(0, len(MIXED), 5)]
    ids = data.encode_chunks(iter(chunks), v, len(MIXED))
    assert ids.long().tolist() == [v.index[c] for c in MIXED]


@pytest.mark.parametrize("chunk", [1, 2, 7, 1000])
def test_load_corpus_encoding_across_chunk_boundaries(write_text, monkeypatch, chunk):
    monkeypatch.setattr(data, "CHUNK_CHARS", chunk)
    text = MIXED * 3
    corpus = load(write_text(text))
    assert len(corpus.vocab) == len(set(text))
    assert corpus.train.long().tolist() == [corpus.vocab.index[c] for c in text]
    assert corpus.vocab.decode(corpus.train.tolist()) == text


def test_encode_chunks_rejects_unknown_characters():
    v = Vocab("abc")
    with pytest.raises(CorpusError, match="lacks") as info:
        data.encode_chunks(iter(["ab", "a分b"]), v, 5)
    assert "分" in str(info.value)
    with pytest.raises(CorpusError, match="'B'"):  # below the highest known code point, still unknown
        data.encode_chunks(iter(["aBc"]), v, 3)


def test_encode_file_with_an_existing_vocab(write_text):
    v = Vocab("ab \n")
    assert data.encode_file(write_text("ab\nba"), v, DataConfig()).tolist() == v.encode("ab\nba")
    spaced = DataConfig(newlines="space")
    assert data.encode_file(write_text("ab\nba"), v, spaced).tolist() == v.encode("ab ba")
    with pytest.raises(CorpusError, match="'z'"):
        data.encode_file(write_text("abz"), v, DataConfig())


def test_encode_file_applies_the_ptb_spacing_of_a_ptb_run(write_text):
    v = Vocab("ab_\n")
    ptb_line = write_text(" a b _ b a \n")
    assert data.encode_file(ptb_line, v, DataConfig(corpus="ptb-char")).tolist() == v.encode("ab_ba\n")


def test_encode_file_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        data.encode_file(tmp_path / "nope.txt", Vocab("a"), DataConfig())


# ---------------------------------------------------------------------------------------------------
# load_corpus on files and folders


def test_bom_is_stripped(write_text):
    corpus = load(write_text("\ufeffabca"))
    assert "\ufeff" not in corpus.vocab.chars
    assert corpus.vocab.decode(corpus.train.tolist()) == "abca"


def test_newlines_keep_keeps_cr_and_lf(write_text):
    corpus = load(write_text("a\nb\r\nc\rd"))
    assert corpus.vocab.decode(corpus.train.tolist()) == "a\nb\r\nc\rd"


def test_newlines_space_turns_cr_and_lf_into_spaces(write_text):
    corpus = load(write_text("a\nb\r\nc\rd"), newlines="space")
    assert corpus.vocab.decode(corpus.train.tolist()) == "a b  c d"
    assert "\n" not in corpus.vocab.chars and "\r" not in corpus.vocab.chars


def test_max_chars_keeps_the_first_characters(write_text, monkeypatch):
    monkeypatch.setattr(data, "CHUNK_CHARS", 3)
    text = "0123456789abcdef"
    corpus = load(write_text(text), max_chars=10)
    assert corpus.vocab.decode(corpus.train.tolist()) == "0123456789"
    assert corpus.vocab.chars == list("0123456789")  # the vocab is built from the kept text only


def test_contiguous_splits(write_text):
    text = "".join(chr(0x4E00 + i) for i in range(100))
    corpus = load(write_text(text), val_fraction=0.1, test_fraction=0.2)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (70, 10, 20)
    assert corpus.vocab.decode(whole(corpus).tolist()) == text  # train, then val, then test
    assert corpus.split("val") is corpus.val


def test_split_ids_sizes():
    ids = torch.arange(1000)
    train, val, test = data.split_ids(ids, 0.05, 0.0)
    assert (len(train), len(val), len(test)) == (950, 50, 0)
    assert torch.equal(torch.cat([train, val, test]), ids)


def test_sha256_is_of_the_normalised_text(write_text):
    a = load(write_text("ab\ncd", "a.txt"), newlines="space")
    b = load(write_text("ab cd", "b.txt"))
    c = load(write_text("ab cx", "c.txt"))
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256


def test_folder_of_txt_files_is_read_sorted_and_joined(tmp_path, write_text):
    write_text("second", "corpus/b.txt")
    write_text("\ufefffirst", "corpus/a.txt")
    write_text("ignored", "corpus/c.md")
    write_text("third", "corpus/c.txt")
    corpus = load(tmp_path / "corpus")
    assert corpus.vocab.decode(corpus.train.tolist()) == "first\nsecond\nthird"
    spaced = load(tmp_path / "corpus", newlines="space")
    assert spaced.vocab.decode(spaced.train.tolist()) == "first second third"


def test_folder_without_txt_files(tmp_path, write_text):
    write_text("x", "corpus/readme.md")
    with pytest.raises(CorpusError, match="no .txt files"):
        load(tmp_path / "corpus")


def test_empty_file_is_rejected(write_text):
    with pytest.raises(CorpusError, match="empty"):
        load(write_text(""))
    with pytest.raises(CorpusError, match="empty"):
        load(write_text("\ufeff", "bom-only.txt"))


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc\x00\x01\x02def")
    with pytest.raises(CorpusError, match="binary") as info:
        load(path)
    assert str(path) in str(info.value) and "NUL" in str(info.value)


def test_non_utf8_file_is_rejected(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match="not UTF-8") as info:
        load(path)
    assert "0xe9" in str(info.value) and str(path) in str(info.value)


def test_missing_path_is_rejected(tmp_path):
    with pytest.raises(CorpusError, match="neither a file, a folder nor a built-in") as info:
        load(tmp_path / "nope.txt")
    assert "jaychou" in str(info.value)  # lists the built-ins


# ---------------------------------------------------------------------------------------------------
# Batches


CASES = [(100, 4, 5), (101, 3, 7), (3000, 32, 35), (64, 2, 15), (36, 1, 35), (50, 16, 1), (50, 5, 3)]


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), CASES)
def test_consecutive_batches_equal_d2l(n, batch_size, num_steps):
    ids = torch.randperm(n)
    ours = list(data.consecutive_batches(ids, batch_size, num_steps))
    ref = list(d2l_reference.data_iter_consecutive(ids.tolist(), batch_size, num_steps))  # the seed's own code
    assert len(ours) == len(ref) > 0
    for (x, y), (rx, ry) in zip(ours, ref, strict=True):
        assert x.shape == y.shape == (batch_size, num_steps)
        assert torch.equal(x.float(), rx) and torch.equal(y.float(), ry)


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), CASES)
def test_consecutive_windows_continue_each_stream(n, batch_size, num_steps):
    ids = torch.arange(n)
    batches = list(data.consecutive_batches(ids, batch_size, num_steps))
    stream_len = n // batch_size
    for i, (x, y) in enumerate(batches):
        assert torch.equal(y, x + 1)
        for b in range(batch_size):
            assert x[b, 0] == b * stream_len + i * num_steps  # stream b, window i
        if i:
            prev_x, prev_y = batches[i - 1]
            assert torch.equal(x[:, 0], prev_x[:, -1] + 1)  # picks up right after the last window
            assert torch.equal(x[:, 0], prev_y[:, -1])


@pytest.mark.parametrize("offset", [0, 1, 3, 6])
def test_consecutive_offset_shifts_the_start(offset):
    ids = torch.arange(200)
    ours = list(data.consecutive_batches(ids, 4, 7, offset))
    ref = list(d2l_reference.data_iter_consecutive(ids[offset:].tolist(), 4, 7))
    assert len(ours) == len(ref)
    assert all(torch.equal(x.float(), rx) and torch.equal(y.float(), ry)
               for (x, y), (rx, ry) in zip(ours, ref, strict=True))
    assert int(ours[0][0][0, 0]) == offset


def test_num_consecutive_batches_matches_the_iterator():
    checked = 0
    for batch_size, num_steps in [(1, 1), (1, 5), (3, 4), (4, 7), (8, 2)]:
        for offset in (0, 2, 5):
            for n in range(offset + batch_size, 90):
                got = data.num_consecutive_batches(n, batch_size, num_steps, offset)
                expected = len(list(data.consecutive_batches(torch.arange(n), batch_size, num_steps, offset)))
                assert got == expected, (n, batch_size, num_steps, offset)
                checked += expected > 0
    assert checked > 100


def test_num_consecutive_batches_never_negative():
    assert len(list(data.consecutive_batches(torch.arange(3), 4, 2))) == 0
    assert data.num_consecutive_batches(3, 4, 2) == 0


def test_min_chars_is_the_shortest_split_with_one_batch():
    for batch_size, num_steps in [(1, 1), (4, 7), (32, 35)]:
        need = data.min_chars(batch_size, num_steps, "consecutive")
        assert data.num_consecutive_batches(need, batch_size, num_steps) == 1
        assert data.num_consecutive_batches(need - 1, batch_size, num_steps) == 0
        need = data.min_chars(batch_size, num_steps, "random")
        assert data.num_random_batches(need, batch_size, num_steps) == 1
        assert data.num_random_batches(need - 1, batch_size, num_steps) == 0


@pytest.mark.parametrize(("n", "batch_size", "num_steps"), [(100, 4, 5), (101, 3, 7), (1000, 32, 6), (36, 1, 35)])
def test_random_batches_are_disjoint_windows(n, batch_size, num_steps):
    ids = torch.arange(n)
    gen = torch.Generator().manual_seed(0)
    batches = list(data.random_batches(ids, batch_size, num_steps, gen))
    assert len(batches) == data.num_random_batches(n, batch_size, num_steps) > 0
    seen: set[int] = set()
    for x, y in batches:
        assert x.shape == y.shape == (batch_size, num_steps)
        assert torch.equal(y, x + 1)
        assert int(y.max()) < n
        for row in x:
            assert row[0] % num_steps == 0  # d2l: windows start at multiples of num_steps
            assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + num_steps))
            window = set(row.tolist())
            assert not window & seen, "two windows of one epoch overlap"
            seen |= window
    assert len(seen) == len(batches) * batch_size * num_steps


def test_random_batches_cover_every_window_when_they_divide_evenly():
    n, batch_size, num_steps = 4 * 5 * 3 + 1, 4, 5  # 12 windows, 3 batches
    batches = list(data.random_batches(torch.arange(n), batch_size, num_steps, torch.Generator().manual_seed(1)))
    starts = sorted(int(s) for x, _ in batches for s in x[:, 0])
    assert starts == list(range(0, n - 1, num_steps))


def test_random_batches_reproducible_for_a_seed():
    ids = torch.arange(500)

    def epoch(seed):
        return [torch.cat([x, y]) for x, y in data.random_batches(ids, 4, 6, torch.Generator().manual_seed(seed))]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert len(a) == len(b) == len(c)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


# ---------------------------------------------------------------------------------------------------
# Built-in corpora: fetch with a file:// registry entry


def register(monkeypatch, tmp_path, content: bytes, *, sha256: str | None = None, url: str | None = None,
             name: str = "unit-corpus", filename: str = "unit.txt", member: str | None = None,
             size: int | None = None) -> RemoteFile:
    source = tmp_path / "upstream" / filename
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    remote = RemoteFile(filename, url or source.as_uri(), sha256 or hashlib.sha256(content).hexdigest(),
                        len(content) if size is None else size, member=member)
    monkeypatch.setitem(data.BUILTINS, name, Builtin(name, "unit test corpus", (remote,)))
    return remote


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

    paths = data.fetch("unit-corpus", cache, progress=Progress)
    assert paths == [cache / "unit.txt"]
    assert paths[0].read_bytes() == content
    assert sorted(p.name for p in cache.iterdir()) == ["unit.txt"]  # no temp file left
    assert calls[0] == ("unit.txt", len(content))
    assert sum(calls[1:]) == len(content)


def test_fetch_uses_charlm_data_dir_and_load_corpus_reads_it(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abcabc")
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path / "env-cache"))
    corpus = data.load_corpus(DataConfig(corpus="unit-corpus", val_fraction=0.0))
    assert corpus.vocab.decode(corpus.train.tolist()) == "abcabc"
    assert (tmp_path / "env-cache" / "unit.txt").is_file()


def test_fetch_with_a_wrong_checksum_leaves_nothing(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"the real bytes", sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(RunError, match="sha256") as info:
        data.fetch("unit-corpus", cache)
    assert "unit.txt" in str(info.value)
    assert list(cache.iterdir()) == []  # neither the file nor a .part


def test_fetch_replaces_a_corrupt_cached_file(monkeypatch, tmp_path):
    content = b"good content"
    register(monkeypatch, tmp_path, content)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unit.txt").write_bytes(b"bad content!")  # same size, wrong bytes
    data.fetch("unit-corpus", cache)
    assert (cache / "unit.txt").read_bytes() == content


def test_fetch_does_not_touch_the_network_for_a_verified_file(monkeypatch, tmp_path):
    content = b"already here"
    register(monkeypatch, tmp_path, content, url="http://invalid.invalid/never-fetched.txt")

    def no_network(*args, **kwargs):
        raise AssertionError("fetch tried to download a file that was present and verified")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "unit.txt").write_bytes(content)
    assert data.fetch("unit-corpus", cache) == [cache / "unit.txt"]
    assert (cache / "unit.txt").read_bytes() == content


@pytest.mark.parametrize("url", ["file:///nonexistent/charlm/unit.txt", "http://127.0.0.1:9/unit.txt"])
def test_fetch_unreachable_url_names_the_file_and_folder(monkeypatch, tmp_path, url):
    monkeypatch.setenv("no_proxy", "*")  # a proxy from the environment must not answer for 127.0.0.1
    register(monkeypatch, tmp_path, b"x", url=url)
    cache = tmp_path / "cache"
    with pytest.raises(RunError) as info:
        data.fetch("unit-corpus", cache)
    message = str(info.value)
    assert "unit.txt" in message and str(cache) in message and "CHARLM_DATA_DIR" in message
    assert list(cache.iterdir()) == []


def test_fetch_extracts_a_member_of_a_tarball(monkeypatch, tmp_path):
    member_bytes = b"a b c _ d\n"
    register(monkeypatch, tmp_path, tarball("./simple-examples/data/unit.txt", member_bytes), filename="unit.txt",
             sha256=hashlib.sha256(member_bytes).hexdigest(), size=len(member_bytes),
             member="./simple-examples/data/unit.txt")
    cache = tmp_path / "cache"
    data.fetch("unit-corpus", cache)
    assert (cache / "unit.txt").read_bytes() == member_bytes
    assert sorted(p.name for p in cache.iterdir()) == ["unit.txt"]


def tarball(name: str, content: bytes) -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return archive.getvalue()


@pytest.mark.parametrize("upstream", [tarball("./other.txt", b"x"), b"<html>404 Not Found</html>"],
                         ids=["member-missing", "not-a-tarball"])
def test_fetch_bad_archive_is_a_run_error(monkeypatch, tmp_path, upstream):
    register(monkeypatch, tmp_path, upstream, filename="unit.txt", sha256="0" * 64, size=1,
             member="./simple-examples/data/unit.txt")
    cache = tmp_path / "cache"
    with pytest.raises(RunError, match="unit.txt"):
        data.fetch("unit-corpus", cache)
    assert list(cache.iterdir()) == []


def test_fetch_into_an_unusable_folder(monkeypatch, tmp_path):
    register(monkeypatch, tmp_path, b"abc")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(RunError, match="cannot write to the data folder") as info:
        data.fetch("unit-corpus", not_a_folder)
    assert str(not_a_folder) in str(info.value)


def test_fetch_unknown_builtin(tmp_path):
    with pytest.raises(CorpusError, match="unknown built-in"):
        data.fetch("no-such-corpus", tmp_path)


# ---------------------------------------------------------------------------------------------------
# The real corpora (skipped when ../shared/data is absent)


def test_jaychou_like_d2l_has_1027_characters(builtin_cache):
    corpus = data.load_corpus(DataConfig(corpus="jaychou", newlines="space", max_chars=10000, val_fraction=0.0))
    assert len(corpus.vocab) == 1027
    assert len(corpus.train) == 10000 and corpus.train.dtype == torch.int16
    assert "\n" not in corpus.vocab.chars
    assert corpus.vocab.decode(corpus.train[:4].tolist()) == "想要有直"


def test_tinyshakespeare(builtin_cache):
    corpus = data.load_corpus(DataConfig(corpus="tinyshakespeare"))
    assert len(corpus.vocab) == 65
    assert len(whole(corpus)) == 1_115_394
    assert len(corpus.val) == 111_539 and len(corpus.test) == 0
    text = (builtin_cache / "tinyshakespeare.txt").read_text(encoding="utf-8")
    assert corpus.vocab.decode(corpus.train[:200].tolist()) == text[:200]
    assert corpus.vocab.decode(corpus.val[-50:].tolist()) == text[-50:]


def test_ptb_char_has_its_own_splits_without_spaces(builtin_cache):
    corpus = data.load_corpus(DataConfig(corpus="ptb-char", val_fraction=0.3, test_fraction=0.3))
    assert " " not in corpus.vocab.chars
    assert "_" in corpus.vocab.chars and "\n" in corpus.vocab.chars
    assert len(corpus.vocab) == 50  # the literature's 50 symbols: 48 characters, "_" and the end of line
    # the fractions are ignored: each split is its own file, with the spaces dropped
    for split, filename in [("train", "ptb.char.train.txt"), ("val", "ptb.char.valid.txt"),
                            ("test", "ptb.char.test.txt")]:
        text = (builtin_cache / filename).read_text(encoding="utf-8").replace(" ", "")
        ids = corpus.split(split)
        assert len(ids) == len(text), split
        assert corpus.vocab.decode(ids[:300].tolist()) == text[:300]
