"""novelty_index: the training split's suffix array built once, kept in the run folder (or the user cache for a
model folder), rebuilt when stale or tampered with; and the commands and API that use it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import LINES, lines_run, make_unreadable

from charlm.analysis import novelty_index as ni
from charlm.cli.main import main
from charlm.data import load_corpus
from charlm.errors import CorpusError, RunError, UsageError
from charlm.files.readback import BadFile
from charlm.store.layout import NOVELTY_INDEX
from charlm.store.model_dir import load_checkpoint

pytest.importorskip("pydivsufsort")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder (an untrained model: the index depends on the corpus, not on the weights)."""
    return lines_run(tmp_path / "run", lines=400, settings=["data.val_fraction=0.1"])


def load(run: Path, said: list | None = None):
    return ni.load_index(run, load_checkpoint(run), say=(said if said is not None else []).append)


def suffixes_sorted(index) -> bool:
    text = index.text.tolist()
    return all(text[a:] < text[b:] for a, b in zip(index.sa[:-1].tolist(), index.sa[1:].tolist(), strict=True))


def test_the_index_is_the_training_splits_suffix_array_kept_and_read_back(run):
    said: list[str] = []
    index = load(run, said)
    saved = load_checkpoint(run)
    train = load_corpus(saved.config.data).train
    assert index.text.tolist() == train.tolist() and len(index.sa) == len(train)
    assert suffixes_sorted(index)
    assert index.newline == saved.vocab.index("\n")
    assert len(said) == 1 and said[0].startswith("novelty index built from") and str(run / NOVELTY_INDEX) in said[0]
    before = (run / NOVELTY_INDEX).stat()
    said.clear()
    again = load(run, said)
    assert said == [] and (run / NOVELTY_INDEX).stat().st_mtime_ns == before.st_mtime_ns  # read, not rebuilt
    assert np.array_equal(again.sa, index.sa) and np.array_equal(again.text, index.text)


def sparse(path: Path, index, key: str) -> None:
    path.unlink()
    with open(path, "wb") as f:
        f.truncate(20 * 1024**3)  # reading it would take 20 GB


def claiming(path: Path, index, key: str) -> None:
    """A header as charlm writes it (format, key), claiming a text and suffix array of 2e10 characters, in a
    sparse file of the size it claims: only the memory it would take can refuse it."""
    n = 2 * 10**10
    header = {
        "__metadata__": {"format": ni.FORMAT, "version": ni.VERSION, "key": key, "sha256": "0" * 64},
        "text": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]},
        "sa": {"dtype": "I64", "shape": [n], "data_offsets": [n, 9 * n]},
    }
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + 9 * n)


def arrays(**changed):
    def write(path: Path, index, key: str) -> None:
        from safetensors.numpy import save

        made = {"text": index.text, "sa": index.sa, **changed}
        meta = {"format": ni.FORMAT, "version": ni.VERSION, "key": key, "sha256": ni._checksum(made)}
        path.write_bytes(save({k: np.ascontiguousarray(v) for k, v in made.items()}, metadata=meta))

    return write


def appended(path: Path, index, key: str) -> None:
    path.write_bytes(path.read_bytes() + b"\0" * 100)


INDEX_HEADERS = {  # a damage -> what writes it over the good index
    "sparse 20 GB": sparse,
    "a header claiming 20 GB": claiming,
    "a text of another id type": lambda p, i, k: arrays(text=i.text.astype(np.uint32))(p, i, k),
    "a suffix array of floats": lambda p, i, k: arrays(sa=i.sa.astype(np.float32))(p, i, k),
    "arrays of two lengths": lambda p, i, k: arrays(sa=i.sa[:-1])(p, i, k),
    "an empty text": lambda p, i, k: arrays(text=i.text[:0])(p, i, k),
    "a third array": lambda p, i, k: arrays(extra=np.zeros(3, np.uint8))(p, i, k),
    "bytes appended": appended,
}


def rewrite(path: Path, index, key: str, **arrays) -> None:
    from charlm.analysis.novelty import SuffixIndex

    changed = SuffixIndex(arrays.get("text", index.text), arrays.get("sa", index.sa), index.newline)
    path.write_bytes(ni.to_bytes(changed, key))


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("another key", "the index of another corpus, data settings or vocabulary"),
        ("position out of range", "a value out of range"),
        ("id out of range", "a value out of range"),
        ("a flipped byte", "its arrays do not match their checksum"),
        ("truncated", "not a safetensors file"),
        ("not charlm's", "not charlm's novelty index of this version"),
        ("a folder", "not a regular file"),
        ("sparse 20 GB", "not a safetensors file"),
        ("a header claiming 20 GB", "do not fit in the memory available"),
        ("a text of another id type", "not a text of this vocabulary"),
        ("a suffix array of floats", "not a text and its suffix array"),
        ("arrays of two lengths", "differ in length"),
        ("an empty text", "differ in length"),
        ("a third array", "not a text of this vocabulary"),
        ("bytes appended", "bytes, where its header describes"),
        ("a FIFO", "not a regular file (a FIFO)"),
        ("a link to /dev/zero", "not a regular file (a device)"),
    ],
)
def test_a_stale_or_tampered_index_is_rebuilt_never_used(run, damage, reason):
    index = load(run)
    path = run / NOVELTY_INDEX
    key = ni.index_key(load_checkpoint(run))
    if damage == "another key":
        rewrite(path, index, "0" * 64)
    elif damage == "position out of range":  # a consistent checksum: only the range check can catch it
        rewrite(path, index, key, sa=np.where(index.sa == 0, len(index.sa), index.sa).astype(index.sa.dtype))
    elif damage == "id out of range":
        rewrite(path, index, key, text=np.where(index.text == 0, 200, index.text).astype(index.text.dtype))
    elif damage == "a flipped byte":
        data = bytearray(path.read_bytes())
        data[-3] ^= 1
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "not charlm's":
        from safetensors.numpy import save

        path.write_bytes(save({"text": index.text, "sa": index.sa}, metadata={"format": "other"}))
    elif damage in INDEX_HEADERS:
        INDEX_HEADERS[damage](path, index, key)
    else:
        path.unlink()
        make_unreadable(path, {"a folder": "folder", "a FIFO": "fifo", "a link to /dev/zero": "dev-zero"}[damage])
    with pytest.raises(BadFile, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ni.read_index(path, key=key, vocab_size=len(load_checkpoint(run).vocab), newline=index.newline)
    if damage in ("a folder", "a FIFO", "a link to /dev/zero"):  # load() meets them as it would any bad file
        path.rmdir() if path.is_dir() else path.unlink()
        return
    said: list[str] = []
    rebuilt = load(run, said)
    assert said and said[0].startswith("novelty index rebuilt") and reason.split(" (")[0] in said[0]
    assert np.array_equal(rebuilt.sa, index.sa) and suffixes_sorted(rebuilt)
    ni.read_index(path, key=key, vocab_size=200, newline=None)  # the file was replaced by a good one


def test_a_model_folder_keeps_its_index_in_the_user_cache(run, tmp_path, monkeypatch):
    from charlm.export.model_folder import export_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = export_model(run, tmp_path / "model")
    said: list[str] = []
    index = ni.load_index(model, load_checkpoint(model), say=said.append)
    kept = tmp_path / "cache" / "charlm" / "novelty" / f"{ni.index_key(load_checkpoint(model))}.safetensors"
    assert kept.is_file() and str(kept) in said[0]
    exported = [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert sorted(p.name for p in model.iterdir()) == exported  # nothing written into the folder
    assert np.array_equal(index.sa, load(run).sa)  # the same split as the run's


def test_a_folder_that_cannot_be_written_builds_in_memory(run, monkeypatch):
    def refuse(path, data):
        raise RunError(f"cannot write {path}: read-only file system")

    monkeypatch.setattr(ni.fsio, "atomic_write_bytes", refuse)  # the fault, from the test side
    said: list[str] = []
    index = load(run, said)
    assert suffixes_sorted(index) and "not kept (cannot write" in said[0]
    assert not (run / NOVELTY_INDEX).exists()


def test_a_changed_corpus_is_refused_unless_its_index_was_kept(run, tmp_path):
    corpus = tmp_path / "corpus.txt"
    original = corpus.read_text(encoding="utf-8")
    corpus.write_text(original.replace("cat", "cow"), encoding="utf-8")
    with pytest.raises(CorpusError, match="changed since this run was trained"):
        load(run)
    corpus.write_text(original, encoding="utf-8")
    load(run)
    corpus.write_text(original.replace("cat", "cow"), encoding="utf-8")
    assert suffixes_sorted(load(run))  # the kept index is of the split the run was trained on


def test_without_the_extra_the_error_says_what_to_install(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydivsufsort", None)  # import pydivsufsort now fails
    with pytest.raises(UsageError, match=r"pip install 'charlm\[novelty\]'"):
        load(run)


# --- the commands and the API ---------------------------------------------------------------------------------


def train_text(run: Path) -> str:
    saved = load_checkpoint(run)
    return "".join(saved.vocab[i] for i in load_corpus(saved.config.data).train.tolist())


def test_generate_json_has_a_novelty_object_per_sample_as_the_api_gives(run, capsys):
    import charlm

    capsys.readouterr()
    argv = ["generate", "--run-dir", str(run), "-n", "80", "--seed", "3", "--num-samples", "3", "--json"]
    assert main([*argv, "--prefix", "the ", "--novelty"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    model, train = charlm.load(run), train_text(run)
    for record in records:
        written = record["text"][len(record["prefix"]) :]  # the report is on what the model wrote
        assert record["novelty"] == model.novelty(written)
        longest = record["novelty"]["longest"]
        assert longest["text"] == written[longest["start"] : longest["start"] + longest["length"]]
        assert train[longest["train_offset"] :].startswith(longest["text"])
        assert longest["train_line"] == train[: longest["train_offset"]].count("\n") + 1
        assert longest["text"] + written[longest["start"] + longest["length"]] not in train  # the longest
    assert main(argv) == 0
    assert all("novelty" not in json.loads(line) for line in capsys.readouterr().out.splitlines())  # not asked


def test_generate_prints_the_report_after_each_sample(run, capsys):
    capsys.readouterr()
    assert main(["generate", "--run-dir", str(run), "-n", "40", "--seed", "1", "--novelty"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[-2].startswith("novelty: ") and "substrings found in training: 8 chars" in lines[-1]
    assert "novelty index built" in out.err  # the first use builds it, and says so on stderr
    assert main(["generate", "--run-dir", str(run), "-n", "40", "--num-samples", "2", "--novelty"]) == 0
    out = capsys.readouterr()
    assert out.out.count("novelty: ") == 2 and out.out.count("--- sample") == 2 and out.err == ""


def test_perplexity_marks_copied_spans(run, capsys):
    copied = LINES[1] + "\n" + LINES[2]  # two training lines, which never follow an "o" or precede a "g"
    text = "o" + copied + "gg"
    capsys.readouterr()
    argv = ["perplexity", "--run-dir", str(run), "--device", "cpu", "--text", text]
    assert main([*argv, "--json", "--breakdown"]) == 0
    assert "novelty" not in json.loads(capsys.readouterr().out)
    assert main([*argv, "--novelty", "--json", "--html", str(run.parent / "p.html")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["novelty"] == {"min_span": 16, "spans": [[1, 1 + len(copied)]]}
    assert main([*argv, "--novelty", "--show", "--novelty-min-span", "100"]) == 0
    assert "(0 spans, 0.0% of the text shown)" in " ".join(capsys.readouterr().out.split())  # as wrapped
    assert main([*argv, "--novelty", "--show"]) == 0
    assert f"(1 spans, {len(copied) / len(text):.1%} of the text shown)" in " ".join(capsys.readouterr().out.split())
    assert main([*argv, "--novelty"]) == 2
    assert "--novelty marks copied spans in --show or --html, or lists them in --json" in capsys.readouterr().err
    assert main([*argv, "--novelty", "--show", "--novelty-min-span", "0"]) == 2


@pytest.mark.parametrize(
    ("flags", "spans"),
    [
        ([], [[1, 41]]),  # as the guide shows it: --novelty --json alone
        (["--breakdown"], [[1, 41]]),
        (["--show-chars", "20"], [[1, 20]]),  # the first --show-chars characters are searched
        (["--novelty-min-span", "50"], []),
        (["--novelty-min-span", "12", "--show-chars", "3"], []),
    ],
)
def test_perplexity_novelty_json_alone_lists_the_spans(run, capsys, flags, spans):
    text = "o" + LINES[1] + "\n" + LINES[2] + "gg"
    capsys.readouterr()
    argv = ["perplexity", "--run-dir", str(run), "--device", "cpu", "--text", text, "--novelty", "--json", *flags]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["novelty"]["spans"] == spans and "breakdown" in figures and figures["chars"] == len(text) - 1


def test_the_page_marks_copied_spans_in_a_browser(run, browser, capsys, tmp_path):
    from browser import open_page

    copied = LINES[0] + "\n" + LINES[3]
    text = "oo" + copied + "g"
    page_file = tmp_path / "page.html"
    argv = ["perplexity", "--run-dir", str(run), "--text", text, "--html", str(page_file), "--novelty"]
    assert main(argv) == 0
    page = open_page(browser, page_file)
    dom = page.page
    marked = dom.locator("#text span.c.copied")
    assert marked.count() == len(copied)
    assert [int(marked.nth(k).get_attribute("data-i")) for k in (0, len(copied) - 1)] == [2, 1 + len(copied)]
    assert "underline" in marked.first.evaluate("e => getComputedStyle(e).textDecorationLine")
    legend = dom.text_content("#copied-legend")
    assert "16 or more characters found in the training split (1 spans" in legend
    page.check_offline()
    capsys.readouterr()
    assert main([*argv[:-1], "--force"]) == 0  # without --novelty: no mark, no legend
    plain = open_page(browser, page_file)
    assert plain.page.locator("#text span.c.copied").count() == 0 and plain.page.locator("#copied-legend").count() == 0
    plain.check_offline()


def test_the_api_reads_the_index_once(run, monkeypatch):
    import charlm

    model = charlm.load(run)
    first = model.novelty(LINES[0] + "!")
    assert first["longest"]["length"] == len(LINES[0])  # "!" is no character of the corpus
    monkeypatch.setattr(ni, "load_index", lambda *a, **k: pytest.fail("read again"))
    assert model.novelty("")["shares"] == {"8": None, "16": None, "32": None}
    with pytest.raises(UsageError, match="novelty takes the text as a str"):
        model.novelty(b"bytes")
    assert os.path.exists(run / NOVELTY_INDEX)
