"""Which fp32 kernel a generation step's matrix products use on this CPU: measured, not assumed.

A few-row fp32 product by a fixed matrix can run as oneDNN's packed linear or as a plain addmm against the
transposed matrix. Which is faster depends on the CPU: oneDNN's packed path was 1.1-1.2x the addmm on an
AMD EPYC (Zen 4) and 0.78x on an Intel Xeon with AMX. So each (matrix shape, rows) is timed both ways once
on this machine and the faster kept in the user cache ($XDG_CACHE_HOME/charlm/kernels.json, by default
~/.cache/charlm), keyed by the machine as autosize's calibration is. A cached choice keeps a machine's
generated text the same from run to run; on another machine it is measured again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.files.machine import identity, read_cache, user_cache_dir, write_cache

FP32_KERNELS = ("onednn", "dense")
TIMED_SECONDS = 0.02  # per kernel and round; three rounds, the best of each kernel counts
ROUNDS = 3


def cache_path() -> Path:
    return user_cache_dir() / "kernels.json"


def machine() -> dict:
    """The processor and torch release a cached choice holds for (the threads are in each choice's key)."""
    return {k: v for k, v in identity().items() if k != "threads"}


class KernelTable:
    """The fp32 kernel of each matrix shape on this machine: read from the cache, measured when missing."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_path()
        self.machine = machine()
        self.choices = self._read()
        self.measured: list[str] = []  # the keys this table had to time

    def fp32(self, make: Callable[[str], Callable], shape: tuple[int, int], rows: int) -> str:
        """The faster of FP32_KERNELS for x (rows, in) -> (rows, out); `make(kernel)` builds that projection."""
        key = self.key(shape, rows)
        if key not in self.choices:
            self.choices[key] = fastest({kernel: make(kernel) for kernel in FP32_KERNELS}, rows, shape[1])
            self.measured.append(key)
            self._write()
        return self.choices[key]

    @staticmethod
    def key(shape: tuple[int, int], rows: int) -> str:
        # the thread count is part of the key, not of the machine: one cache serves 1-thread and n-thread runs
        return f"{shape[0]}x{shape[1]}-r{rows}-t{torch.get_num_threads()}"

    def _read(self) -> dict:
        """The cached choices of this machine; any entry that names no known kernel is measured again."""
        choices = read_cache(self.path, self.machine, "fp32")
        return {k: v for k, v in choices.items() if isinstance(v, str) and v in FP32_KERNELS}

    def _write(self) -> None:
        write_cache(self.path, self.machine, "fp32", self.choices)


class FixedKernel:
    """A kernel named by the caller instead of measured: an exported graph (export --onnx) takes the plain
    product everywhere, since the packed oneDNN form exists only inside this process."""

    def __init__(self, kernel: str):
        if kernel not in FP32_KERNELS:
            raise ValueError(f"kernel {kernel!r} is not one of {FP32_KERNELS}")
        self.kernel = kernel

    def fp32(self, make: Callable[[str], Callable], shape: tuple[int, int], rows: int) -> str:
        return self.kernel


def fastest(candidates: dict[str, Callable], rows: int, in_features: int) -> str:
    """The candidate that multiplies a (rows, in_features) input fastest, by calls per second."""
    # a generator of its own: measuring must not move the caller's random state (an unseeded sample's)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(0))
    best = dict.fromkeys(candidates, 0.0)
    for _ in range(ROUNDS):  # interleaved: a burst of load on the machine hits both kernels alike
        for name, project in candidates.items():
            best[name] = max(best[name], calls_per_second(project, x))
    return max(best, key=best.get)


def calls_per_second(project: Callable, x: torch.Tensor) -> float:
    project(x)  # the first call sets oneDNN up
    started, done = time.perf_counter(), 0
    while done < 3 or time.perf_counter() - started < TIMED_SECONDS:
        project(x)
        done += 1
    return done / (time.perf_counter() - started)
