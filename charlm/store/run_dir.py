"""A run folder: its layout, finding one, and its bookkeeping files (metrics.jsonl, status.json).

    runs/NAME-YYYYmmdd-HHMMSS/
        run.json        the marker written first: this folder is a charlm run (its id, the checkpoints it kept)
        .lock           held by the one process that trains in the folder (runlock: flock / LockFileEx)
        .lock.pid       that process's id, for the message a second trainer gets
        config.yaml     the run's whole config (what --resume reads)
        vocab.json      the characters, in id order
        metrics.jsonl   one JSON line per evaluation, plus {"event": ...} lines (resume, final)
        status.json     running (with the pid) | finished | interrupted
        last.pt         the newest checkpoint; best.pt the one with the lowest monitored loss
        ckpt-eEEEE-bBBBBBB.pt   older checkpoints, with train.keep_last

Every file is published atomically (fsio), so a crash leaves the previous version whole. charlm writes
only into a folder that is new, empty or marked as its own, deletes only checkpoints it wrote there, and
lets one trainer at a time in (an OS lock, released by the kernel when the process dies).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from charlm.errors import CheckpointError, RunError, UsageError
from charlm.files import fsio, readback
from charlm.store import run_lock as runlock
from charlm.store.run_lock import HOLDER, LOCK, RunLock

LAST, BEST = "last.pt", "best.pt"
CONFIG, VOCAB, METRICS, STATUS = "config.yaml", "vocab.json", "metrics.jsonl", "status.json"
MARKER = "run.json"
MARKER_FORMAT = "charlm-run"
KEPT_NAME = re.compile(r"ckpt-e\d{4,}-b\d{6,}\.pt")  # the only names run.json's "kept" may list: they get deleted
STATES = ("running", "finished", "interrupted")  # status.json's "state"
MAX_BOOKKEEPING = readback.MIB  # run.json and status.json: charlm writes a few hundred bytes
MAX_METRICS = 256 * readback.MIB  # a line per eval (~400 bytes): over half a million evals
RUNS_ENV = "CHARLM_RUNS_DIR"  # where new runs go and where `runs` and the latest run are looked for


def runs_root() -> Path:
    """$CHARLM_RUNS_DIR (which --runs-root sets), else ./runs: a folder, or nothing yet (the first run makes it)."""
    return check_runs_root(Path(os.environ.get(RUNS_ENV) or "runs"), f"--runs-root / ${RUNS_ENV}")


def check_runs_root(root: Path, named_by: str, must_exist: bool = False) -> Path:
    """`root` when it is a folder (or, unless `must_exist`, not there yet); else a UsageError naming it: a
    file, a symlink loop or a path through a file is no place to keep or find runs."""
    try:
        info = root.stat()
    except FileNotFoundError:
        if must_exist:
            raise UsageError(
                f"the runs folder {root} ({named_by}) not found: pass the folder that holds your run folders"
            ) from None
        return root
    except (OSError, RuntimeError) as e:  # ELOOP, ENOTDIR, EACCES, a name too long
        reason = getattr(e, "strerror", None) or str(e)
        raise UsageError(
            f"the runs folder {root} ({named_by}) cannot be used ({reason}): point it at a folder"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(
            f"the runs folder {root} ({named_by}) is not a folder: point it at a folder (or at a path "
            "where one can be made)"
        )
    return root


CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # --- finding one ------------------------------------------------------------------------------

    @classmethod
    def new(cls, name: str, root: Path | None = None) -> RunDir:
        """A fresh folder name under `root` (default runs_root()): NAME-TIME, with a suffix if that exists."""
        root = root if root is not None else runs_root()
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path(root) / f"{name}-{stamp}-{suffix}"
        return cls(path)

    @classmethod
    def latest(cls, root: Path | None = None) -> RunDir:
        """The run under `root` (default runs_root()) whose last checkpoint was written most recently."""
        root = root if root is not None else runs_root()
        candidates = [p.parent for p in Path(root).glob(f"*/{LAST}")]
        if not candidates:
            raise CheckpointError(f"no trained run under {root}/: run charlm train first, or pass --run-dir")
        return cls(max(candidates, key=lambda d: (d / LAST).stat().st_mtime))

    @classmethod
    def resolve(cls, path: Path | None, root: Path | None = None) -> RunDir:
        """--run-dir as given, or the latest run under `root` when it is not."""
        if path is None:
            return cls.latest(root)
        if not Path(path).is_dir():
            raise CheckpointError(f"run folder {path} not found: pass a folder made by charlm train")
        return cls(Path(path))

    def checkpoints_newest_first(self) -> list[Path]:
        """The run's other checkpoints, to fall back on when last.pt is damaged: the kept copies, then best.pt."""
        return sorted(self.path.glob("ckpt-e*-b*.pt"), reverse=True) + [self.path / BEST]

    def checkpoint(self, which: str) -> Path:
        check_which(which)
        return self.path / (BEST if which == "best" else LAST)

    # --- a new run's folder -----------------------------------------------------------------------

    def check_new(self) -> None:
        """Refuse, touching nothing, a folder a new run may not use: one holding anything charlm did not write
        there, a run (resume it instead), a run whose last.pt is gone but whose other checkpoints are not
        (resume from best.pt instead); `/`, the home folder and the working directory."""
        refuse_special_folder(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"run folder {self.path} is a file: pass a folder with --run-dir")
        if self.path.is_dir():
            self._check_reusable()

    def prepare_new(self) -> None:
        """Check the folder again (now that we hold its lock), clear what a run that died before its first
        checkpoint left, and create it."""
        self.check_new()
        if self.path.is_dir():
            for name in (METRICS, STATUS):  # a run that died before its first checkpoint: nothing worth keeping
                (self.path / name).unlink(missing_ok=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"cannot create run folder {self.path} ({e.strerror}): choose a writable --run-dir"
            ) from None

    def _check_reusable(self) -> None:
        present = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK, HOLDER))
        if not present:
            return
        if (self.path / LAST).exists():  # a run, maybe from before markers existed: --resume checks it
            raise UsageError(
                f"run folder {self.path} already holds a run: resume it with --resume, or pass a new --run-dir"
            )
        if not self.is_marked():
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise UsageError(
                f"run folder {self.path} holds files charlm did not write ({shown}): pass a new or empty --run-dir"
            )
        if any(name.endswith(".pt") for name in present):
            raise UsageError(
                f"run folder {self.path} holds a run whose {LAST} is gone: continue it from its best "
                "checkpoint with --resume-from best, or pass a new --run-dir"
            )

    def mark(self) -> None:
        """Write the marker that makes this folder a charlm run (first, before any other file)."""
        marker = {"format": MARKER_FORMAT, "id": uuid.uuid4().hex, "created": datetime.now().isoformat(), "kept": []}
        fsio.atomic_write_text(self.path / MARKER, json.dumps(marker))

    def is_marked(self) -> bool:
        return self._marker().get("format") == MARKER_FORMAT

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunLock]:
        """Hold the folder's lock while a trainer works in it; a second trainer is refused at once (runlock)."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"run folder {self.path} is a file: pass a folder with --run-dir")
        with runlock.hold(self.path) as held:
            yield held

    def is_locked(self) -> bool | None:
        """Whether a trainer holds the folder now (None: the folder has no lock file, an older run)."""
        return runlock.is_held(self.path)

    def write_run_files(self, config_yaml: str, vocab_json: str) -> None:
        fsio.atomic_write_text(self.path / CONFIG, config_yaml)
        fsio.atomic_write_text(self.path / VOCAB, vocab_json)

    def save_checkpoint(self, data: bytes, is_best: bool, keep_last: int = 0, position: tuple[int, int] = (0, 0)):
        """Write best.pt (when it is the best) and then last.pt, from one serialisation.

        best.pt goes first: a crash between the two leaves last.pt at the previous position, and resuming
        from there recomputes the same evaluation and writes the same best.pt again. With keep_last, a copy
        named by (epoch, batch) `position` is kept too, and the oldest beyond keep_last are removed.
        """
        if is_best:
            fsio.atomic_write_bytes(self.path / BEST, data)
        fsio.atomic_write_bytes(self.path / LAST, data)
        if keep_last > 0:
            epoch, batch = position
            name = f"ckpt-e{epoch:04d}-b{batch:06d}.pt"
            fsio.atomic_write_bytes(self.path / name, data)
            kept = [n for n in self._marker().get("kept", []) if n != name] + [name]
            for old in kept[:-keep_last]:  # only checkpoints this run wrote: the marker lists them
                with contextlib.suppress(OSError):
                    (self.path / old).unlink()
            self._update_marker(kept=kept[-keep_last:])

    def _marker(self) -> dict:
        """run.json as data ({} when it is missing or not charlm's); "kept" holds only checkpoint names, since
        those files get deleted: a name like ../x or /home/x is dropped."""
        try:
            marker = readback.read_json(self.path / MARKER, MAX_BOOKKEEPING)
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

    def _update_marker(self, **values) -> None:
        marker = self._marker() or {"format": MARKER_FORMAT, "id": uuid.uuid4().hex}
        fsio.atomic_write_text(self.path / MARKER, json.dumps({**marker, **values}))

    # --- metrics.jsonl ----------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        return self.read_metrics_counted()[0]

    def read_metrics_counted(self) -> tuple[list[dict], int]:
        """The records of metrics.jsonl, and how many lines were skipped: cut short by a crash, not UTF-8,
        or not charlm's (DamagedFile when the file cannot be read at all, e.g. a folder in its place)."""
        path = self.path / METRICS
        try:
            text = readback.read_bytes(path, MAX_METRICS).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return [], 0
        except (OSError, readback.BadFile) as e:
            raise DamagedFile(path, e) from None
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

    def append_metrics(self, record: dict) -> None:
        fsio.append_line(self.path / METRICS, record)

    def rewrite_metrics(self, records: list[dict]) -> None:
        fsio.atomic_write_text(self.path / METRICS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    # --- status.json ------------------------------------------------------------------------------

    def write_status(self, status: str, **extra) -> None:
        """running (with our pid) / finished / interrupted, keeping facts written before (device, parameters)."""
        try:
            kept = self.read_status()
        except DamagedFile:
            kept = {}
        fsio.atomic_write_text(self.path / STATUS, json.dumps({**kept, "state": status, "pid": os.getpid(), **extra}))

    def mark_interrupted(self) -> None:
        with contextlib.suppress(RunError):  # a full disk may refuse even this: the checkpoint is what matters
            self.write_status("interrupted")

    def read_status(self) -> dict:
        """status.json as data ({} when there is none); DamagedFile when it cannot be read as one."""
        path = self.path / STATUS
        try:
            status = readback.read_json(path, MAX_BOOKKEEPING)
        except FileNotFoundError:
            return {}
        except (OSError, readback.BadFile) as e:
            raise DamagedFile(path, e) from None
        pid = status.get("pid") if isinstance(status, dict) else None
        if (
            not isinstance(status, dict)
            or status.get("state") not in STATES
            or not (pid is None or isinstance(pid, int) and not isinstance(pid, bool) and pid > 0)
        ):
            raise DamagedFile(path, readback.BadFile("not a charlm status"))
        return status

    def status(self, complete: bool = False) -> str:
        """running | finished | interrupted | empty | damaged. `complete`: all its epochs are in metrics.jsonl
        (for folders written before status.json existed)."""
        try:
            saved = self.read_status()
        except DamagedFile:
            return "damaged"
        if not saved:
            if not (self.path / LAST).exists():
                return "empty"
            return "finished" if complete else "interrupted"
        if saved["state"] == "running":
            locked = self.is_locked()  # the lock tells for sure; a pid may have been reused by another process
            if not (locked if locked is not None else _alive(saved.get("pid"))):
                return "interrupted"  # killed without a chance to say so
        return saved["state"]


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


class DamagedFile(RunError):
    """A bookkeeping file of a run folder that cannot be read: shown as damaged, never fatal to the others."""

    def __init__(self, path: Path, error: Exception):
        super().__init__(
            f"{path} is damaged ({type(error).__name__}): move it aside to go on; the checkpoints are not affected"
        )
        self.path = path


def check_which(which: object) -> None:
    if not isinstance(which, str) or which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint {which!r} is not valid: use best or last")


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


def _alive(pid: int | None) -> bool:
    """Whether process `pid` exists; asked only of a running run without a lock file, which on Windows means
    no trainer (filelock removes the file there on release, and charlm never ran there without the lock)."""
    return isinstance(pid, int) and fsio.pid_alive(pid) is True
