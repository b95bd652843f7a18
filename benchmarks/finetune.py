"""Fine-tuning against training from scratch, on the same time budget: does a pretrained model help?

    python benchmarks/finetune.py [--budget 75s] [--pretrain tinyshakespeare] [--target timemachine]
                                  [--config configs/shakespeare-cpu.yaml] [--json PATH] [--smoke]

One config (by default the model and recipe of configs/shakespeare-cpu.yaml: LSTM 1x512, Adam 6e-3 with
a cosine schedule on the clock), four runs, each stopped by a budget of training time (evals excluded):

    pretrain      on --pretrain, budget B
    fine-tune     on --target, from the pretrain run's best checkpoint (train --init-from), budget B
    scratch       on --target, from random weights, budget B
    scratch, 2B   on --target, budget 2B: as much training time as pretrain and fine-tune together

It prints a Markdown table of the best val loss on --target's val split (the whole split, the hidden state
carried: the protocol of charlm perplexity). --smoke trains a tiny GRU for a second per run on the first
20,000 characters of each corpus: what the test suite runs. The corpora are built-ins (set
CHARLM_DATA_DIR to a folder holding them, or be online) or text files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import charlm  # noqa: E402  (the repository's charlm, not an installed one)
from charlm.config import parse_duration  # noqa: E402
from charlm.store.run_dir import RunDir  # noqa: E402

SMOKE = ["data.max_chars=20000", "train.num_steps=16", "train.batch_size=8"]


def arm(
    config_path: Path, corpus: str, budget: float, run_dir: Path, extra: list[str], init_from: Path | None = None
) -> dict:
    """One run to its time budget; its best val loss and how much it trained."""
    config = charlm.load_config(
        config_path,
        [
            f"data.corpus={corpus}",
            f"train.time_budget={budget:g}s",
            "train.epochs=1000",
            "train.device=cpu",
            "sample.preview_every=0",
            *extra,
        ],
    )
    started = time.perf_counter()
    summary = charlm.train(config, run_dir, init_from=init_from)
    last = summary.last
    parent = next((r for r in RunDir(run_dir).metrics.read() if r.get("event") == "init_from"), None)
    return {
        "corpus": corpus,
        "budget_s": budget,
        "train_seconds": summary.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "epochs": last.get("epochs_done"),
        "chars_per_s": last.get("chars_per_s"),
        "best_val_loss": summary.best_loss,
        "best_val_bpc": summary.best_loss / math.log(2),
        "run_dir": str(run_dir),
        "new_chars": len(parent["new_chars"]) if parent else None,
    }


def measure(config: Path, pretrain: str, target: str, budget: float, work: Path, extra: list[str]) -> dict:
    results = {}
    results["pretrain"] = arm(config, pretrain, budget, work / "pretrain", extra)
    print(f"pretrain on {pretrain}: val {results['pretrain']['best_val_loss']:.4f}", flush=True)
    runs = [("fine-tune", budget, work / "pretrain"), ("scratch", budget, None), ("scratch, 2x time", 2 * budget, None)]
    for name, seconds, parent in runs:
        results[name] = arm(config, target, seconds, work / name.replace(" ", "").replace(",", "-"), extra, parent)
        print(f"{name} on {target}: val {results[name]['best_val_loss']:.4f}", flush=True)
    return results


def table(results: dict, pretrain: str, target: str) -> str:
    rows = [
        "| run | corpus | training time | epochs | best val loss (nats/char) | bits/char |",
        "|---|---|---:|---:|---:|---:|",
    ]
    labels = {
        "pretrain": f"pretrain on {pretrain}",
        "fine-tune": f"fine-tune on {target} from it",
        "scratch": f"{target} from scratch",
        "scratch, 2x time": f"{target} from scratch, twice the time",
    }
    for name, r in results.items():
        loss = f"**{r['best_val_loss']:.4f}**" if name != "pretrain" else f"{r['best_val_loss']:.4f}"
        rows.append(
            f"| {labels[name]} | {r['corpus']} | {r['train_seconds']:.0f} s | {r['epochs']:.2f} | {loss} "
            f"| {r['best_val_bpc']:.3f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="75s", help="training time of each run (the last scratch run: twice)")
    parser.add_argument("--pretrain", default="tinyshakespeare")
    parser.add_argument("--target", default="timemachine")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "shakespeare-cpu.yaml")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--work", type=Path, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("--smoke", action="store_true", help="a tiny GRU, 1 s per run, 20,000 chars per corpus")
    args = parser.parse_args()
    config, budget, extra = args.config, parse_duration(args.budget, "--budget"), []
    if args.smoke:
        config, budget, extra = REPO / "configs" / "tiny.yaml", 1.0, SMOKE
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        results = measure(config, args.pretrain, args.target, budget, work, extra)
    print(table(results, args.pretrain, args.target))
    if args.json:
        shown = config.resolve().relative_to(REPO) if config.resolve().is_relative_to(REPO) else config
        args.json.write_text(json.dumps({"config": str(shown), "budget_s": budget, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
