"""A run folder: its layout, finding one, and its bookkeeping files (metrics.jsonl, status.json).

    runs/NAME-YYYYmmdd-HHMMSS/
        config.yaml     the run's whole config (what --resume reads)
        vocab.json      the characters, in id order
        metrics.jsonl   one JSON line per evaluation, plus {"event": ...} lines (resume, final)
        status.json     running (with the pid) | finished | interrupted
        last.pt         the newest checkpoint; best.pt the one with the lowest monitored loss
        ckpt-eEEEE-bBBBBBB.pt   older checkpoints, with train.keep_last

Every file is published atomically (fsio), so a crash leaves the previous version whole.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from charlm import fsio
from charlm.errors import CheckpointError, RunError, UsageError

LAST, BEST = "last.pt", "best.pt"
CONFIG, VOCAB, METRICS, STATUS = "config.yaml", "vocab.json", "metrics.jsonl", "status.json"
RUNS_ROOT = Path("runs")
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
    def new(cls, name: str, root: Path = RUNS_ROOT) -> RunDir:
        """A fresh folder name under `root`: NAME-TIME, with a suffix if that exists."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path(root) / f"{name}-{stamp}-{suffix}"
        return cls(path)

    @classmethod
    def latest(cls, root: Path = RUNS_ROOT) -> RunDir:
        """The run under `root` whose last checkpoint was written most recently."""
        candidates = [p.parent for p in Path(root).glob(f"*/{LAST}")]
        if not candidates:
            raise CheckpointError(f"no trained run under {root}/: run charlm train first, or pass --run-dir")
        return cls(max(candidates, key=lambda d: (d / LAST).stat().st_mtime))

    @classmethod
    def resolve(cls, path: Path | None) -> RunDir:
        """--run-dir as given, or the latest run when it is not."""
        if path is None:
            return cls.latest()
        if not Path(path).is_dir():
            raise CheckpointError(f"run folder {path} not found: pass a folder made by charlm train")
        return cls(Path(path))

    def checkpoint(self, which: str) -> Path:
        if which not in CHECKPOINTS:
            raise CheckpointError(f"checkpoint {which!r} is not valid: use best or last")
        return self.path / (BEST if which == "best" else LAST)

    # --- a new run's folder -----------------------------------------------------------------------

    def prepare_new(self) -> None:
        """Make the folder for a new run. One with a checkpoint is refused; one without (a run that died
        before its first checkpoint) holds nothing worth keeping and is started over."""
        if (self.path / LAST).exists():
            raise UsageError(f"run folder {self.path} already holds a run: resume it with --resume, "
                             "or pass a new --run-dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / METRICS).unlink(missing_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create run folder {self.path} ({e.strerror}): choose a writable --run-dir") \
                from None

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
            fsio.atomic_write_bytes(self.path / f"ckpt-e{epoch:04d}-b{batch:06d}.pt", data)
            for old in sorted(self.path.glob("ckpt-e*-b*.pt"))[:-keep_last]:
                with contextlib.suppress(OSError):
                    old.unlink()

    # --- metrics.jsonl ----------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        path = self.path / METRICS
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a crash is not a record
                records.append(json.loads(line))
        return records

    def append_metrics(self, record: dict) -> None:
        append_line(self.path / METRICS, record)

    def rewrite_metrics(self, records: list[dict]) -> None:
        fsio.atomic_write_text(self.path / METRICS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    # --- status.json ------------------------------------------------------------------------------

    def write_status(self, status: str, **extra) -> None:
        """running (with our pid) / finished / interrupted: what `charlm runs` shows."""
        fsio.atomic_write_text(self.path / STATUS, json.dumps({"state": status, "pid": os.getpid(), **extra}))

    def mark_interrupted(self) -> None:
        with contextlib.suppress(RunError):  # a full disk may refuse even this: the checkpoint is what matters
            self.write_status("interrupted")

    def read_status(self) -> dict:
        path = self.path / STATUS
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def status(self, complete: bool = False) -> str:
        """The run's status; `complete`: all its epochs are in metrics.jsonl (for folders written before
        status.json existed)."""
        saved = self.read_status()
        if not saved:
            if not (self.path / LAST).exists():
                return "empty"
            return "finished" if complete else "interrupted"
        if saved["state"] == "running" and not _alive(saved.get("pid")):
            return "interrupted"  # killed without a chance to say so
        return saved["state"]


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line with a single write, then fsync: a reader never sees half a record."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunError(f"cannot append to {path} ({e.strerror or e}): free disk space or fix permissions") from None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
