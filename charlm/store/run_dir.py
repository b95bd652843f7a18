"""A run folder: finding one (new, latest, resolve), its checkpoints (paths, saving, rotation) and the run's
config and vocabulary files. Its names are in layout.py; its marker and lock are `run.ownership`
(ownership.py); its logs are `run.metrics` and `run.status` (run_log.py).

Every file is published atomically (files.fsio), so a crash leaves the previous version whole.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from charlm.errors import CheckpointError, UsageError
from charlm.files import fsio
from charlm.store.layout import BEST, CONFIG, LAST, RUNS_ENV, VOCAB, check_which
from charlm.store.ownership import Ownership
from charlm.store.run_log import MetricsLog, StatusFile


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


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def ownership(self) -> Ownership:
        return Ownership(self.path)

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path)

    @property
    def status(self) -> StatusFile:
        return StatusFile(self.path)

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
            kept = [n for n in self.ownership.marker().get("kept", []) if n != name] + [name]
            for old in kept[:-keep_last]:  # only checkpoints this run wrote: the marker lists them
                with contextlib.suppress(OSError):
                    (self.path / old).unlink()
            self.ownership.update_marker(kept=kept[-keep_last:])
