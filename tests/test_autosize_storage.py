"""The study's storage (autosize/storage.py, study.py): a secret in its URL never printed nor written; a file that
is not a study refused before anything opens it, and left unchanged; the run's own study.db blamed as itself; a
storage that fails mid-search one line and a resume command. The trainer is faked (search_helpers)."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest
from search_helpers import FakeTraining, resume, start

from charlm.autosize import storage as storages
from charlm.errors import CharlmError, RunError, UsageError
from charlm.files.interrupts import Interrupted
from charlm.store import search_log

optuna = pytest.importorskip("optuna")
SECRET = "S3cr3t-pw"


@pytest.mark.parametrize(
    "url, shown, password",
    [
        (f"postgresql://user:{SECRET}@db.example/study", "postgresql://user:***@db.example/study", SECRET),
        (f"postgresql+psycopg2://me:{SECRET}@h:5432/db", "postgresql+psycopg2://me:***@h:5432/db", SECRET),
        (f"mysql://me:p@ss:{SECRET}@h/db", "mysql://me:***@h/db", f"p@ss:{SECRET}"),  # an @ and a : in it
        (f"postgresql://me:{SECRET}%40x@h/db", "postgresql://me:***@h/db", f"{SECRET}@x"),  # URL-encoded
        (f"postgresql://h/db?user=me&password={SECRET}", "postgresql://h/db?user=me&password=***", SECRET),
        (
            f"postgresql://h/db?sslpassword={SECRET}&sslmode=require",
            "postgresql://h/db?sslpassword=***&sslmode=require",
            SECRET,
        ),
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0", SECRET),
    ],
)
def test_a_secret_in_the_url_is_shown_as_stars(url, shown, password):
    kept = storages.given(url)
    assert kept.url == url and kept.shown == shown and kept.secret
    said = kept.scrub(f"could not connect to {url} as me with {password}, nor {url.replace(SECRET, SECRET.upper())}")
    assert SECRET not in kept.named and password not in said and SECRET not in said and "***" in said


@pytest.mark.parametrize("url", ["postgresql://me@h/db", "postgresql://h/db?options=-c%20x&sslmode=require"])
def test_a_url_without_a_secret_is_shown_as_it_is(url):
    assert not storages.given(url).secret and storages.given(url).shown == url


def files_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("scheme", ["postgresql", "mysql+pymysql"])
def test_a_storage_with_a_password_that_fails_is_one_line_without_it_and_writes_no_plan(tmp_path, monkeypatch, scheme):
    FakeTraining(monkeypatch)
    url = f"{scheme}://me:{SECRET}@127.0.0.1:9/nodb"
    with pytest.raises(UsageError) as refused:
        start(tmp_path / "run", [f"search.storage={url}"])
    message = str(refused.value)
    assert SECRET not in message and "me:***@127.0.0.1" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
    assert SECRET.encode() not in files_under(tmp_path)


def test_a_password_is_kept_in_memory_only_and_asked_for_again_on_resume(tmp_path, monkeypatch):
    """The URL Optuna opens has the password; search.json, the trials' configs, the journal and every message
    have *** or nothing; a resume needs the URL again, and only that URL. (No server here: Optuna's create_study
    is given a journal in the URL's place, from the test side.)"""
    fake = FakeTraining(monkeypatch)
    url, journal, run = f"postgresql://me:{SECRET}@127.0.0.1:9/nodb", tmp_path / "study.log", tmp_path / "run"
    real_create, opened = optuna.create_study, []

    def create_study(storage, **kwargs):
        opened.append(storage)
        backend = optuna.storages.journal.JournalFileBackend(str(journal))
        return real_create(storage=optuna.storages.JournalStorage(backend), **kwargs)

    monkeypatch.setattr(optuna, "create_study", create_study)
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 2 else None
    with pytest.raises(Interrupted) as stop:
        start(run, [f"search.storage={url}"])
    assert opened == [url]
    assert SECRET not in str(stop.value)
    assert str(stop.value).endswith(
        "--study-storage URL (its URL postgresql://me:***@127.0.0.1:9/nodb, password included)"
    )
    assert json.loads((run / "search.json").read_text())["storage"] == "postgresql://me:***@127.0.0.1:9/nodb"
    assert SECRET.encode() not in files_under(tmp_path)
    assert fake.calls and all(config.search.storage is None for _, config, _ in fake.calls)
    fake.during = None
    with pytest.raises(
        UsageError, match=r"needs its password, which charlm does not keep: resume with --study-storage"
    ):
        resume(run)
    with pytest.raises(UsageError, match=r"is not this search's storage \(postgresql://me:\*\*\*@127"):
        resume(run, storage=f"postgresql://you:{SECRET}@127.0.0.1:9/nodb")
    resume(run, storage=url)
    assert opened == [url, url] and search_log.winner(search_log.read_lines(run)) is not None
    assert SECRET.encode() not in files_under(tmp_path)


@pytest.fixture
def journal(tmp_path, monkeypatch) -> Path:
    """A whole journal, made by a short search."""
    FakeTraining(monkeypatch)
    path = tmp_path / "made" / "study.log"
    path.parent.mkdir()
    start(tmp_path / "made-run", [f"search.storage={path}"])
    return path


def not_a_journal(tmp_path: Path, journal: Path, kind: str) -> Path:
    """A file --study-storage may name that is not a journal Optuna may append to."""
    path = tmp_path / f"{kind}.log"
    if kind == "text":
        path.write_text("my notes\nline two\n")
    elif kind == "checkpoint":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)  # a zip, as a last.pt is
    elif kind == "garbage":
        path.write_bytes(journal.read_bytes() + b"\x00\xff garbage\n")
    elif kind == "torn":
        path.write_bytes(journal.read_bytes() + b'{"op_code": 5, "worker_id": "x", "trial_id"')
    elif kind == "json-not-optuna":
        path.write_text('{"hello": 1}\n')
    elif kind == "utf16":
        path.write_text("op_code\n", encoding="utf-16")
    return path


@pytest.mark.parametrize("kind", ["text", "checkpoint", "garbage", "torn", "json-not-optuna", "utf16"])
def test_a_file_that_is_not_a_journal_is_refused_unchanged(tmp_path, monkeypatch, journal, kind):
    FakeTraining(monkeypatch)
    path = not_a_journal(tmp_path, journal, kind)
    before = path.read_bytes()
    with pytest.raises(UsageError) as refused:
        start(tmp_path / "run", [f"search.storage={path}"])
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    assert path.read_bytes() == before and not (tmp_path / "run").exists()
    assert not Path(f"{path}.lock").exists()


@pytest.mark.parametrize(
    "where",
    ["no-folder", "a-folder", "fifo", "name-too-long", "through-a-file", "unwritable-folder", "unwritable-file"],
)
def test_a_journal_where_none_can_be_made_is_one_line(tmp_path, monkeypatch, where):
    FakeTraining(monkeypatch)
    path = tmp_path / "study.log"
    if where == "no-folder":
        path = tmp_path / "missing" / "study.log"
    elif where == "a-folder":
        path.mkdir()
    elif where == "name-too-long":
        path = tmp_path / ("x" * 300)
    elif where == "through-a-file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "study.log"
    elif where == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("FIFOs are POSIX")
        os.mkfifo(path)
    elif os.geteuid() == 0 if hasattr(os, "geteuid") else True:
        pytest.skip("permissions do not bind root (or this OS has none to set)")
    elif where == "unwritable-folder":
        (tmp_path / "ro").mkdir()
        path = tmp_path / "ro" / "study.log"
        os.chmod(path.parent, stat.S_IRUSR | stat.S_IXUSR)
    else:
        path.write_text("")
        os.chmod(path, stat.S_IRUSR)
    with pytest.raises(UsageError) as refused:
        start(tmp_path / "run", [f"search.storage={path}"])
    assert "--study-storage" in str(refused.value) and "\n" not in str(refused.value)


def test_an_empty_file_and_a_whole_journal_are_journals(tmp_path, monkeypatch, journal):
    FakeTraining(monkeypatch)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    storages.given(str(empty))
    start(tmp_path / "second", [f"search.storage={journal}"])  # the study shared with the fixture's search
    assert search_log.winner(search_log.read_lines(tmp_path / "second")) is not None


@pytest.mark.parametrize("kind", ["text", "empty", "memory", "no-path"])
def test_a_sqlite_url_that_is_no_study_file_is_refused_unchanged(tmp_path, kind):
    path = tmp_path / "notes.txt"
    url = {"text": f"sqlite:///{path}", "empty": f"sqlite:///{path}", "memory": "sqlite://", "no-path": "sqlite:///"}
    if kind == "text":
        path.write_text("my notes")
    elif kind == "empty":
        path.write_bytes(b"")  # SQLite would make it a database
    with pytest.raises(UsageError, match="--study-storage"):
        storages.given(url[kind])
    assert not path.exists() or path.read_bytes() == (b"my notes" if kind == "text" else b"")


def test_a_relative_sqlite_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storages.given("sqlite:///here.db").url == f"sqlite:///{tmp_path / 'here.db'}"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "text"])
def test_a_damaged_study_db_is_blamed_on_itself_not_on_a_flag_never_given(tmp_path, monkeypatch, damage):
    fake = FakeTraining(monkeypatch)
    run = tmp_path / "run"
    fake.during = lambda path, config: os.kill(os.getpid(), signal.SIGINT) if len(fake.calls) == 2 else None
    with pytest.raises(Interrupted):
        start(run)
    db = run / "study.db"
    data = db.read_bytes()
    db.write_bytes({"garbage": b"\x00" * 100 + data[100:], "truncated": data[:2000], "text": b"notes"}[damage])
    with pytest.raises(CharlmError) as refused:
        resume(run)
    message = str(refused.value)
    assert "study-storage" not in message and "the search's study" in message and "\n" not in message, message


@pytest.mark.parametrize("damage", ["garbage-line", "torn-line-then-more", "removed"])
def test_a_journal_damaged_mid_search_stops_it_with_one_line_and_the_resume_command(tmp_path, monkeypatch, damage):
    fake = FakeTraining(monkeypatch)
    path = tmp_path / "study.log"

    def spoil(folder, config):
        if len(fake.calls) == 2:
            if damage == "removed":
                path.unlink()
                path.mkdir()
            else:
                with open(path, "ab") as f:
                    f.write(b"\xff not json\n" if damage == "garbage-line" else b'{"op_code": 1, "wor')
                    f.write(b'{"op_code": 9, "worker_id": "x"}\n' if damage != "garbage-line" else b"")

    fake.during = spoil
    with pytest.raises(RunError) as failed:
        start(tmp_path / "run", [f"search.storage={path}"])
    message = str(failed.value)
    assert message.startswith(f"--study-storage {path} failed (") and "\n" not in message
    assert message.endswith(f"continue it with: charlm train --resume --run-dir {tmp_path / 'run'}")
