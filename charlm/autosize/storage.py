"""Where a search's study is kept (study.py opens it): the run's own RUN/study.db, or --study-storage (an RDB URL
or a journal file) that several processes share. Checked before anything opens it, and shown without its secrets.

    own study     RUN/study.db, found again from the run folder it is in (a copied or moved run has its own)
    RDB URL       postgresql://user:PASSWORD@host/db: the password lives in memory only; search.json, every
                  message and every file hold it as *** (a resume gives the URL again, password included)
    sqlite:///P   P made absolute (a resume from another folder opens the same file); a file there must be SQLite
    journal file  Optuna's JSON lines; a file there must be a whole journal (a text of the user's, a checkpoint,
                  a journal whose last line was cut): refused before Optuna opens it to append, never changed
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from charlm.errors import UsageError
from charlm.files import readback
from charlm.store.layout import STUDY_DB

HIDDEN = "***"
# a query parameter that carries a secret (libpq's password, a token, an SSL key's passphrase): name=, value
SECRET_PARAMETER = re.compile(r"([?&][^=&#]*(?:pass|secret|token|key|auth|credential)[^=&#]*=)([^&#]*)", re.IGNORECASE)
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_JOURNAL = 256 * readback.MIB  # a line per trial event: a study of thousands of trials is tens of MB


@dataclass(frozen=True)
class Storage:
    """A study's storage: `url` is what Optuna opens (it may hold a password: memory only)."""

    url: str
    shared: bool  # --study-storage: other processes may share it; else the run's own study.db
    journal: bool = False  # a journal file (url is its absolute path)

    @property
    def shown(self) -> str:
        """The storage as messages and search.json show it: a password or a secret parameter as ***."""
        return redact(self.url)

    @property
    def secret(self) -> bool:
        return self.shown != self.url

    @property
    def named(self) -> str:
        """What a message blames: the flag the user gave, or the run's own study file."""
        if not self.shared:
            return f"the search's study {self.url.removeprefix('sqlite:///')}"
        return f"--study-storage {self.shown}"

    def scrub(self, text: str) -> str:
        """`text` (an error from a driver) without the URL's secrets, on one line."""
        for secret in secrets(self.url):
            text = text.replace(secret, HIDDEN)
        line = next((part.strip() for part in text.splitlines() if part.strip()), "")
        return line if len(line) <= 200 else f"{line[:197]}..."


def own(folder: Path) -> Storage:
    """The run's own study, RUN/study.db, checked like any SQLite file before it is opened."""
    path = (Path(folder) / STUDY_DB).resolve()
    check_sqlite(path, "the search's study", fix="the search cannot go on: restore it, or start a new run")
    return Storage(f"sqlite:///{path}", shared=False)


def given(text: str) -> Storage:
    """--study-storage (or search.storage): an Optuna URL, or a journal file in an existing folder; checked (a
    file that is not a study is refused, untouched) and made absolute, so a resume opens the same one."""
    shown = redact(text)
    if "://" not in text:
        path = Path(text).expanduser().absolute()
        check_journal(path, f"--study-storage {shown}")
        return Storage(str(path), shared=True, journal=True)
    scheme = text.split("://", 1)[0]
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise UsageError(f"--study-storage {shown} is not an Optuna URL: write it like postgresql://host/db")
    if scheme.split("+")[0].lower() != "sqlite":
        return Storage(text, shared=True)
    rest = text.split("://", 1)[1]
    if not rest.startswith("/") or rest.strip("/") == "" or rest.startswith("/:memory:"):
        raise UsageError(
            f"--study-storage {shown} is no file: a shared SQLite study is a file, sqlite:///path/study.db"
        )
    where, _, query = rest[1:].partition("?")
    path = Path(where).expanduser().absolute()
    check_sqlite(path, f"--study-storage {shown}", fix="pass a new file name or the study's own")
    return Storage(f"{scheme}:///{path}" + (f"?{query}" if query else ""), shared=True)


def kept(value: object, shared: object, folder: Path, again: str | None) -> Storage:
    """The storage a resumed search opens: the run's own study (whatever an older search.json says of its
    path), or the shared one it names; one kept without its password needs `again` (--study-storage)."""
    if shared is not True:
        if again is not None:
            raise UsageError("--resume continues this search in its own study: drop --study-storage")
        return own(folder)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{Path(folder) / 'search.json'} names no study storage: the search cannot resume")
    if again is None:
        if secrets(value):  # kept as ***
            raise UsageError(
                f"the search's study storage {redact(value)} needs its password, which charlm does not keep: "
                "resume with --study-storage URL (that URL, password included)"
            )
        return given(value)
    if redact(again) != redact(value):
        raise UsageError(
            f"--study-storage {redact(again)} is not this search's storage ({redact(value)}): pass that one"
        )
    return given(again)


def redact(url: str) -> str:
    """`url` with its password and the values of its secret query parameters as ***: what is shown and written
    (the rest as given, byte for byte)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    location, slash, path = rest.partition("/")
    user, at, host = location.rpartition("@")
    if at and ":" in user:
        location = f"{user.split(':', 1)[0]}:{HIDDEN}@{host}"
    return f"{scheme}://{location}{slash}{SECRET_PARAMETER.sub(lambda m: m.group(1) + HIDDEN, path)}"


def secrets(url: str) -> list[str]:
    """The secrets of `url` as a driver's message may quote them (as written, and decoded), longest first."""
    if "://" not in url:
        return []
    location, _, path = url.split("://", 1)[1].partition("/")
    user = location.rpartition("@")[0]
    found = [user.split(":", 1)[1]] if ":" in user else []
    found += [m.group(2) for m in SECRET_PARAMETER.finditer(path)]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def check_sqlite(path: Path, named: str, fix: str) -> None:
    """A SQLite study's file: none yet, in a folder charlm may write, or a SQLite database (a text file or a
    checkpoint there is someone's, which SQLite would refuse or, empty, turn into a database)."""
    _check_place(path, named)
    if path.exists():
        head = _head(path, named, len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise UsageError(f"{named}: {path} is not a SQLite database: {fix}")


def check_journal(path: Path, named: str) -> None:
    """A journal file: none yet, or Optuna's whole JSON lines (each an object with its op_code); anything else
    is refused before Optuna opens it to append, and left as it is."""
    _check_place(path, named)
    if not path.exists():
        return
    try:
        data = readback.read_bytes(path, MAX_JOURNAL)
    except (OSError, readback.BadFile) as e:
        raise UsageError(f"{named}: {path} cannot be read as a journal ({_reason(e)}): pass a journal file") from None
    lines = data.split(b"\n")  # the last is b"" when the file ends a line
    for number, line in enumerate(lines[:-1], start=1):
        try:
            record = readback.parse_json(line)
        except readback.BadFile:
            record = None
        if not (isinstance(record, dict) and type(record.get("op_code")) is int):
            raise UsageError(
                f"{named}: line {number} of {path} is not an Optuna journal record: pass a journal file "
                "(a new name starts a new study)"
            )
    if lines[-1]:
        what = (
            "is cut short (a writer stopped mid-line): remove that partial line, or"
            if lines[-1][:1] == b"{"
            else "is not an Optuna journal record:"
        )
        raise UsageError(f"{named}: the last line of {path} {what} pass a new journal file")


def _check_place(path: Path, named: str) -> None:
    """The file's folder exists and charlm may write there (Optuna makes the file and, for a journal, its lock
    beside it); the path is no folder and, if there, a file charlm may write."""
    try:
        is_dir, parent_is_dir, exists = path.is_dir(), path.parent.is_dir(), path.exists()
    except OSError as e:  # a name too long, a loop of links, a path through a file
        raise UsageError(f"{named}: {path} cannot be used ({_reason(e)}): name another file") from None
    if is_dir:
        raise UsageError(f"{named}: {path} is a folder: name a file in it")
    if not parent_is_dir:
        raise UsageError(f"{named}: the folder {path.parent} does not exist: create it, or name a file in another")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"{named}: the folder {path.parent} is not writable: name a file in a folder you may write")
    if exists and not os.access(path, os.R_OK | os.W_OK):
        raise UsageError(f"{named}: {path} cannot be read and written: fix its permissions or pass another file")


def _head(path: Path, named: str, size: int) -> bytes:
    """The first `size` bytes of a regular file (a FIFO or a device is refused, never waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise readback.BadFile("not a regular file")
            return os.read(fd, size)
        finally:
            os.close(fd)
    except (OSError, readback.BadFile) as e:
        raise UsageError(f"{named}: {path} cannot be read ({_reason(e)}): pass another file") from None


def _reason(e: Exception) -> str:
    return getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
