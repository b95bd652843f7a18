"""Static against dynamic evaluation (issue #29): for each run and text, both figures in one stream, both
methods, their times, and the time of charlm perplexity's own static scoring (eval_batch_size streams).

    python benchmarks/dynamic_eval.py RUN[:SPLIT] ...                 # sgd and rms at their defaults
    python benchmarks/dynamic_eval.py --tune runs/ptb-char-cpu:test   # tune each method on val first
    python benchmarks/dynamic_eval.py --max-chars 50000 RUN           # the first 50,000 characters only
    python benchmarks/dynamic_eval.py --json out.json RUN ...

SPLIT defaults to val. With --tune, `perplexity --dynamic-tune`'s grid runs on the start of the val split of
each run and the chosen values are kept in its run folder (later runs use them); without it the values are
those kept there, else the defaults. Run on a quiet machine: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from charlm.dynamic.adapter import DynamicOptions
from charlm.dynamic.run import score_dynamic
from charlm.evaluate import TextSource, evaluate, load_text_to_score


def static_streams_seconds(run: Path, source: TextSource, max_chars: int | None) -> tuple[float, float, int]:
    """charlm perplexity's static scoring (eval_batch_size streams): (nats/char, seconds, chars)."""
    scored = load_text_to_score(run, "best", source)
    ids = scored.ids if max_chars is None else scored.ids[: max_chars + 1]
    cfg = scored.checkpoint.config.train
    started = time.perf_counter()
    result = evaluate(scored.model, ids, batch_size=cfg.eval_batch_size, num_steps=cfg.num_steps)
    return result["nats_per_char"], time.perf_counter() - started, result["chars"]


def source_of(run: Path, split: str, max_chars: int | None) -> TextSource:
    if max_chars is None:
        return TextSource(split=split)
    ids = load_text_to_score(run, "best", TextSource(split=split))
    text = "".join(ids.vocab.decode(ids.ids[: max_chars + 1].tolist()))
    return TextSource(text=text, text_as_file=True)


def measure(target: str, *, tune: bool, max_chars: int | None) -> list[dict]:
    folder, _, split = target.partition(":")
    run, split = Path(folder), split or "val"
    source = source_of(run, split, max_chars)
    nats32, seconds32, chars32 = static_streams_seconds(run, source, None)
    rows = []
    for method in ("sgd", "rms"):
        result = score_dynamic(run, "best", source, DynamicOptions(method, tune=tune)).to_dict()
        rows.append(
            {
                "run": str(run),
                "text": f"{split} split" + (f" (first {max_chars:,} chars)" if max_chars else ""),
                **{k: result[k] for k in ("method", "lr", "decay", "chosen_by", "precision")},
                "chars": result["dynamic"]["chars"],
                "static_streams_bpc": nats32 / math.log(2),
                "static_streams_seconds": seconds32,
                "static_bpc": result["static"]["bits_per_char"],
                "static_seconds": result["static"]["seconds"],
                "dynamic_bpc": result["dynamic"]["bits_per_char"],
                "dynamic_seconds": result["dynamic"]["seconds"],
                "gain_bpc": result["gain_bits_per_char"],
                "time_vs_perplexity": result["dynamic"]["seconds"] / seconds32,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="RUN or RUN:SPLIT")
    parser.add_argument("--tune", action="store_true", help="tune each method on the val split first")
    parser.add_argument("--max-chars", type=int, default=None, help="score only the first N characters")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = [row for target in args.targets for row in measure(target, tune=args.tune, max_chars=args.max_chars)]
    header = f"{'run':28} {'text':22} {'method':6} {'lr':>7} {'decay':>6} {'static':>7} {'dynamic':>7} {'gain':>6} "
    print(header + f"{'x ppl':>6} {'static32':>8}")
    for r in rows:
        print(
            f"{Path(r['run']).name:28} {r['text']:22} {r['method']:6} {r['lr']:7g} {r['decay']:6g} "
            f"{r['static_bpc']:7.4f} {r['dynamic_bpc']:7.4f} {r['gain_bpc']:6.4f} {r['time_vs_perplexity']:6.2f} "
            f"{r['static_streams_bpc']:8.4f}"
        )
    if args.json is not None:
        meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
