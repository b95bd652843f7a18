"""How fast this machine trains a model shape: a few timed training steps, kept in a per-user cache.

The cache ($XDG_CACHE_HOME/charlm/calibration.json, by default ~/.cache/charlm) holds one machine's speeds:
when the processor, thread count, GPU, PyTorch or charlm version differ from the ones it was measured on,
it is measured again. A speed is keyed by everything that changes it: device, precision, shape, batch x steps
and the vocabulary size rounded up to a power of two (the output head's width).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from charlm.autosize.rule import Shape
from charlm.config import ModelConfig
from charlm.files.machine import identity, read_cache, user_cache_dir, write_cache
from charlm.files.readback import finite_number
from charlm.model import CharRNN
from charlm.runtime.capability import autocast_dtype
from charlm.runtime.device import synchronize

WARMUP_STEPS = 2  # oneDNN picks and packs its kernels on the first calls
TIMED_STEPS = 3  # at least, and for at least TIMED_SECONDS: three steps of a small model vary by 30%
TIMED_SECONDS = 0.3
MAX_SPEED = 1e12  # chars/s: a cached speed above this (or not > 0) was not measured; it is measured again


def cache_path() -> Path:
    return user_cache_dir() / "calibration.json"


def machine() -> dict:
    """What a measured speed depends on, besides the model."""
    from charlm import __version__

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {**identity(), "cores": os.cpu_count(), "gpu": gpu, "charlm": __version__}


class Calibration:
    """Training speeds (chars/s) of model shapes on one device, measured once and cached."""

    def __init__(self, device: torch.device, precision: str, vocab_size: int, path: Path | None = None):
        self.device, self.precision, self.vocab_size = device, precision, vocab_size  # fp32 | bf16 | fp16
        self.path = path or cache_path()
        self.machine = machine()
        self.speeds = self._read()
        self.measured: list[str] = []  # the keys this calibration had to time

    def speed(self, shape: Shape, batch: int, steps: int) -> float:
        key = self.key(shape, batch, steps)
        if key not in self.speeds:
            self.speeds[key] = measure(
                shape,
                padded_vocab(self.vocab_size),
                batch=batch,
                steps=steps,
                device=self.device,
                precision=self.precision,
            )
            self.measured.append(key)
            self._write()
        return self.speeds[key]

    def key(self, shape: Shape, batch: int, steps: int) -> str:
        embed = "tied" if shape.embed is None else f"e{shape.embed}"
        return (
            f"{self.device.type}-{self.precision}-lstm{shape.layers}x{shape.hidden}-{embed}-"
            f"v{padded_vocab(self.vocab_size)}-b{batch}x{steps}"
        )

    def _read(self) -> dict:
        """The cached speeds of this machine; any speed that is not a plausible number of chars/s is measured
        again."""
        speeds = read_cache(self.path, self.machine, "speeds")
        return {k: float(v) for k, v in speeds.items() if finite_number(v, positive=True, limit=MAX_SPEED)}

    def _write(self) -> None:
        write_cache(self.path, self.machine, "speeds", self.speeds)


def padded_vocab(size: int) -> int:
    return 1 << max(5, (size - 1).bit_length())


def measure(shape: Shape, vocab_size: int, *, batch: int, steps: int, device: torch.device, precision: str) -> float:
    """chars/s of full training steps (forward, loss, backward, clip, Adam) on random ids. The caller's random
    generators are left as they were."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        return _timed_steps(shape, vocab_size, batch=batch, steps=steps, device=device, precision=precision)


def _timed_steps(
    shape: Shape, vocab_size: int, *, batch: int, steps: int, device: torch.device, precision: str
) -> float:
    tied = shape.embed is None
    cfg = ModelConfig(
        kind="lstm",
        input="embedding",
        embed_size=shape.hidden if tied else shape.embed,
        hidden_size=shape.hidden,
        num_layers=shape.layers,
        dropout=0.0,
        tie_weights=tied,
    )
    model = CharRNN(cfg, vocab_size).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ids = torch.randint(vocab_size, (batch, steps + 1), device=device)
    x, y = ids[:, :-1], ids[:, 1:].T.reshape(-1)
    dtype = autocast_dtype(precision)  # fp16's loss scaling is left out: a multiply and one sync per step

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits, _ = model(x)
            loss = F.cross_entropy(logits.reshape(-1, vocab_size).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    synchronize(device)
    started, done = time.perf_counter(), 0
    while done < TIMED_STEPS or time.perf_counter() - started < TIMED_SECONDS:
        step()
        done += 1
        synchronize(device)  # a GPU's queue would make the clock read early
    return batch * steps * done / (time.perf_counter() - started)
