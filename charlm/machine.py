"""This machine as charlm's caches see it: the per-user cache folder and what a measured speed depends on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/charlm, by default ~/.cache/charlm: measurements that belong to this machine."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charlm"


def cpu_model() -> str:
    """The processor's name (/proc/cpuinfo's model name where there is one)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def identity() -> dict:
    """What a CPU measurement depends on besides the work: the processor, torch's threads, the torch release."""
    import torch

    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}
