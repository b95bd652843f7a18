"""Edges of every command: no input a user can give reaches the catch-all "unexpected ..." message of
cli.main; each is one line naming the problem, exit 2, and nothing written (issue 26, class 5)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import save_untrained_run

from charlm.cli.main import main
from charlm.store.layout import RUNS_ENV

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A folder with a run, a damaged copy of it (best.pt cut short), a corpus, a file, an empty text, a
    one-character text, a symlink loop and (where there are FIFOs) a FIFO."""
    folder = tmp_path_factory.mktemp("edges")
    (folder / "corpus.txt").write_text("hello world, the cat sat.\n" * 30, encoding="utf-8")
    save_untrained_run(folder / "run", str(folder / "corpus.txt"))
    shutil.copytree(folder / "run", folder / "damaged")
    (folder / "damaged" / "best.pt").write_bytes((folder / "run" / "best.pt").read_bytes()[:500])
    (folder / "afile").write_text("not a folder\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "one.txt").write_text("h")
    (folder / "notxt").mkdir()
    try:
        os.symlink(folder / "loop2", folder / "loop1")
        os.symlink(folder / "loop1", folder / "loop2")
    except (OSError, NotImplementedError):
        pass
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo")
    return folder


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_symlink())


CASES = {  # name: (argv with {p} for the folder, what the one line must say)
    "text-empty": ("perplexity -r {p}/run --text=", "--text has 0 characters"),
    "text-one-char": ("perplexity -r {p}/run --text h", "--text has 1 character"),
    "text-empty-show": ("perplexity -r {p}/run --text= --show", "--text has 0 characters"),
    "text-empty-html": ("perplexity -r {p}/run --text= --html {p}/page.html", "--text has 0 characters"),
    "text-not-utf8": ("perplexity -r {p}/run --text hel\udcfflo", "not UTF-8 (it holds the byte or lone"),
    "text-not-utf8-breakdown": ("perplexity -r {p}/run --text hel\udcfflo --breakdown", "0xff"),
    "prefix-not-utf8": ("generate -r {p}/run --prefix hel\udce9lo", "the prefix is not UTF-8"),
    "stop-not-utf8": ("generate -r {p}/run --stop \udcff", "the stop text"),
    "file-empty": ("perplexity -r {p}/run --file {p}/empty.txt", "has 0 characters"),
    "neurons-file-empty": ("neurons -r {p}/run --file {p}/empty.txt", "has 0 characters"),
    "neurons-file-one": ("neurons -r {p}/run --file {p}/one.txt", "has 1 character"),
    "neurons-file-folder": ("neurons -r {p}/run --file {p}/notxt", "not a regular file"),
    "file-fifo": ("perplexity -r {p}/run --file {p}/fifo", "not a regular file"),
    "prefix-file-fifo": ("generate -r {p}/run --prefix-file {p}/fifo", "is not a regular file"),
    "prefix-file-folder": ("generate -r {p}/run --prefix-file {p}", "is a folder"),
    "prefix-file-dev-zero": ("generate -r {p}/run --prefix-file /dev/zero", "is not a regular file"),
    "prefix-file-loop": ("generate -r {p}/run --prefix-file {p}/loop1", "cannot read prefix file"),
    "prefix-file-missing": ("generate -r {p}/run --prefix-file {p}/nothing.txt", "not found"),
    "prefix-file-empty": ("generate -r {p}/run --prefix-file {p}/empty.txt", "the prefix is empty"),
    "runs-root-loop-runs": ("--runs-root {p}/loop1 runs", "cannot be used"),
    "runs-root-loop-generate": ("--runs-root {p}/loop1 generate", "cannot be used"),
    "runs-root-loop-train": (
        f"--runs-root {{p}}/loop1 train --config {TINY} --corpus {{p}}/corpus.txt",
        "cannot be used",
    ),
    "runs-root-file-runs": ("--runs-root {p}/afile runs", "is not a folder"),
    "runs-root-file-info": ("--runs-root {p}/afile info", "is not a folder"),
    "runs-root-under-file": ("--runs-root {p}/afile/sub perplexity", "Not a directory"),
    "runs-dash-root-file": ("runs --root {p}/afile", "is not a folder"),
    "lr-inf": ("train --dry-run --set train.lr=.inf", "train.lr must be a finite number, got inf"),
    "lr-string-inf": ("train --dry-run --set train.lr=inf", "train.lr must be a finite number"),
    "lr-nan": ("train --dry-run --set train.lr=.nan", "train.lr must be a finite number, got nan"),
    "lr-1e999": ("train --dry-run --set train.lr=1e999", "must be a finite number"),
    "lr-huge-int": ("train --dry-run --set train.lr=" + "9" * 400, "train.lr = "),
    "clip-inf": ("train --dry-run --set train.clip_norm=.inf", "train.clip_norm must be a finite number"),
    "eval-seconds-inf": ("train --dry-run --set train.eval_every_seconds=.inf", "train.eval_every_seconds"),
    "dropout-nan": ("train --dry-run --set model.dropout=.nan", "model.dropout must be a finite number"),
    "val-fraction-inf": ("train --dry-run --set data.val_fraction=-.inf", "data.val_fraction"),
    "temperature-inf": ("generate -r {p}/run --temperature inf", "temperature must be a finite number, got inf"),
    "temperature-nan": ("generate -r {p}/run --temperature nan", "temperature must be a finite number, got nan"),
    "top-p-nan": ("generate -r {p}/run --top-p nan", "top-p must be a finite number"),
    "penalty-inf": ("generate -r {p}/run --repetition-penalty inf", "repetition-penalty must be a finite number"),
    "dry-run-missing-corpus": ("train --dry-run --corpus {p}/nothing.txt", "is neither a file, a folder"),
    "dry-run-corpus-fifo": ("train --dry-run --corpus {p}/fifo", "is not a regular file or a folder"),
    "dry-run-corpus-no-txt": ("train --dry-run --corpus {p}/notxt", "has no .txt files"),
    "nproc-missing-corpus": ("train --nproc 2 --corpus {p}/nothing.txt", "is neither a file, a folder"),
    "init-from-damaged-best": (
        "train --init-from {p}/damaged --corpus {p}/corpus.txt",
        "its last checkpoint is intact: use --init-from {p}/damaged:last",
    ),
    "generate-damaged-best": ("generate -r {p}/damaged", "its last checkpoint is intact: use --checkpoint last"),
    "export-damaged-best": (
        "export -r {p}/damaged --out {p}/exported",
        "its last checkpoint is intact: use --checkpoint last",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_exit_2_nothing_written(place, name, capsys, monkeypatch):
    command, needle = CASES[name]
    missing = [
        ("fifo", hasattr(os, "mkfifo")),
        ("loop1", (place / "loop1").is_symlink()),
        ("/dev/zero", Path("/dev/zero").exists()),
    ]
    if any(part in command and not here for part, here in missing):
        pytest.skip("not on this system")
    monkeypatch.setenv(RUNS_ENV, str(place / "runs"))  # restored after: --runs-root sets it for the process
    monkeypatch.chdir(place)
    before = listing(place)
    capsys.readouterr()
    code = main([arg.format(p=place) for arg in command.split(" ")])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "unexpected" not in captured.err + captured.out, captured.err
    assert needle.format(p=place) in lines[0]
    assert listing(place) == before


def test_runs_dir_env_pointing_at_a_file_is_an_error(place, capsys, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(place / "afile"))
    capsys.readouterr()
    assert main(["runs"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_runs_root_not_made_yet_is_no_runs(place, capsys, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(place / "not-yet"))
    capsys.readouterr()
    assert main(["runs"]) == 0
    assert "no runs under" in capsys.readouterr().err
    assert not (place / "not-yet").exists()


@pytest.mark.slow
def test_doctor_names_a_runs_root_that_is_a_file_as_a_problem(place, capsys, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(place / "afile"))
    capsys.readouterr()
    assert main(["doctor", "--json"]) == 1
    assert "is not a folder" in capsys.readouterr().out
