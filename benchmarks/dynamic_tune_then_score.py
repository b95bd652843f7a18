"""Dynamic evaluation as the issue asks it be reported: tune both methods on the start of the val split, then
score another split with the values chosen, beside the static figures (issue #29; docs/results.md).

    python benchmarks/dynamic_tune_then_score.py RUN --tune-chars 20000 --split test --chars 100000 --json OUT

The grid is --dynamic-tune's (charlm/dynamic/tuning.py); the rms statistics are measured on the train split
as `perplexity --dynamic-method rms` measures them. Nothing is kept in the run folder. Made the PTB-char row
of the results (the defaults of charlm/dynamic/adapter.py come from its grids).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from charlm import data
from charlm.dynamic import stats, tuning
from charlm.dynamic.adapter import Adapter, DynamicOptions
from charlm.dynamic.scoring import dynamic_losses
from charlm.evaluate import evaluate
from charlm.runtime.capability import resolve_precision
from charlm.store.model_dir import load_model

CPU = torch.device("cpu")


def measure(run: Path, *, tune_chars: int, split: str, chars: int | None) -> dict:
    net, vocab, saved = load_model(run, "best", CPU)
    corpus = data.load_corpus(saved.config.data, vocab=vocab)
    t = saved.config.train
    precision = resolve_precision(t.precision, "cpu").name
    started = time.perf_counter()
    rms = stats.gradient_rms(net, corpus.train, batch_size=t.eval_batch_size, num_steps=t.num_steps, device=CPU)
    out: dict = {"run": str(run), "precision": precision, "stats_seconds": time.perf_counter() - started}
    val = corpus.split("val")[: tune_chars + 1]
    for method in ("sgd", "rms"):
        out[f"{method}_grid"] = tuning.tune(
            net, val, method, rms=rms, num_steps=t.num_steps, device=CPU, precision=precision
        )
    text = corpus.split(split)[: chars + 1] if chars else corpus.split(split)
    result = {"split": split, "chars": len(text) - 1}
    result["static32_bpc"] = evaluate(net, text, batch_size=t.eval_batch_size, num_steps=t.num_steps)["bits_per_char"]
    static = dynamic_losses(
        net, text, Adapter(net, DynamicOptions("sgd", 0.0, 0.0)), num_steps=t.num_steps, precision=precision
    )
    result["static1_bpc"] = static.nats_per_char / math.log(2)
    for method in ("sgd", "rms"):
        best = out[f"{method}_grid"][0]
        model = copy.deepcopy(net)
        adapter = Adapter(model, DynamicOptions(method, best["lr"], best["decay"]), rms)
        losses = dynamic_losses(model, text, adapter, num_steps=t.num_steps, precision=precision)
        result[method] = {"lr": best["lr"], "decay": best["decay"], "bpc": losses.nats_per_char / math.log(2)}
    out["scored"] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--tune-chars", type=int, default=tuning.TUNE_CHARS, help="val characters the grid reads")
    parser.add_argument("--split", default="test")
    parser.add_argument("--chars", type=int, default=None, help="score only the first N characters of --split")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    tuning.TUNE_CHARS = args.tune_chars
    out = measure(args.run, tune_chars=args.tune_chars, split=args.split, chars=args.chars)
    print(json.dumps(out["scored"]))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
