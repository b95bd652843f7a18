"""Data-parallel training on the CPU: 1 process against 2 torchrun/DDP processes (gloo), same global batch.

    python benchmarks/ddp_bench.py [--mb 10] [--batches 30] [--json PATH]

Writes a corpus of `--mb` MB (tiny shakespeare repeated, from $CHARLM_DATA_DIR or downloaded once) to a
temp folder and trains the same LSTM with the same global batch three ways: one process with all the
cores, one process with one thread, and two processes with one thread each under
`python -m torch.distributed.run --standalone --nproc_per_node 2` (the encoded corpus memory-mapped and
shared). Each run times `--batches` optimizer steps after a few warm-up steps and reports chars/s, and
the memory of its rank 0 at the end of the timed batches (peak RSS; anonymous memory, i.e. the process's
own; file-backed memory, i.e. libraries and the memory-mapped corpus pages touched, shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3  # batches before the clock starts: allocator and oneDNN set-up
MODEL = [
    "model.kind=lstm",
    "model.input=embedding",
    "model.embed_size=128",
    "model.hidden_size=256",
    "model.num_layers=1",
    "model.dropout=0.0",
    "model.tie_weights=false",
]
TRAIN = [
    "train.batch_size=64",
    "train.num_steps=64",
    "train.device=cpu",
    "train.epochs=1",
    "train.warmup_steps=0",
    "data.val_fraction=0",
    "sample.preview_every=0",
]


def make_corpus(path: Path, mb: float) -> Path:
    from charlm.data import fetch

    source = Path(fetch("tinyshakespeare")[0]).read_bytes()
    size = int(mb * 1_000_000)
    with open(path, "wb") as f:
        for _ in range(size // len(source) + 1):
            f.write(source)
    with open(path, "r+b") as f:
        f.truncate(size - size % 64)  # stay on whole lines' worth of ASCII: no character cut in half
    return path


def run(work: Path, corpus: Path, nproc: int, threads: int, batches: int) -> dict:
    """One timed run in fresh processes; returns rank 0's measurements."""
    worker = [
        str(Path(__file__).resolve()),
        "--worker",
        str(corpus),
        "--batches",
        str(batches),
        "--run-dir",
        str(work / f"run-{nproc}x{threads}"),
    ]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": str(threads),
        "CHARLM_DATA_DIR": str(work / "data"),
    }  # the encoded-corpus cache stays in the temp folder
    done = subprocess.run([sys.executable, *launcher, *worker], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run with {nproc} process(es) failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "processes": nproc, "threads": threads}


class Stop(Exception):
    """Raised by every rank at the same batch: the timing is done."""


def worker(corpus: Path, batches: int, run_dir: Path) -> None:
    import torch

    from charlm.config import load_config
    from charlm.events import SilentReporter
    from charlm.training import train

    class Clock(SilentReporter):
        def batch(self, done, loss):
            if done == WARMUP:
                self.started = time.perf_counter()
            elif done == WARMUP + batches:
                self.seconds = time.perf_counter() - self.started
                self.memory = _memory()  # while the corpus is loaded
                raise Stop

    config = load_config(
        REPO / "configs" / "tiny.yaml", [f"data.corpus={corpus}", "data.max_chars=null", *MODEL, *TRAIN]
    )
    clock = Clock()
    try:
        train(config, run_dir, clock)
    except Stop:
        pass
    if int(os.environ.get("RANK") or 0) == 0:
        chars = batches * config.train.batch_size * config.train.num_steps
        print(
            json.dumps(
                {
                    "chars_per_s": chars / clock.seconds,
                    "seconds": clock.seconds,
                    "chars": chars,
                    "torch_threads": torch.get_num_threads(),
                    **clock.memory,
                }
            )
        )


def _memory() -> dict:
    """Linux's figures (/proc, getrusage in KiB); `resource` imported here so the module imports anywhere."""
    import resource

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)

    def mb(key: str) -> float:
        return int(status[key].split()[0]) / 1024 if key in status else float("nan")

    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_anon_mb": mb("RssAnon"),
        "rss_file_mb": mb("RssFile"),
    }


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10.0, help="corpus size in MB (default 10)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run (default 30)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.batches, args.run_dir)
        return None
    sys.path.insert(0, str(REPO))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = make_corpus(work / "corpus.txt", args.mb)
        print(
            f"corpus {corpus.stat().st_size / 1e6:.1f} MB; {cores} cores; LSTM 1x256, embedding 128, global batch "
            f"64 x 64 steps; {args.batches} timed batches per run"
        )
        runs = [
            run(work, corpus, 1, cores, args.batches),
            run(work, corpus, 1, 1, args.batches),
            run(work, corpus, 2, 1, args.batches),
        ]
    for r in runs:
        print(
            f"{r['processes']} process(es) x {r['threads']} thread(s): {r['chars_per_s']:>9,.0f} chars/s   "
            f"rank 0 peak RSS {r['peak_rss_mb']:,.0f} MB, anonymous {r['rss_anon_mb']:,.0f} MB, "
            f"file-backed {r['rss_file_mb']:,.0f} MB"
        )
    figures = {
        "corpus_mb": args.mb,
        "cores": cores,
        "runs": runs,
        "two_over_one": runs[2]["chars_per_s"] / runs[0]["chars_per_s"],
        "two_over_one_thread": runs[2]["chars_per_s"] / runs[1]["chars_per_s"],
    }
    print(
        f"2 processes / 1 process with {cores} threads: {figures['two_over_one']:.2f}x; "
        f"/ 1 process with 1 thread: {figures['two_over_one_thread']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


if __name__ == "__main__":
    main()
