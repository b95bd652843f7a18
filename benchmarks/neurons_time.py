"""Time `charlm neurons` on a text of N characters, beside `charlm perplexity` on the same text.

    .venv/bin/python benchmarks/neurons_time.py --run-dir runs/shakespeare-cpu            # 100,000 chars of val
    .venv/bin/python benchmarks/neurons_time.py --run-dir RUN --file some.txt --chars 50000

The text is the first --chars characters of the run's val split (or of --file), written to a temporary
file so both commands read the same characters. Each is timed end to end as the command runs it (loading
the checkpoint, reading the text, the pass over it; neurons also ranks every unit against every built-in
feature and writes the page). Perplexity is the reference: the same model forward over the same text, so
neurons / perplexity says what recording and ranking the units add. The two alternate --repeat times and
the fastest of each counts: on a shared machine the slower ones measure the other processes. Prints one
JSON object (every time in `runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from charlm import data  # noqa: E402
from charlm.analysis import neurons  # noqa: E402
from charlm.evaluate import TextSource, score_run  # noqa: E402
from charlm.store import checkpoint  # noqa: E402
from charlm.store.run_dir import RunDir  # noqa: E402
from charlm.ui import pages  # noqa: E402


def text_of(run_dir: Path, file: Path | None, chars: int) -> str:
    if file is not None:
        return Path(file).read_text(encoding="utf-8")[:chars]
    saved = checkpoint.load(RunDir(run_dir).checkpoint("best"))
    corpus = data.load_corpus(saved.config.data)
    return neurons.decode(corpus.vocab.chars, corpus.val[:chars])


def seconds_since(started: float) -> float:
    """Elapsed seconds to 4 significant digits: rounding to a fixed number of decimals made a fast machine's
    time 0.0 (and the ratio a division by zero)."""
    return float(f"{time.perf_counter() - started:.4g}")


def load_average() -> float | None:
    """The 1-minute load average (None on Windows, which has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--file", type=Path, help="take the text from this file, not the val split")
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {"neurons": [], "perplexity": []}
    load = [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(text_of(args.run_dir, args.file, args.chars), encoding="utf-8")
        for _ in range(args.repeat):
            started = time.perf_counter()
            score_run(args.run_dir, "best", TextSource(file=text_file), device="cpu")
            runs["perplexity"].append(seconds_since(started))
            started = time.perf_counter()
            report = neurons.analyse(args.run_dir, "best", TextSource(file=text_file), device="cpu")
            pages.write(Path(tmp) / "neurons.html", pages.render("neurons", neurons.page_data(report)))
            runs["neurons"].append(seconds_since(started))
            load.append(load_average())
    neurons_seconds, perplexity_seconds = min(runs["neurons"]), min(runs["perplexity"])
    result = {
        "chars": report.chars,
        "units": len(report.units),
        "model": report.model,
        "neurons_seconds": neurons_seconds,
        "perplexity_seconds": perplexity_seconds,
        "neurons_over_perplexity": round(neurons_seconds / perplexity_seconds, 3),
        "runs": runs,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_1min": [x if x is None else round(x, 2) for x in load],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
