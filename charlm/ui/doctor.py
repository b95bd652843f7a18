"""`charlm doctor`: what this machine gives charlm, for "why is it slow (or broken) here?" and bug reports.

A report is a list of sections, each a few named facts, and a list of problems (with the fix). The parts
that need no torch (versions, the processor, the cache and runs folders) are read without importing it, so a
broken or missing torch still gets a report that says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from charlm.errors import UsageError
from charlm.files.machine import cpu_model, user_cache_dir
from charlm.runtime import capability

PACKAGES = ("torch", "typer", "rich", "pyyaml", "numpy", "safetensors", "filelock")
MATMUL_SECONDS = 1.0  # per precision: a 2-second check in all
MATMUL_SIZE = 1024


@dataclass
class Report:
    sections: dict[str, dict[str, object]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**self.sections, "problems": self.problems}


def diagnose(*, matmul: bool = True) -> Report:
    """Every section of the report; `matmul=False` skips the timed check (about 2 s)."""
    report = Report()
    report.sections["versions"] = versions()
    report.sections["cpu"] = cpu()
    report.sections["folders"] = folders(report.problems)
    try:
        import torch  # noqa: F401
    except Exception as e:  # a missing or broken install: say so, and report the rest
        report.problems.append(
            f"torch cannot be imported ({type(e).__name__}: {e}): reinstall it, e.g. "
            "pip install torch==2.13.0 (see the README's set-up)"
        )
        return report
    report.sections["torch"] = torch_facts()
    if not report.sections["torch"]["cuda"] and shutil.which("nvidia-smi"):
        report.problems.append(
            "this machine has an NVIDIA GPU but this torch sees none (a CPU build, or a driver "
            "it cannot use): install a CUDA build of torch to train on the GPU"
        )
    if matmul:
        report.sections["matmul"] = matmul_speeds()
    return report


def versions() -> dict[str, object]:
    from charlm import __version__

    found: dict[str, object] = {
        "charlm": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu() -> dict[str, object]:
    flags = capability.cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": cpu_model(),
        "cores_usable": cores,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "avx2": "avx2" in flags,
        "flags_read": bool(flags),
    }


def folders(problems: list[str]) -> dict[str, object]:
    from charlm.data import builtins
    from charlm.store.layout import RUNS_ENV
    from charlm.store.run_dir import runs_root

    cache = builtins.data_dir()
    cached = sorted(
        b.name
        for b in builtins.BUILTINS.values()
        if not b.shipped and all(builtins.is_cached(r, cache) for r in b.files)
    )
    shipped = sorted(b.name for b in builtins.BUILTINS.values() if b.shipped)
    try:
        root = runs_root()
        writable = is_writable(root)
    except UsageError as e:  # a file or a symlink loop: said as a problem, with its fix
        root, writable = Path(os.environ.get(RUNS_ENV) or "runs"), False
        problems.append(str(e))
    else:
        if not writable:
            problems.append(
                f"the runs folder {root} is not writable: set CHARLM_RUNS_DIR or pass --run-dir to a "
                "folder you can write"
            )
    return {
        "user_cache": str(user_cache_dir()),
        "corpus_cache": str(cache),
        "corpora_built_in": shipped,
        "corpora_cached": cached,
        "runs_root": os.path.abspath(root),
        "runs_root_writable": writable,
    }


def is_writable(folder: Path) -> bool:
    """Whether charlm could create a file in `folder` (or, where it does not exist yet, in its first existing
    parent, where it would be made)."""
    existing = folder.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".charlm-doctor-"):
            return True
    except OSError:
        return False


def torch_facts() -> dict[str, object]:
    import torch

    cuda = [
        {
            "name": torch.cuda.get_device_name(i),
            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
        }
        for i in range(torch.cuda.device_count())
    ]
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    device = "cuda" if cuda else "mps" if mps else "cpu"
    auto = capability.resolve_precision("auto", device)
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return {
        "threads": torch.get_num_threads(),
        "cpu_capability": get_capability() if get_capability else None,
        "cpu_bf16_native": capability.cpu_bf16_native(),
        "cuda": cuda,
        "mps": mps,
        "default_device": device,
        "precision_auto": auto.name,
        "precision_why": auto.reason,
    }


def matmul_speeds() -> dict[str, float]:
    """GFLOP/s of a square CPU matmul in fp32 and bf16, about MATMUL_SECONDS each."""
    import torch

    speeds = {}
    for name, dtype in (("fp32_gflops", torch.float32), ("bf16_gflops", torch.bfloat16)):
        a = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
        a @ a  # the first call picks the kernel
        started, done = time.perf_counter(), 0
        while done < 2 or time.perf_counter() - started < MATMUL_SECONDS:
            a @ a
            done += 1
        gflops = 2 * MATMUL_SIZE**3 * done / (time.perf_counter() - started) / 1e9
        speeds[name] = float(f"{gflops:.3g}")  # 3 significant digits: a busy machine still shows a rate, not 0.0
    return speeds
