"""This machine as charlm's caches see it: the per-user cache folder and what a measured speed depends on."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from charlm.errors import RunError
from charlm.files.fsio import atomic_write_text
from charlm.files.readback import KIB, MIB, BadFile, read_json

MAX_CACHE_BYTES = 4 * MIB  # an entry is under 100 bytes: tens of thousands of measurements


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/charlm, by default ~/.cache/charlm: measurements that belong to this machine."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlm"


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo's model name where there is one)."""
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def identity() -> dict:
    """What a CPU measurement depends on besides the work: the processor, torch's threads, the torch release."""
    import torch

    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def read_cache(path: Path, machine: dict, section: str) -> dict:
    """The entries of `section` in a cache of measurements written on `machine`; {} when the file is missing,
    is not a bounded regular JSON file, or belongs to another machine (each entry's value the caller checks)."""
    try:
        saved = read_json(path, MAX_CACHE_BYTES)
    except (OSError, BadFile):
        return {}
    if not isinstance(saved, dict) or saved.get("machine") != machine:
        return {}  # another machine's (or another version's) measurements: measure again
    entries = saved.get(section)
    return {k: v for k, v in entries.items() if len(k) <= KIB} if isinstance(entries, dict) else {}


def write_cache(path: Path, machine: dict, section: str, entries: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"machine": machine, section: entries}, indent=1))
    except (OSError, RunError):  # atomic_write_text reports an OSError as a RunError
        pass  # a read-only home: measure again next time, work all the same
