"""Run folders and checkpoints: atomic writes, safe loads (no arbitrary unpickling).

A run folder holds config.yaml, vocab.json, metrics.jsonl, last.pt and best.pt. Every file is written
to a temporary file in the same folder, flushed, fsynced and renamed, so a crash leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import torch

from charlm.config import Config, from_dict
from charlm.data import Vocab
from charlm.errors import CheckpointError, ConfigError, RunError, UsageError
from charlm.model import CharRNN

FORMAT = "charlm-checkpoint"
VERSION = 1
LAST, BEST = "last.pt", "best.pt"
CONFIG, VOCAB, METRICS = "config.yaml", "vocab.json", "metrics.jsonl"
RUNS_ROOT = Path("runs")
# test hook: seconds to pause inside every write, so that a test's SIGKILL lands mid-write often
SLOW_WRITES = float(os.environ.get("CHARLM_SLOW_WRITES") or 0)
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, and run files should be as readable as any other


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temp file beside `path`, then fsync and rename it over `path`."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if SLOW_WRITES:
                time.sleep(SLOW_WRITES)
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise RunError(f"cannot write {path} ({e.strerror or e}): free disk space or fix the folder's "
                       "permissions; the previous file is untouched") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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


def serialize(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, payload: dict | bytes) -> None:
    data = payload if isinstance(payload, bytes) else serialize(payload)
    atomic_write(path, lambda f: f.write(data))


def save_training_checkpoint(run_dir: Path, payload: dict, is_best: bool, keep_last: int = 0) -> None:
    """Write best.pt (when it is the best) and then last.pt, from one serialisation.

    best.pt goes first: a crash between the two leaves last.pt at the previous position, and resuming
    from there recomputes the same epoch and writes the same best.pt again.
    """
    data = serialize(payload)
    if is_best:
        save_checkpoint(run_dir / BEST, data)
    save_checkpoint(run_dir / LAST, data)
    if keep_last > 0:
        save_checkpoint(run_dir / f"ckpt-e{payload['epoch']:04d}-b{payload['batch_in_epoch']:06d}.pt", data)
        for old in sorted(run_dir.glob("ckpt-e*-b*.pt"))[:-keep_last]:
            with contextlib.suppress(OSError):
                old.unlink()


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files of writes that a crash interrupted: never renamed, so never part of the run."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _first_line(error: Exception) -> str:
    return ((str(error) or type(error).__name__).splitlines() or [""])[0][:80]


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint on the CPU with torch's weights-only unpickler: tensors and plain data only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: train first (charlm train) or pass the right --run-dir")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds objects other than tensors and plain data: refusing to load it "
                              "(it may run code); use a checkpoint written by charlm") from None
    except Exception as e:  # torch.load raises many types on garbage; all mean the same to a user
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(e)}): it is truncated "
                              "or not a charlm file; use the other checkpoint of the run (best.pt / last.pt)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a charlm checkpoint: pass a run folder written by charlm train")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {payload.get('version')}, this charlm reads "
                              f"version {VERSION}: use a matching charlm release")
    return payload


def latest_run(root: Path = RUNS_ROOT) -> Path:
    """The run folder under `root` whose last checkpoint was written most recently."""
    candidates = [p.parent for p in Path(root).glob(f"*/{LAST}")]
    if not candidates:
        raise CheckpointError(f"no trained run under {root}/: run charlm train first, or pass --run-dir")
    return max(candidates, key=lambda d: (d / LAST).stat().st_mtime)


def resolve_run_dir(run_dir: Path | None) -> Path:
    if run_dir is None:
        return latest_run()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder {run_dir} not found: pass a folder made by charlm train")
    return run_dir


def load_model(run_dir: Path, which: str = "best", device: str | torch.device = "cpu"):
    """Rebuild the model, vocab and config of a run from one checkpoint: nothing else is needed."""
    if which not in ("best", "last"):
        raise CheckpointError(f"checkpoint {which!r} is not valid: use best or last")
    path = Path(run_dir) / (BEST if which == "best" else LAST)
    payload = load_checkpoint(path)
    try:
        config: Config = from_dict(payload["config"])
        vocab = Vocab(payload["vocab"])
        model = CharRNN(**payload["model_args"])
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as e:
        raise CheckpointError(f"{path} does not match this charlm's model ({_first_line(e)}): "
                              "retrain with this version") from None
    model.to(device).eval()
    return model, vocab, config, payload


def new_run_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"{name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{name}-{stamp}-{suffix}"
    return run_dir


def prepare_run_dir(run_dir: Path) -> None:
    """Make a folder for a new run. One with a checkpoint is refused; one without (a run that died before
    its first checkpoint) holds nothing worth keeping and is started over."""
    if (run_dir / LAST).exists():
        raise UsageError(f"run folder {run_dir} already holds a run: resume it with --resume, or pass a new --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / METRICS).unlink(missing_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create run folder {run_dir} ({e.strerror}): choose a writable --run-dir") from None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    # a line cut short by a crash mid-append is not a record: skip it
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def rewrite_metrics(run_dir: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(Path(run_dir) / METRICS, text)


def write_run_files(run_dir: Path, config_yaml: str, vocab: Vocab) -> None:
    atomic_write_text(run_dir / CONFIG, config_yaml)
    atomic_write_text(run_dir / VOCAB, vocab.to_json())
