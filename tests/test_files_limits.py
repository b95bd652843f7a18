"""limits: every count and size a user gives is refused, in one line naming its limit, before anything is
allocated (generate's beams, samples, length, top-k, prefix; a file to score), and perplexity's page keeps
what it shows, not the text (issue 26, class 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_rnn, save_untrained_run

from charlm.cli.main import main
from charlm.errors import UsageError
from charlm.evaluate import char_losses
from charlm.files import limits

pytestmark = pytest.mark.usefixtures("single_thread")
CORPUS = "the cat sat on the mat.\nthe dog ran far away!\n" * 40  # 20-odd characters


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("limits")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    return save_untrained_run(folder / "run", str(corpus))


def refused(capsys, argv: list[str], *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --- the reader of a user's short text file ------------------------------------------------------------------


def test_read_user_text_reads_a_regular_file_within_the_limit(tmp_path):
    (tmp_path / "p.txt").write_bytes("\ufeffROMEO:".encode())
    assert limits.read_user_text(tmp_path / "p.txt", "prefix file", 100) == "ROMEO:"  # the BOM dropped
    (tmp_path / "exact.txt").write_bytes(b"x" * 100)
    assert limits.read_user_text(tmp_path / "exact.txt", "prefix file", 100) == "x" * 100


def fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "fifo")
    return tmp_path / "fifo"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda t: t / "missing.txt", "not found"),
        (lambda t: t, "is a folder"),
        (fifo, "not a regular file"),
        (
            lambda t: Path("/dev/zero") if Path("/dev/zero").exists() else pytest.skip("no /dev/zero"),
            "not a regular file",
        ),
        (lambda t: (t / "big.txt").write_bytes(b"a" * 101) and t / "big.txt", "over the limit of 100 B"),
        (lambda t: (t / "latin1.txt").write_bytes(b"caf\xe9") and t / "latin1.txt", "not UTF-8 text (byte 0xe9)"),
    ],
    ids=["missing", "folder", "fifo", "dev-zero", "over-limit", "not-utf8"],
)
def test_read_user_text_refuses_in_one_line(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        limits.read_user_text(path, "prefix file", 100)


def test_read_user_text_refuses_a_symlink_loop(tmp_path):
    try:
        os.symlink(tmp_path / "b", tmp_path / "a")
        os.symlink(tmp_path / "a", tmp_path / "b")
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    with pytest.raises(UsageError, match="cannot read prefix file"):
        limits.read_user_text(tmp_path / "a", "prefix file", 100)


def test_a_huge_file_is_refused_by_its_size_before_a_byte_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GB by stat, nothing on disk
    reads = []
    monkeypatch.setattr(os, "read", lambda *a: reads.append(a) or b"")
    with pytest.raises(UsageError, match="over the limit"):
        limits.read_user_text(big, "prefix file", limits.PREFIX_FILE_LIMIT)
    assert reads == []


def test_check_memory_names_what_and_how_much():
    assert limits.available_memory() > 0
    limits.check_memory(1, "one byte", "never")
    with pytest.raises(UsageError, match=r"a lot needs about 1\.0e\+12 TB of memory, more than the .* available: ask"):
        limits.check_memory(10**24, "a lot", "ask for less")
    assert [limits.size(n) for n in (512, 3_200_000, 41e9)] == ["512 B", "3.2 MB", "41.0 GB"]


# --- generate ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--beam", "1000000000"], ["beam search with 1,000,000,000 beams needs about", "pass fewer --beam"]),
        (["--beam", str(10**30), "-n", "1000"], ["beam search with", "of memory"]),
        (["--num-samples", "1000000000"], ["1,000,000,000 samples of 100 characters needs about", "--num-samples"]),
        (["--num-samples", "100000", "-n", "100000"], ["100,000 samples of 100,000 characters"]),
        (["--length", "10000000000"], ["1 sample of 10,000,000,000 characters needs about"]),
        (["--length", str(10**40)], ["characters needs about"]),
        (["--top-k", "1000"], ["top-k 1000 is more than this model's", "characters"]),
        (["--top-k", str(10**30)], ["top-k", "is more than this model's"]),
        (["-n", "2", "--beam", "100000"], ["texts of 2 characters this model can write"]),
        (["-n", "0", "--beam", "2"], ["^0 = 1 texts of 0 characters"]),
    ],
    ids=[
        "beam-1e9",
        "beam-1e30",
        "samples-1e9",
        "samples-x-length",
        "length-1e10",
        "length-1e40",
        "top-k",
        "top-k-1e30",
        "beam-over-vocab^2",
        "beam-length-0",
    ],
)
def test_generate_refuses_what_cannot_exist_or_fit(run, capsys, flags, needles):
    refused(capsys, ["generate", "-r", str(run), *flags], *needles)


def test_beams_up_to_vocab_to_the_length_are_searched(run, capsys):
    vocab = len(set(CORPUS))
    capsys.readouterr()
    assert main(["generate", "-r", str(run), "-p", "the", "-n", "2", "--beam", str(vocab**2), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # one sample: the best of every two-character text
    refused(
        capsys,
        ["generate", "-r", str(run), "-p", "the", "-n", "2", "--beam", str(vocab**2 + 1)],
        f"{vocab}^2 = {vocab**2:,}",
    )


def test_top_k_up_to_the_vocabulary_and_a_huge_repetition_window_are_fine(run, capsys):
    vocab = len(set(CORPUS))
    for flags in (["--top-k", str(vocab)], ["--repetition-penalty", "1.3", "--repetition-window", str(10**12)]):
        capsys.readouterr()
        assert main(["generate", "-r", str(run), "-p", "the", "-n", "20", "--seed", "1", *flags]) == 0
        assert capsys.readouterr().out.startswith("the")


def test_a_prefix_file_over_the_limit_is_refused_before_it_is_read(run, tmp_path, capsys):
    big = tmp_path / "prefix.txt"
    with open(big, "wb") as f:
        f.truncate(limits.PREFIX_FILE_LIMIT + 1)
    refused(capsys, ["generate", "-r", str(run), "--prefix-file", str(big)], "over the limit")


def test_a_long_prefix_is_read_in_windows(run, capsys, monkeypatch):
    """The warm-up reads a prefix longer than a window in windows (its logits a window at a time), and gives
    the state the whole read gives: the same greedy text."""
    from charlm.generation import fast_step as step

    prefix = CORPUS[:300]
    capsys.readouterr()
    assert main(["generate", "-r", str(run), "-p", prefix, "-n", "30", "--temperature", "0"]) == 0
    whole = capsys.readouterr().out
    monkeypatch.setattr(step, "WARM_UP_WINDOW", 7)
    assert main(["generate", "-r", str(run), "-p", prefix, "-n", "30", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == whole


LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from charlm.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
@pytest.mark.parametrize(
    "flags",
    [
        ["--beam", "1000000000"],
        ["--num-samples", "1000000000"],
        ["--length", "10000000000"],
        ["--num-samples", "3000", "-n", "1000000"],
    ],
    ids=["beam", "samples", "length", "samples-x-length"],
)
def test_refused_within_2_gb_of_address_space(run, flags):
    """Under a 2 GB address-space limit an allocation for the request would fail with an allocator error
    ("unexpected"): the refusal comes first, with the estimate."""
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, "generate", "-r", str(run), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert "needs about" in done.stderr and "unexpected" not in done.stderr


# --- files to score -------------------------------------------------------------------------------------------


def test_a_file_to_score_that_cannot_fit_is_refused_before_reading(run, tmp_path, capsys):
    huge = tmp_path / "huge.txt"
    try:
        with open(huge, "wb") as f:
            f.truncate(1 << 43)  # 8 TB, sparse
    except OSError:
        pytest.skip("this filesystem has no sparse 8 TB files")
    for command in ("perplexity", "neurons"):
        refused(capsys, [command, "-r", str(run), "--file", str(huge)], f"scoring {huge} needs about", "head -c")


# --- perplexity --show/--html: memory follows what is shown -----------------------------------------------------


def test_char_losses_keeps_the_first_characters_and_sums_all():
    torch.manual_seed(0)
    model = make_rnn(9, kind="gru", hidden_size=8)
    ids = torch.randint(0, 9, (403,))
    full = char_losses(model, ids, batch_size=5, num_steps=7, top_k=3)
    for keep in (0, 1, 79, 80, 81, 250, 10**9):
        part = char_losses(model, ids, batch_size=5, num_steps=7, top_k=3, keep=keep)
        n = min(keep, full.chars)
        assert part.total == full.total and part.chars == full.chars == 400
        assert torch.equal(part.nats, full.nats[:n]) and torch.equal(part.top_ids, full.top_ids[:n])
        assert torch.equal(part.count, full.count) and torch.equal(part.cost, full.cost)
    targets = ids[1:401].long()
    assert torch.equal(full.count, torch.bincount(targets, minlength=9))
    by_hand = torch.bincount(targets, weights=full.nats.double(), minlength=9)
    assert torch.allclose(full.cost, by_hand, rtol=1e-9)  # float64 sums of the same float32 values, in another order


def test_the_surprisal_report_holds_what_is_shown_whatever_the_text(run, tmp_path):
    from charlm.analysis.surprisal import analyse
    from charlm.evaluate import TextSource

    sizes = []
    for copies in (1, 20):
        text = tmp_path / f"text{copies}.txt"
        text.write_text(CORPUS * copies, encoding="utf-8")
        report = analyse(run, "best", TextSource(file=text), predictions=True, keep=50)
        held = [report.shown_ids, report.bits, report.top_ids, report.top_probs, report.count, report.cost]
        sizes.append([t.numel() for t in held])
        assert report.text_chars == len(CORPUS) * copies and len(report.display(10**6)) == 50
    assert sizes[0] == sizes[1]


def test_the_page_and_show_cover_show_chars_and_the_figures_all(run, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text(CORPUS * 3, encoding="utf-8")
    capsys.readouterr()
    assert main(["perplexity", "-r", str(run), "--file", str(text), "--json", "--no-mix"]) == 0
    plain = json.loads(capsys.readouterr().out)
    page = tmp_path / "page.html"
    assert (
        main(["perplexity", "-r", str(run), "--file", str(text), "--html", str(page), "--show-chars", "40", "--json"])
        == 0
    )
    full = json.loads(capsys.readouterr().out)
    assert {k: full[k] for k in plain} == plain
    html = page.read_text(encoding="utf-8")
    data, _ = json.JSONDecoder().raw_decode(html, html.index('{"title"'))  # the page's one JSON block
    assert len(data["text"]) == len(data["bits"]) == 40 and len(data["top"]) == 39
    assert data["total_text_chars"] == len(CORPUS) * 3
