"""The fp32 kernel of generation, measured on this machine: one sequence (and 32) with each kernel forced,
with the one charlm chooses (charlm/runtime/kernels.py), and with version 1's step (faststep_v1.py), in one run.

    python benchmarks/kernel_choice.py [--json PATH] [--quick]

The model is the benchmark's LSTM 2x512 (embedding 128, tiny shakespeare's 65 characters), untrained: the
speed of a step does not depend on its weights. The kernels take turns over three rounds and each keeps its
median (one sequence is latency-bound, and a shared machine's latency drifts). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faststep_v1 import FastStepV1  # noqa: E402

from charlm.config import ModelConfig  # noqa: E402
from charlm.data import Vocab  # noqa: E402
from charlm.files.machine import cpu_model  # noqa: E402
from charlm.generation import fast_step as step_module  # noqa: E402
from charlm.generation.sampling import generate  # noqa: E402
from charlm.model import CharRNN  # noqa: E402
from charlm.runtime import kernels  # noqa: E402

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny shakespeare's 65


def rate(model, vocab, way: str, num_samples: int, length: int, cache: Path) -> float:
    """chars/s of `generate` with the fp32 step run `way`: v1, chosen, or a kernel forced."""
    if way == "v1":
        patch = mock.patch.object(step_module, "FastStep", lambda model, weights, rows: FastStepV1(model))
    elif way == "chosen":
        patch = mock.patch.object(kernels, "cache_path", lambda: cache)
    else:
        patch = mock.patch.object(step_module, "KernelTable", lambda: forced(way))
    options = {"temperature": 1.0, "seed": 0} if num_samples > 1 else {}
    with patch:
        generate(model, vocab, "ROMEO:", 50, num_samples=num_samples, **options)  # warm-up (and the choice)
        started = time.perf_counter()
        generate(model, vocab, "ROMEO:", length, num_samples=num_samples, **options)
        return num_samples * length / (time.perf_counter() - started)


def forced(kernel: str) -> kernels.KernelTable:
    table = kernels.KernelTable(Path(tempfile.mkdtemp()) / "kernels.json")
    table.fp32 = lambda make, shape, rows: kernel
    return table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="one round of 300 characters (a smoke test)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="lstm", input="embedding", embed_size=128, hidden_size=512, num_layers=2, dropout=0.0, tie_weights=False
    )
    model, vocab = CharRNN(cfg, len(CHARS)).eval(), Vocab(CHARS)
    length, rounds = (300, 1) if args.quick else (2000, 3)
    ways = ("v1", "dense", "onednn", "chosen")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "kernels.json"  # a new cache: the choice is measured in this run
        runs = [{(w, n): rate(model, vocab, w, n, length, cache) for w in ways for n in (1, 32)} for _ in range(rounds)]
        chosen = sorted(set(json.loads(cache.read_text())["fp32"].values()))
    figures = {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "length": length,
        "rounds": rounds,
        "chosen_kernels": chosen,
    }
    for w in ways:
        for n in (1, 32):
            figures[f"{w}_{n}_chars_per_s"] = round(statistics.median(r[w, n] for r in runs), 1)
    for n in (1, 32):
        figures[f"chosen_over_v1_{n}"] = round(figures[f"chosen_{n}_chars_per_s"] / figures[f"v1_{n}_chars_per_s"], 3)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return figures


if __name__ == "__main__":
    main()
