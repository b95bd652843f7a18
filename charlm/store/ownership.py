"""Whose a run folder is: the marker (run.json) that makes a folder charlm's, the check that a new run may
use a folder, and the lock that lets one trainer at a time in (store/run_lock.py). Reached as
`run.ownership`.

charlm writes only into a folder that is new, empty or marked as its own, and deletes only the checkpoints
its marker lists; `/`, the home folder and the working directory are never run folders.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from charlm.errors import UsageError
from charlm.files import fsio, readback
from charlm.store import run_lock
from charlm.store.layout import LAST, MARKER, MARKER_FORMAT, METRICS, STATUS
from charlm.store.run_lock import HOLDER, LOCK, RunLock

KEPT_NAME = re.compile(r"ckpt-e\d{4,}-b\d{6,}\.pt")  # the only names run.json's "kept" may list: they get deleted
MAX_MARKER = readback.MIB  # charlm writes a few hundred bytes


class Ownership:
    """The marker and the lock of the run folder `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder

    def check_new(self) -> None:
        """Refuse, touching nothing, a folder a new run may not use: one holding anything charlm did not write
        there, a run (resume it instead), a run whose last.pt is gone but whose other checkpoints are not
        (resume from best.pt instead); `/`, the home folder and the working directory."""
        refuse_special_folder(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"run folder {self.folder} is a file: pass a folder with --run-dir")
        if self.folder.is_dir():
            self._check_reusable()

    def prepare_new(self) -> None:
        """Check the folder again (now that we hold its lock), clear what a run that died before its first
        checkpoint left, and create it."""
        self.check_new()
        if self.folder.is_dir():
            for name in (METRICS, STATUS):  # a run that died before its first checkpoint: nothing worth keeping
                (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"cannot create run folder {self.folder} ({e.strerror}): choose a writable --run-dir"
            ) from None

    def _check_reusable(self) -> None:
        present = sorted(p.name for p in self.folder.iterdir() if p.name not in (LOCK, HOLDER))
        if not present:
            return
        if (self.folder / LAST).exists():  # a run, maybe from before markers existed: --resume checks it
            raise UsageError(
                f"run folder {self.folder} already holds a run: resume it with --resume, or pass a new --run-dir"
            )
        if not self.is_marked():
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise UsageError(
                f"run folder {self.folder} holds files charlm did not write ({shown}): pass a new or empty --run-dir"
            )
        if any(name.endswith(".pt") for name in present):
            raise UsageError(
                f"run folder {self.folder} holds a run whose {LAST} is gone: continue it from its best "
                "checkpoint with --resume-from best, or pass a new --run-dir"
            )

    def mark(self) -> None:
        """Write the marker that makes this folder a charlm run (first, before any other file)."""
        marker = {"format": MARKER_FORMAT, "id": uuid.uuid4().hex, "created": datetime.now().isoformat(), "kept": []}
        fsio.atomic_write_text(self.folder / MARKER, json.dumps(marker))

    def is_marked(self) -> bool:
        return self.marker().get("format") == MARKER_FORMAT

    def marker(self) -> dict:
        """run.json as data ({} when it is missing or not charlm's); "kept" holds only checkpoint names, since
        those files get deleted: a name like ../x or /home/x is dropped."""
        try:
            marker = readback.read_json(self.folder / MARKER, MAX_MARKER)
        except (OSError, readback.BadFile):
            return {}
        if not isinstance(marker, dict):
            return {}
        kept = marker.get("kept")
        return {
            **marker,
            "kept": [n for n in kept if isinstance(n, str) and KEPT_NAME.fullmatch(n)]
            if isinstance(kept, list)
            else [],
        }

    def update_marker(self, **values) -> None:
        marker = self.marker() or {"format": MARKER_FORMAT, "id": uuid.uuid4().hex}
        fsio.atomic_write_text(self.folder / MARKER, json.dumps({**marker, **values}))

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunLock]:
        """Hold the folder's lock while a trainer works in it; a second trainer is refused at once (run_lock)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError(f"run folder {self.folder} is a file: pass a folder with --run-dir")
        with run_lock.hold(self.folder) as held:
            yield held

    def is_locked(self) -> bool | None:
        """Whether a trainer holds the folder now (None: the folder has no lock file, an older run)."""
        return run_lock.is_held(self.folder)


def refuse_special_folder(path: Path) -> None:
    """`/`, the home folder and the working directory itself are never run folders."""
    resolved = Path(path).expanduser().resolve()
    for special, what in (
        (Path("/"), "the root folder"),
        (Path.home(), "your home folder"),
        (Path.cwd(), "the working directory"),
    ):
        if resolved == special.resolve():
            raise UsageError(
                f"--run-dir {path} is {what}: a run writes and deletes files there; pass a new folder such as runs/NAME"
            )
