"""A run folder's two logs: metrics.jsonl (`MetricsLog`: a line per evaluation, plus events) and status.json
(`StatusFile`: running, finished or interrupted). Reached from a run as `run.metrics` and `run.status`.

Both are read back defensively (files.readback): a line cut short by a crash is skipped, and a file that
cannot be read at all is a `DamagedFile`, which `runs` and `info` show as damaged without failing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from charlm.errors import RunError
from charlm.files import fsio, readback
from charlm.store import run_lock
from charlm.store.layout import LAST, METRICS, STATUS

STATES = ("running", "finished", "interrupted")  # status.json's "state"
MAX_STATUS = readback.MIB  # charlm writes a few hundred bytes
MAX_METRICS = 256 * readback.MIB  # a line per eval (~400 bytes): over half a million evals


class DamagedFile(RunError):
    """A bookkeeping file of a run folder that cannot be read: shown as damaged, never fatal to the others."""

    def __init__(self, path: Path, error: Exception):
        super().__init__(
            f"{path} is damaged ({type(error).__name__}): move it aside to go on; the checkpoints are not affected"
        )
        self.path = path


class MetricsLog:
    """metrics.jsonl of the run folder `folder`."""

    def __init__(self, folder: Path):
        self.path = folder / METRICS

    def read(self) -> list[dict]:
        return self.read_counted()[0]

    def read_counted(self) -> tuple[list[dict], int]:
        """The records, and how many lines were skipped: cut short by a crash, not UTF-8, or not charlm's
        (DamagedFile when the file cannot be read at all, e.g. a folder in its place)."""
        try:
            text = readback.read_bytes(self.path, MAX_METRICS).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return [], 0
        except (OSError, readback.BadFile) as e:
            raise DamagedFile(self.path, e) from None
        records, skipped = [], 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if _is_record(record):
                records.append(record)
            elif line.strip():
                skipped += 1
        return records, skipped

    def append(self, record: dict) -> None:
        fsio.append_line(self.path, record)

    def rewrite(self, records: list[dict]) -> None:
        fsio.atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class StatusFile:
    """status.json of the run folder `folder`, and the run's state read from it, its lock and its checkpoint."""

    def __init__(self, folder: Path):
        self.folder, self.path = folder, folder / STATUS

    def write(self, state: str, **extra) -> None:
        """running (with our pid) / finished / interrupted, keeping facts written before (device, parameters)."""
        try:
            kept = self.read()
        except DamagedFile:
            kept = {}
        fsio.atomic_write_text(self.path, json.dumps({**kept, "state": state, "pid": os.getpid(), **extra}))

    def mark_interrupted(self) -> None:
        with contextlib.suppress(RunError):  # a full disk may refuse even this: the checkpoint is what matters
            self.write("interrupted")

    def read(self) -> dict:
        """status.json as data ({} when there is none); DamagedFile when it cannot be read as one."""
        try:
            status = readback.read_json(self.path, MAX_STATUS)
        except FileNotFoundError:
            return {}
        except (OSError, readback.BadFile) as e:
            raise DamagedFile(self.path, e) from None
        pid = status.get("pid") if isinstance(status, dict) else None
        if (
            not isinstance(status, dict)
            or status.get("state") not in STATES
            or not (pid is None or isinstance(pid, int) and not isinstance(pid, bool) and pid > 0)
        ):
            raise DamagedFile(self.path, readback.BadFile("not a charlm status"))
        return status

    def state(self, complete: bool = False) -> str:
        """running | finished | interrupted | empty | damaged. `complete`: all its epochs are in metrics.jsonl
        (for folders written before status.json existed)."""
        try:
            saved = self.read()
        except DamagedFile:
            return "damaged"
        if not saved:
            if not (self.folder / LAST).exists():
                return "empty"
            return "finished" if complete else "interrupted"
        if saved["state"] == "running":
            locked = run_lock.is_held(self.folder)  # the lock tells for sure; a pid may have been reused
            if not (locked if locked is not None else _alive(saved.get("pid"))):
                return "interrupted"  # killed without a chance to say so
        return saved["state"]


def _alive(pid: int | None) -> bool:
    """Whether process `pid` exists; asked only of a running run without a lock file, which on Windows means
    no trainer (filelock removes the file there on release, and charlm never ran there without the lock)."""
    return isinstance(pid, int) and fsio.pid_alive(pid) is True


def _is_record(record: object) -> bool:
    """A metrics line charlm wrote: an event (an init_from one with its fields), or an eval with its epoch and
    train loss, and its other figures numbers when present; `runs`, `info` and `plot` use them as such."""
    if not isinstance(record, dict):
        return False
    if "event" in record:
        return record["event"] != "init_from" or _is_parent(record) if isinstance(record["event"], str) else False
    numbers = ("val_loss", "step", "seconds", "epochs_done", "chars_per_s", "lr")
    return (
        _is_int(record.get("epoch"))
        and _is_number(record.get("train_loss"))
        and all(_is_number(record[key]) for key in numbers if key in record)
        and isinstance(record.get("stopped"), (str, type(None)))
    )


def _is_parent(record: dict) -> bool:
    """An init_from line as `runs` and `info` show it (training/init_from.py writes it)."""
    texts = ("path", "checkpoint", "source", "corpus", "corpus_sha256", "new_chars")
    best = record.get("best_val_loss")
    return (
        all(isinstance(record.get(key), str) for key in texts)
        and _is_int(record.get("parent_vocab_size"))
        and (best is None or _is_number(best))
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
