"""Time to loss: the val loss at given moments of training time, and when a target loss was first reached.

    python benchmarks/time_to_loss.py RUN_DIR [--marks 30 60 150] [--targets 1.55 1.47] [--json PATH]

Reads a charlm run's metrics.jsonl (its evals, each with `train_seconds` and `val_loss`; a config with
`train.eval_every_seconds` evaluates on the clock) and reports the same checkpoints as
benchmarks/gpt_baseline.py, with the run's final test score when it has one. "At 30 s" is the first eval
at or after 30 s of training time (both trainers evaluate at the first batch boundary past each multiple
of their eval interval); "time to 1.55" is the training time of the first eval at or below 1.55, so its
resolution is the eval interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from charlm.config import load_config
from charlm.store.layout import CONFIG
from charlm.store.run_dir import RunDir


def checkpoints(evals: list[dict], marks: list[float], targets: list[float]) -> dict:
    """`evals`: dicts with train_seconds and val_loss, in training order."""
    scored = [e for e in evals if e.get("val_loss") is not None]
    at = {}
    for mark in marks:
        hit = next((e for e in scored if e["train_seconds"] >= mark - 1e-9), None)
        at[f"{mark:g}"] = None if hit is None else {"val_loss": hit["val_loss"], "train_seconds": hit["train_seconds"]}
    reached = {
        f"{target:g}": next((e["train_seconds"] for e in scored if e["val_loss"] <= target), None) for target in targets
    }
    best = min(scored, key=lambda e: e["val_loss"], default=None)
    return {
        "val_at": at,
        "time_to": reached,
        "best": None if best is None else {"val_loss": best["val_loss"], "train_seconds": best["train_seconds"]},
    }


def describe(name: str, points: dict) -> str:
    """One line: the val loss at each mark, the time to each target, the best."""
    at = ", ".join(
        f"{v['val_loss']:.4f} at {mark} s" if v else f"none at {mark} s" for mark, v in points["val_at"].items()
    )
    to = ", ".join(
        f"{target} at {seconds:.1f} s" if seconds is not None else f"{target} not reached"
        for target, seconds in points["time_to"].items()
    )
    best = points["best"]
    best_text = f"best {best['val_loss']:.4f} at {best['train_seconds']:.1f} s" if best else "no eval"
    return "; ".join(part for part in (f"{name}: val {at}" if at else name, to, best_text) if part)


def summarize_run(run_dir: Path, marks: list[float], targets: list[float]) -> dict:
    """A charlm run folder as time-to-loss figures, with its final whole-split scores when it has them."""
    folder = RunDir(run_dir)
    records = folder.metrics.read()
    evals = [
        {
            key: r.get(key)
            for key in ("step", "epochs_done", "train_seconds", "val_loss", "train_loss", "lr", "chars_per_s")
        }
        for r in records
        if "event" not in r
    ]
    final = next((r for r in reversed(records) if r.get("event") == "final"), None)
    config = load_config(run_dir / CONFIG)
    m = config.model
    result = {
        "model": f"charlm {m.kind} {m.num_layers}x{m.hidden_size}",
        "config": config.name,
        "run_dir": str(run_dir),
        "evals": evals,
        "checkpoints": checkpoints(evals, marks, targets),
        "final": final,
        "precision": config.train.precision,
    }
    if evals:
        last = evals[-1]
        result.update(
            train_seconds=last["train_seconds"],
            epochs_done=last["epochs_done"],
            chars_per_s=last["chars_per_s"],
            stopped=records[-1].get("stopped"),
        )
    if final and final.get("test_bpc") is not None:
        result["test_bpc"] = final["test_bpc"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--marks", type=float, nargs="*", default=[30, 60, 150])
    parser.add_argument("--targets", type=float, nargs="*", default=[1.55, 1.47])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = summarize_run(args.run_dir, args.marks, args.targets)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(describe(result["model"], result["checkpoints"]))
    if "test_bpc" in result:
        print(f"test {result['test_bpc']:.4f} bits/char (best checkpoint, whole test split)")
    return result


if __name__ == "__main__":
    main()
