"""How much a run's samples copy from its training split, against the chance overlap of text it never saw.

    python benchmarks/novelty_report.py RUN_DIR            # 20 samples of 500 chars at 0.5, 0.8 and 1.0
    python benchmarks/novelty_report.py RUN_DIR --samples 5 --length 200 --temperatures 0.8

For each temperature, `--samples` samples of `--length` characters (no prefix; seeded), and as the baseline as
many random windows of the same length from the run's val split (text the model did not train on: what any
text of this kind shares with the training split by chance). Each row: the longest span found in training
(mean, median, max over the samples) and the mean share of 16- and 32-character substrings found in training.
The first line says how long the novelty index took to read or build, and its size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import charlm
from charlm.analysis import novelty_index
from charlm.data import load_corpus


def row(name: str, reports: list[dict]) -> str:
    longest = [r["longest"]["length"] for r in reports]
    share = {k: statistics.mean(r["shares"][k] for r in reports if r["shares"][k] is not None) for k in ("16", "32")}
    return (
        f"{name:<18} {len(reports):>4} {statistics.mean(longest):>9.1f} {statistics.median(longest):>9.1f} "
        f"{max(longest):>6} {share['16']:>9.1%} {share['32']:>9.1%}"
    )


def val_windows(model: charlm.Model, count: int, length: int, seed: int) -> list[str]:
    """`count` random windows of `length` characters of the run's val split."""
    val = load_corpus(model.config.data, vocab=model.vocab).val
    if len(val) < length:
        raise SystemExit(f"the val split has {len(val):,} characters: fewer than --length {length}")
    starts = np.random.default_rng(seed).integers(0, len(val) - length + 1, count)
    chars = np.array(model.vocab.chars)
    return ["".join(chars[val[s : s + length].numpy()].tolist()) for s in starts.tolist()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--temperatures", default="0.5,0.8,1.0")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = charlm.load(args.run_dir)
    started = time.perf_counter()
    model.novelty("")  # reads the index, or builds and keeps it
    path = novelty_index.index_path(model.path, novelty_index.index_key(model.checkpoint))
    size = f"{path.stat().st_size / 1e6:.1f} MB in {path}" if path.exists() else "not kept"
    print(f"novelty index: {time.perf_counter() - started:.2f} s to read or build, {size}")
    print(f"{'text':<18} {'n':>4} {'longest':>9} {'median':>9} {'max':>6} {'16-share':>9} {'32-share':>9}")
    for temperature in (float(t) for t in args.temperatures.split(",")):
        # prefix None: each sample starts at a new line, as `charlm generate` without --prefix
        texts = model.samples(None, args.length, args.samples, temperature=temperature, seed=args.seed)
        print(row(f"temperature {temperature:g}", [model.novelty(t) for t in texts]), flush=True)
    windows = val_windows(model, args.samples, args.length, args.seed)
    print(row("val windows", [model.novelty(t) for t in windows]))


if __name__ == "__main__":
    main()
