"""The novelty index's cost: build time, file size and read-back time of the training split's suffix array, and
the time of one 500-character report, for tiny shakespeare, PTB-char and a synthetic 100 MB text.

    python benchmarks/novelty_index.py                       # tinyshakespeare, ptb-char, 100 MB synthetic
    python benchmarks/novelty_index.py tinyshakespeare FILE  # built-in names or text files
    python benchmarks/novelty_index.py --synthetic-mb 0      # no synthetic text

ptb-char needs its files (CHARLM_DATA_DIR, or `charlm data fetch ptb-char`). The synthetic text is tiny
shakespeare's lines, shuffled and mutated at random (1% of characters replaced), repeated to the size asked,
written to a temporary folder that is removed afterwards (never into the repository). Run it on a quiet machine:
the figures are wall-clock times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from charlm.analysis import novelty, novelty_index
from charlm.config import DataConfig
from charlm.data import load_corpus

MB = 1_000_000


def synthetic(folder: Path, megabytes: float, seed: int = 0) -> Path:
    """A text of about `megabytes` MB: tiny shakespeare's lines shuffled, 1% of characters replaced by another
    of its characters, block after block (each block shuffled and mutated anew)."""
    rng = np.random.default_rng(seed)
    shakespeare = load_corpus(DataConfig(corpus="tinyshakespeare", val_fraction=0))
    lines = "".join(np.array(shakespeare.vocab.chars)[shakespeare.train.numpy()].tolist()).splitlines(keepends=True)
    alphabet = np.array(sorted(set("".join(lines))))
    path = folder / f"synthetic-{megabytes:g}mb.txt"
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < megabytes * MB:
            block = np.array(list("".join(lines[i] for i in rng.permutation(len(lines)))))
            hit = rng.random(len(block)) < 0.01
            block[hit] = rng.choice(alphabet, int(hit.sum()))
            text = "".join(block.tolist())[: int(megabytes * MB) - written]
            written += len(text.encode("utf-8"))
            out.write(text)
    return path


def measure(corpus: str) -> dict:
    """Build, write, read back and query the index of `corpus`'s training split."""
    loaded = load_corpus(DataConfig(corpus=corpus, val_fraction=0.1))
    vocab, train = loaded.vocab, loaded.train.numpy()
    newline = vocab.index.get("\n")
    started = time.perf_counter()
    index = novelty_index.sort_suffixes(train, len(vocab), newline)
    built = time.perf_counter() - started
    data = novelty_index.to_bytes(index, "benchmark")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.safetensors"
        path.write_bytes(data)
        started = time.perf_counter()
        novelty_index.read_index(path, key="benchmark", vocab_size=len(vocab), newline=newline)
        read = time.perf_counter() - started
    val = loaded.val if len(loaded.val) >= 500 else loaded.train
    window = "".join(vocab.chars[i] for i in val[:500].tolist())
    lookup = vocab.lookup_table().numpy().astype(np.int64)
    started = time.perf_counter()
    novelty.novelty(index, window, lookup)
    query = time.perf_counter() - started
    return {
        "corpus": corpus,
        "chars": len(train),
        "build_s": built,
        "bytes": len(data),
        "read_s": read,
        "query_s": query,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpora", nargs="*", default=["tinyshakespeare", "ptb-char"], help="built-in names or files")
    parser.add_argument("--synthetic-mb", type=float, default=100, help="size of the synthetic text (0: none)")
    args = parser.parse_args(argv)
    heads = f"{'train chars':>12} {'build s':>8} {'file MB':>8} {'B/char':>7} {'read s':>7} {'500-char query s':>17}"
    print(f"{'corpus':<28} {heads}")
    with tempfile.TemporaryDirectory(prefix="charlm-novelty-") as folder:
        corpora = list(args.corpora)
        if args.synthetic_mb > 0:
            corpora.append(str(synthetic(Path(folder), args.synthetic_mb)))
        for corpus in corpora:
            row = measure(corpus)
            name = Path(corpus).name if "/" in corpus else corpus
            print(
                f"{name:<28} {row['chars']:>12,} {row['build_s']:>8.2f} {row['bytes'] / MB:>8.1f} "
                f"{row['bytes'] / row['chars']:>7.2f} {row['read_s']:>7.3f} {row['query_s']:>17.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
