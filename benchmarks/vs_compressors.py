"""charlm against the compressors on held-out text (issue #43): for each run, a split scored by the network
alone, the counts alone, the mix, and with dynamic evaluation the network alone and the mix; beside them
7-Zip's PPMd (order 8), zpaq -m5 and xz -9e, each as size(train + split) - size(train), in bits per character.

    python benchmarks/vs_compressors.py RUN[:SPLIT] ... [--json out.json] [--max-chars N] [--no-dynamic]

SPLIT defaults to test where the run has one, else val. The mix is fitted on the val split (kept.fit_text):
scored on val, its figure is fitted on the text it scores (a gate of a few dozen numbers fitted on 100,000
characters or more: the table says "val (fitted)"). The compressors see the same characters the model does
(the run's normalisation), as UTF-8; a missing tool is skipped, saying so. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from charlm.counts.estimate import target_probs
from charlm.counts.reading import chunks, evidence_of
from charlm.counts.scoring import load_mix, score_mixed
from charlm.dynamic.adapter import DynamicOptions
from charlm.evaluate import TextSource, load_text_to_score, score_run

LN2 = math.log(2)
# each tool: the command that compresses file IN into OUT (order 8: past it PPMd's sizes shrank as text was added)
COMPRESSORS = {
    "ppmd-o8": ("7zz", lambda src, out: ["7zz", "a", "-bd", "-bso0", "-m0=PPMd:mem=2000m:o=8", str(out), str(src)]),
    "zpaq-m5": ("zpaq", lambda src, out: ["zpaq", "a", str(out), str(src), "-m5"]),
    "xz-9e": ("xz", None),
}


def compressed_bits(tool: str, text: str, work: Path) -> int:
    """The size in bits of `text` (UTF-8) compressed by `tool`."""
    src = work / "text.txt"
    src.write_text(text, encoding="utf-8")
    if tool == "xz-9e":
        done = subprocess.run(["xz", "-9e", "-c", str(src)], capture_output=True, check=True)
        return 8 * len(done.stdout)
    out = work / ("out.7z" if tool == "ppmd-o8" else "out.zpaq")
    out.unlink(missing_ok=True)
    subprocess.run(COMPRESSORS[tool][1](src, out), capture_output=True, check=True, cwd=work)
    return 8 * out.stat().st_size


def compressor_figures(train: str, scored: str) -> dict:
    """bits/char of `scored` given `train` for each tool found: size(train + scored) - size(train); for zpaq also
    whether the sizes grew with the text (half of `scored` added must cost less than all of it)."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (binary, _) in COMPRESSORS.items():
            if shutil.which(binary) is None:
                print(f"note: {binary} not found: {name} left out (apt-get install 7zip zpaq xz-utils)")
                continue
            base = compressed_bits(name, train, work)
            half = compressed_bits(name, train + scored[: len(scored) // 2], work) - base
            whole = compressed_bits(name, train + scored, work) - base
            figures[name] = {"bits_per_char": whole / len(scored), "grows": 0 < half < whole}
    return figures


def counts_alone(run: Path, source: TextSource) -> float:
    """bits/char of the counts alone (the training text's, with the static mix's fitted smoothing)."""
    scored = load_text_to_score(run, "best", source)
    mix = load_mix(run, scored.checkpoint, scored.model, device="cpu", say=print)
    history = scored.ids.numpy().astype(np.int64)
    total, chars = 0.0, 0
    for start, stop in chunks(1, len(history), reading=False):
        ev = evidence_of(mix.index, history, start, stop, vocab_size=mix.index.vocab_size)
        total -= float(target_probs(ev, mix.static.smoothing[0], mix.index.vocab_size).log().sum())
        chars += stop - start
    return total / chars / LN2


def run_row(run: Path, split: str, dynamic: bool) -> dict:
    source = TextSource(split=split)
    row: dict = {"run": str(run), "split": split}
    started = time.perf_counter()
    score_mixed(run, "best", source, device="cpu", say=print)  # builds and fits what is missing, once
    row["seconds_first_use"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    score_run(run, "best", source)
    row["seconds_lstm"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    static = score_mixed(run, "best", source, device="cpu")
    row["seconds_mix"] = round(time.perf_counter() - started, 2)
    row["mix_speed_vs_lstm"] = row["seconds_lstm"] / row["seconds_mix"]
    row["lstm"] = static.network.nats_per_char / LN2
    row["mix"] = static.mixed.nats_per_char / LN2
    row["counts"] = counts_alone(run, source)
    if dynamic:
        adapted = score_mixed(run, "best", source, device="cpu", dynamic=DynamicOptions(), say=print)
        row["lstm_dynamic"] = adapted.network.nats_per_char / LN2
        row["mix_dynamic"] = adapted.mixed.nats_per_char / LN2
    scored = load_text_to_score(run, "best", source)
    vocab = scored.vocab
    train = vocab.decode(scored_corpus_train(run).tolist())
    mix = load_mix(run, scored.checkpoint, scored.model, device="cpu", say=print)
    row["index_bytes_vs_corpus"] = mix.index.nbytes / len(train.encode("utf-8"))
    row["compressors"] = compressor_figures(train, vocab.decode(scored.ids.tolist()))
    return row


def scored_corpus_train(run: Path):
    from charlm.counts.kept import training_split
    from charlm.store.model_dir import load_model

    return training_split(load_model(run, "best", "cpu")[2]).train


def default_split(run: Path) -> str:
    from charlm.counts.kept import training_split
    from charlm.store.model_dir import load_model

    return "test" if len(training_split(load_model(run, "best", "cpu")[2]).test) >= 2 else "val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN[:SPLIT]")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-dynamic", action="store_true")
    args = parser.parse_args()
    rows = []
    for spec in args.runs:
        path, _, split = spec.partition(":")
        run = Path(path)
        rows.append(run_row(run, split or default_split(run), not args.no_dynamic))
        print(json.dumps(rows[-1]))
    print(table(rows))
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def table(rows: list[dict]) -> str:
    tools = sorted({t for r in rows for t in r["compressors"]})
    heads = ["run", "split", "LSTM", "counts", "mix", "LSTM dyn", "mix dyn", *tools]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        split = r["split"] + (" (fitted)" if r["split"] == "val" else "")
        cells = [Path(r["run"]).name, split]
        cells += [f"{r[k]:.3f}" if k in r else "" for k in ("lstm", "counts", "mix", "lstm_dynamic", "mix_dynamic")]
        cells += [_tool(r["compressors"].get(t)) for t in tools]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tool(figure: dict | None) -> str:
    if figure is None:
        return ""
    return f"{figure['bits_per_char']:.3f}" + ("" if figure["grows"] else " (size did not grow)")


if __name__ == "__main__":
    main()
