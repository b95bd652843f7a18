"""Run folders at a glance: a summary of each one's config, metrics and status, for `runs`, `info` and `plot`."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from charlm.evaluate import perplexity
from charlm.rundir import CONFIG, RUNS_ROOT, RunDir

SPARKS = "▁▂▃▄▅▆▇█"


def summarize(run_dir: Path) -> dict:
    """Corpus, model, epochs done, best loss, wall time and state of one run folder."""
    run = RunDir(Path(run_dir))
    config = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8"))
    lines = run.read_metrics()
    records = [r for r in lines if "event" not in r]
    monitored = "val_loss" if any("val_loss" in r for r in records) else "train_loss"
    best = min(records, key=lambda r: r[monitored]) if records else None
    model = config["model"]
    status = run.read_status()
    return {
        "name": run.path.name, "path": str(run.path), "corpus": config["data"]["corpus"],
        "model": f"{model['kind']} {model['num_layers']}x{model['hidden_size']}",
        "epochs_done": records[-1].get("epochs_done", records[-1]["epoch"]) if records else 0,
        "epochs": config["train"]["epochs"], "stopped": records[-1].get("stopped") if records else None,
        "monitored": monitored, "best_epoch": best["epoch"] if best else None,
        "best_epochs_done": best.get("epochs_done", best["epoch"]) if best else None,
        "best_loss": best[monitored] if best else math.nan,
        "best_ppl": perplexity(best[monitored]) if best else math.nan,
        "best_bpc": best[monitored] / math.log(2) if best else math.nan,
        "seconds": sum(r.get("seconds", 0.0) for r in records),
        "chars_per_s": records[-1].get("chars_per_s", math.nan) if records else math.nan,
        "device": status.get("device", "?"), "records": records,
        "parent": next((r for r in lines if r.get("event") == "init_from"), None),  # a fine-tuned run's
        "status": run.status(complete=bool(records) and (records[-1]["epoch"] >= config["train"]["epochs"]
                                                      or bool(records[-1].get("stopped")))),
    }


def parent_name(parent: dict | None) -> str:
    """A fine-tuned run's parent, short: its folder's name (and :last when it started from last.pt)."""
    if not parent:
        return ""
    return Path(parent["path"]).name + (":last" if parent["checkpoint"] == "last" else "")


def describe_parent(parent: dict) -> str:
    """One line for `charlm info`: where a fine-tuned run's weights came from."""
    what = "model folder" if parent["source"] == "model" else f"run ({parent['checkpoint']}.pt)"
    best = parent.get("best_val_loss")
    loss = f", best val loss {best:.4f} ({best / math.log(2):.3f} bits/char)" if best is not None else ""
    new = parent["new_chars"]
    return (f"fine-tuned from {parent['path']}, a {what} trained on {parent['corpus']} (sha256 "
            f"{parent['corpus_sha256'][:12]}…){loss}; vocabulary {parent['parent_vocab_size']:,} + {len(new):,} "
            f"new characters{': ' + repr(new[:20]) if new else ''}")


def list_runs(root: Path = RUNS_ROOT) -> list[dict]:
    folders = sorted(p.parent for p in Path(root).glob(f"*/{CONFIG}"))
    return [summarize(folder) for folder in folders]


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] if math.isfinite(v) else " " for v in values)
